"""`flask portal breaches|subprocessors|support|freshness ...`: the oversight records from the command line."""
from __future__ import annotations

from datetime import date, datetime

import click
from flask.cli import with_appcontext
from sqlalchemy import func, select

from portal import audit
from portal.clock import LONDON
from portal.extensions import db
from portal.models import Breach, NoticeRecipient, Organisation, Product, User
from portal.oversight import breaches, freshness, government_key, subprocessors


def register(group: click.Group) -> None:
    """Add this area's commands to the `portal` group."""
    for command in (breaches_group, subprocessors_group, support_group, freshness_group, dfe_key_group):
        group.add_command(command)


def _commit(action, refusal: type[Exception]):
    """Call the domain function and commit; its refusal is the command's one-line error (nothing is written)."""
    try:
        result = action()
    except refusal as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    return result


def _when(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date and time like 2025-05-02T16:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=LONDON)


@click.group("breaches")
def breaches_group() -> None:
    """Personal data breach records (R69)."""


@breaches_group.command("open")
@click.option("--aware", required=True, help="When the operator became aware, UK time unless an offset is given (2025-05-02T16:00).")
@click.option("--summary", required=True, help="What happened, with no personal data.")
@click.option("--product", "product_name", help="The product whose credential or access is involved.")
@click.option("--credential", "credential_id", type=int, help="The id of the leaked product credential.")
@click.option("--confirmed", is_flag=True, help="The breach is confirmed, not only suspected.")
@with_appcontext
def open_command(aware: str, summary: str, product_name: str | None, credential_id: int | None, confirmed: bool) -> None:
    """Open a breach record and print its ICO deadline and the affected schools."""
    product_id = None
    if product_name:
        product_id = db.session.execute(select(Product.id).where(Product.name == product_name)).scalar()
        if product_id is None:
            raise click.ClickException(f"no product is named {product_name!r}")
    moment = _when(aware)
    breach = _commit(lambda: breaches.open_breach(moment, summary, product_id=product_id, credential_id=credential_id,
                                                  confirmed=confirmed, actor="cli"), breaches.BreachError)
    _show(breach)


@breaches_group.command("show")
@click.argument("breach_id", type=int)
@with_appcontext
def show_command(breach_id: int) -> None:
    """Print a breach's deadline, affected schools and notices."""
    breach = db.session.get(Breach, breach_id)
    if breach is None:
        raise click.ClickException(f"no breach B{breach_id}")
    _show(breach)


def _show(breach) -> None:
    click.echo(f"B{breach.id} {breach.status.value}: aware {breach.aware_at.astimezone(LONDON):%Y-%m-%d %H:%M %Z}, "
               f"ICO deadline {breaches.deadline(breach).astimezone(LONDON):%Y-%m-%d %H:%M %Z}")
    for a in breaches.affected(breach):
        cats = ", ".join(f"{c} {n}" for c, n in sorted(a.categories.items()))
        click.echo(f"  school {a.school_id} {a.school_name}: {a.pupils} pupils; {cats}; "
                   f"{'notified' if a.notified else 'not notified'}")
    for n in breach.notices:
        click.echo(f"  notice to {n.recipient.value}{f' school {n.school_id}' if n.school_id else ''}: {n.reference}")


@breaches_group.command("notice")
@click.argument("breach_id", type=int)
@click.option("--to", "recipient", type=click.Choice(["school", "ico", "individuals"]), required=True)
@click.option("--school", "urn", help="URN of the affected school (with --to school).")
@click.option("--reference", default="", help="ICO case number, or how individuals were told.")
@with_appcontext
def notice_command(breach_id: int, recipient: str, urn: str | None, reference: str) -> None:
    """Record a notice (a notice to a school also emails its admins)."""
    breach = db.session.get(Breach, breach_id)
    if breach is None:
        raise click.ClickException(f"no breach B{breach_id}")
    school_id = None
    if urn:
        school_id = db.session.execute(select(Organisation.id).where(Organisation.urn == urn)).scalar()
        if school_id is None:
            raise click.ClickException(f"no school has URN {urn}")
    notice = _commit(lambda: breaches.record_notice(breach, NoticeRecipient(recipient), school_id=school_id,
                                                    reference=reference, actor="cli"), breaches.BreachError)
    click.echo(f"notice {notice.id} to {recipient} recorded: {notice.reference}")


