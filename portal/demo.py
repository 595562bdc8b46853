"""The demo command: demo organisations, users and sandbox-backed connections."""
from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Add this area's commands to the `portal` group."""
