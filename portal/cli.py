"""The `portal` console script: like `flask` with the portal's app, but start-up errors are one line.

The command group itself is portal.commands (also reachable as `flask portal ...`). Nothing in the
portal imports this module: it is the console script's entry point only, and builds the app.
"""
from __future__ import annotations

import sys

import click
from flask.cli import FlaskGroup

from portal import create_app
from portal.errors import StartupError
from portal.ops.commands import add_service_commands

__all__ = ["main"]


def main() -> None:
    """Entry point of the `portal` console script: like `flask`, but start-up errors are one line."""

    def factory():
        try:
            return create_app()
        except StartupError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)

    cli = FlaskGroup(create_app=factory)
    add_service_commands(cli)  # `portal serve`, `portal scheduler`
    cli(prog_name="portal")