@click.group("subprocessors")
def subprocessors_group() -> None:
    """The sub-processor register (R66)."""


@subprocessors_group.command("list")
@with_appcontext
def list_command() -> None:
    for s in subprocessors.register():
        click.echo(f"{s.name}\t{s.location}\t{s.mechanism.value}\t{s.data_types}{' (pupil data)' if s.pupil_data else ''}")


@subprocessors_group.command("add")
@click.option("--name", required=True)
@click.option("--purpose", required=True)
@click.option("--location", required=True, help="Two-letter country code; GB for the UK.")
@click.option("--data-types", required=True, help="The personal data it receives.")
@click.option("--mechanism", help="uk_adequacy, uk_idta, uk_addendum or uk_us_data_bridge (outside the UK).")
@click.option("--pupil-data", is_flag=True, help="It receives pupil data (UK only).")
@with_appcontext
def add_command(name: str, purpose: str, location: str, data_types: str, mechanism: str | None, pupil_data: bool) -> None:
    item = _commit(lambda: subprocessors.add(name, purpose, location, data_types, mechanism, pupil_data, actor="cli"),
                   subprocessors.RegisterError)
    click.echo(f"added {item.name} ({item.location}, {item.mechanism.value})")


@click.group("support")
def support_group() -> None:
    """Support staff accounts (R58)."""


@support_group.command("confidentiality")
@click.argument("email")
@click.option("--on", "signed_on", required=True, help="The date the confidentiality agreement was signed (YYYY-MM-DD).")
@with_appcontext
def confidentiality_command(email: str, signed_on: str) -> None:
    """Record a support account's confidentiality agreement; without it no school can grant the account access."""
    try:
        day = date.fromisoformat(signed_on)
    except ValueError:
        raise click.BadParameter(f"{signed_on!r} is not a date like 2025-09-01") from None
    user = db.session.execute(select(User).where(func.lower(User.email) == email.strip().lower())).scalar()
    if user is None or not user.is_support:
        raise click.ClickException("no support staff account has that email address")
    user.confidentiality_agreed_on = day
    audit.record("support.confidentiality_recorded", target=user, actor="cli", details={"on": day.isoformat()})
    db.session.commit()
    click.echo(f"confidentiality agreement recorded for user {user.id} on {day.isoformat()}")


@click.group("freshness")
def freshness_group() -> None:
    """Missed daily extracts (R22)."""


@freshness_group.command("check")
@click.option("--today", help="Check as of this London date (YYYY-MM-DD).")
@with_appcontext
def check_command(today: str | None) -> None:
    """Alert school admins and support staff once per gap of two or more missed days."""
    result = freshness.check(date.fromisoformat(today) if today else None)
    click.echo(f"{result['alerts']} new alert(s) for {result['schools']} school(s), {result['messages']} message(s) sent")


@click.group("dfe-key")
def dfe_key_group() -> None:
    """The separate encryption key of DfE-sourced data (R28)."""


@dfe_key_group.command("status")
@with_appcontext
def dfe_key_status() -> None:
    click.echo(f"government data key: {government_key.status()}")


@dfe_key_group.command("destroy")
@click.option("--yes", is_flag=True, help="Confirm: DfE data sealed with the key becomes unreadable for ever.")
@with_appcontext
def dfe_key_destroy(yes: bool) -> None:
    """Destroy the key now (the daily job does it after the DfE agreement's end date)."""
    if not yes:
        raise click.UsageError("add --yes: DfE data sealed with the key becomes unreadable for ever")
    done = government_key.destroy(actor="cli", reason="operator")
    db.session.commit()
    click.echo("government data key destroyed" if done else "government data key was already destroyed")
