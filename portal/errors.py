"""Errors shared across the portal that are not connector errors."""
from __future__ import annotations

import click


# A ClickException so that `flask …` commands print "Error: <message>" and exit 1 instead of a traceback.
class StartupError(click.ClickException):
    """The portal cannot start; the message names what to fix and is shown without a traceback."""


class PortalError(Exception):
    """A refused operation with a stable code and a message safe to show to users."""

    code = "error"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
