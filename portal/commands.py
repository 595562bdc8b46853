"""The `portal` command group (`flask portal ...`): every area's commands, create-user and the audit check.

create_app adds this group to the app's CLI; portal.cli is the console script that runs it.
"""
from __future__ import annotations

import logging
import sys

import click
from email_validator import EmailNotValidError, validate_email
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import func, select

from portal import audit, demo, sandbox_commands
from portal.account import commands as account_commands
from portal.api import commands as api_commands
from portal.auth.passwords import hash_password, policy_problem
from portal.extensions import db
from portal.extract import commands as extract_commands
from portal.jobs import commands as jobs_commands
from portal.models import User
from portal.ops import commands as ops_commands
from portal.oversight import commands as oversight_commands
from portal.plugins import commands as plugins_commands
from portal.retention import commands as retention_commands
from portal.school import commands as school_commands

__all__ = ["portal_cli", "register_area_commands"]


class PortalGroup(AppGroup):
    """The `portal` group: every error a command meets is one line on stderr, never a usage block or a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            # Raised by a command's own checks (unknown URN...) or by parsing: the message says it all.
            one_line = click.ClickException(exc.format_message())
            one_line.exit_code = exc.exit_code
            raise one_line from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - an operator gets one line; the type only (no values, R65)
            logging.getLogger(__name__).debug("command failed", exc_info=True)
            raise click.ClickException(
                f"the command stopped on an unexpected {type(exc).__name__}; "
                "please report it to the portal's maintainers with the command you ran."
            ) from None


portal_cli = PortalGroup("portal", help="Run the MIS connection portal's tasks.")

# Each area keeps its commands in its own module with a register(group) function.
COMMAND_MODULES = (
    jobs_commands,
    plugins_commands,
    extract_commands,
    school_commands,
    retention_commands,
    demo,
    sandbox_commands,
    api_commands,
    account_commands,
    ops_commands,
    oversight_commands,
)


def register_area_commands(group: click.Group = portal_cli) -> None:
    """Add every area's commands to the group (once)."""
    if getattr(group, "_areas_registered", False):
        return
    for module in COMMAND_MODULES:
        module.register(group)
    group._areas_registered = True


@portal_cli.command("create-user")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--support/--no-support", default=False, help="Operator support staff (needs TOTP).")
@click.password_option()
@with_appcontext
def create_user(email: str, name: str, support: bool, password: str) -> None:
    """Create a user, e.g. the first support user."""
    try:
        email = validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise click.BadParameter(f"enter a valid email address ({exc})", param_hint="--email") from None
    if not name.strip():
        raise click.BadParameter("enter the user's name", param_hint="--name")
    if problem := policy_problem(password):
        raise click.BadParameter(problem, param_hint="--password")
    if db.session.execute(select(User).where(func.lower(User.email) == email.lower())).first():
        raise click.ClickException(f"a user with email {email} already exists")
    user = User(email=email, name=name.strip(), password_hash=hash_password(password), is_support=support)
    db.session.add(user)
    db.session.flush()
    audit.record("user.created", target=user, actor="cli", details={"support": support})
    db.session.commit()
    click.echo(f"Created user {user.id}{' (support staff: TOTP is set up at first sign-in)' if support else ''}.")


@portal_cli.group("audit")
def audit_group() -> None:
    """The audit trail."""


@audit_group.command("verify")
@with_appcontext
def audit_verify() -> None:
    """Check the audit trail's hash chain and report the first broken link."""
    result = audit.verify()
    if result.ok:
        click.echo(f"Audit trail intact: {result.checked} entries checked.")
        return
    click.echo(f"Audit trail broken at entry {result.broken_id}: {result.reason}.", err=True)
    sys.exit(1)
