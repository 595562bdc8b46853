"""`flask portal marketing send`: one marketing email to the users who opted in (R52)."""
from __future__ import annotations

import click
from flask.cli import with_appcontext

from portal.account import marketing
from portal.extensions import db


def register(group: click.Group) -> None:
    """Add this area's commands to the `portal` group."""
    group.add_command(marketing_group)


@click.group("marketing")
def marketing_group() -> None:
    """Marketing email, sent only to users who opted in."""


@marketing_group.command("send")
@click.option("--subject", required=True, help="The email's subject line.")
@click.option("--body-file", type=click.File("r", encoding="utf-8"), required=True, help="Plain-text body ('-' for stdin).")
@with_appcontext
def send_command(subject: str, body_file) -> None:
    """Send the email to each opted-in user, with their own one-click opt-out link; everyone else is left out."""
    body = body_file.read()
    if not subject.strip() or not body.strip():
        raise click.UsageError("the subject and the body must not be empty")
    result = marketing.send(subject, body)
    db.session.commit()
    click.echo(f"sent {result.sent}, left out {result.left_out} (not opted in, restricted or inactive)")
