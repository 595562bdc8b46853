"""Errors shared across the portal that are not connector errors."""
from __future__ import annotations

import os
import traceback

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


def code_location(exc: BaseException) -> str:
    """Return where an exception was raised as "file.py:line in function", innermost frame first.

    R65: logs get this, the exception type and ids, never the exception's text (it may quote data values,
    SQL parameters included). The portal's own innermost frame is named too when a library raised it.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown location"
    where = [_frame(frames[-1])]
    own = [f for f in frames if f"{os.sep}portal{os.sep}" in f.filename]
    if own and own[-1] is not frames[-1]:
        where.append(f"called from {_frame(own[-1])}")
    return ", ".join(where)


def _frame(frame: traceback.FrameSummary) -> str:
    parts = frame.filename.replace(os.sep, "/").split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else parts[-1]
    return f"{short}:{frame.lineno} in {frame.name}"
