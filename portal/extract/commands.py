"""Commands for schools, connections and extract runs."""
from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Add this area's commands to the `portal` group."""
