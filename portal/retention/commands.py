"""`flask portal retention`: run the sweep, or preview it with --dry-run for any date."""
from __future__ import annotations

from datetime import date

import click
from flask.cli import with_appcontext

from portal.extensions import db
from portal.models import Organisation
from portal.models.base import utcnow
from portal.retention.calendar import london_date
from portal.retention.ledger import LedgerError, replay, status
from portal.retention.preview import preview
from portal.retention.sweep import run_sweep


def register(group: click.Group) -> None:
    """Add this area's commands to the `portal` group."""
    group.add_command(retention_command)


def _parse_date(ctx, param, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("enter a date as YYYY-MM-DD, for example 2026-01-23") from None


@click.group("retention", invoke_without_command=True)
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--as-of", callback=_parse_date, help="The sweep date (YYYY-MM-DD); default today in London.")
@click.option("--days", type=click.IntRange(0, 366), default=30, show_default=True, help="Dry run: days ahead to list.")
@click.option("--school", "school_id", type=int, help="Dry run: one school's id only.")
@click.pass_context
@with_appcontext
def retention_command(ctx: click.Context, dry_run: bool, as_of: date | None, days: int, school_id: int | None) -> None:
    """Run the retention sweep now, or list with --dry-run what it will delete in the coming days."""
    if ctx.invoked_subcommand is not None:
        return

    as_of = as_of or london_date(utcnow())
    if dry_run:
        _print_preview(as_of, days, school_id)
        return

    run = run_sweep(as_of=as_of)
    if run is None:
        click.echo("Another process is running today's sweep; nothing done.")
        return
    stats = run.stats or {}
    click.echo(f"Sweep {run.id} for {as_of}: {run.status.value}, {stats.get('records', 0)} records, "
               f"{stats.get('proofs', 0)} proofs, {stats.get('held', 0)} held, {stats.get('late', 0)} late.")
    if run.status.value != "succeeded":
        raise click.ClickException(run.error_message or "the sweep failed")


def _print_preview(as_of: date, days: int, school_id: int | None) -> None:
    lines = preview(as_of, days, school_id=school_id)
    names = {o.id: o.name for o in db.session.query(Organisation).filter(Organisation.id.in_({l.school_id for l in lines if l.school_id}))}
    click.echo(f"Dry run from {as_of} for {days} days: nothing is deleted.")
    if not lines:
        click.echo("Nothing is due.")
        return
    click.echo(f"{'due':10}  {'school':30}  {'rule':9}  {'category':30}  {'rows':>8}  {'trigger':10}  {'deadline':10}  note")
    for l in lines:
        school = f"{names.get(l.school_id, '')} ({l.school_id})" if l.school_id else "(portal)"
        note = "held" if l.held else (f"{l.late_days} days late" if l.late_days else "")
        due = "held" if l.held else l.due_on.isoformat()
        click.echo(f"{due:10}  {school[:30]:30}  {l.rule_id:9}  {l.category[:30]:30}  {l.count:>8}  "
                   f"{l.trigger_on.isoformat():10}  {l.deadline.isoformat():10}  {note}")


@retention_command.command("replay-ledger")
@with_appcontext
def replay_ledger_command() -> None:
    """After restoring a backup: delete again everything the deletion ledger lists (R35); the portal then serves data."""
    before, db_seq, file_seq = status()
    try:
        deleted = replay()
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from None
    if before == "ok":
        click.echo(f"The database is up to date with the deletion ledger (entry {file_seq}); nothing to replay.")
        return
    rows = {t: n for t, n in deleted.items() if ":" not in t}
    fields = {t: n for t, n in deleted.items() if ":" in t}
    per_table = ", ".join(f"{t} {n}" for t, n in sorted(rows.items())) or "none found"
    message = f"Replayed deletion ledger entries {db_seq + 1} to {file_seq}: {sum(rows.values())} records deleted again ({per_table})"
    if fields:
        message += "; fields cleared again on " + ", ".join(f"{n} records ({t})" for t, n in sorted(fields.items()))
    click.echo(message + ".")
