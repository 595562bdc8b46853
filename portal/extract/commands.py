"""Commands for schools, connections and extract runs."""
from __future__ import annotations

import json
import re
import sys
from typing import Any

import click
from flask.cli import with_appcontext
from sqlalchemy import func, or_, select

from portal import audit, lifecycle
from portal.connectors import CATEGORIES
from portal.extensions import db
from portal.extract import ExtractRefused, approve_held_run, held_runs, reject_held_run, run_extract
from portal.models import Connection, Organisation, OrgKind, RunStatus, User
from portal.plugins.manager import get_plugins

URN = re.compile(r"\d{6}")
DFE_NUMBER = re.compile(r"\d{7}")
# Exit codes of `flask portal extract` for scripts.
EXIT_OK, EXIT_FAILED, EXIT_HELD = 0, 1, 2


def _school_by_urn(urn: str):
    school = db.session.execute(
        select(Organisation).where(Organisation.kind == OrgKind.school, Organisation.urn == urn.strip())
    ).scalar()
    if school is None:
        raise click.BadParameter(f"no school with URN {urn} (add it with `flask portal schools add`)", param_hint="--school")
    return school


def _connector_name(name: str) -> str:
    enabled = get_plugins().connectors()
    if name not in enabled:
        choices = ", ".join(sorted(enabled)) or "none"
        raise click.BadParameter(f"connector {name!r} is not enabled (enabled: {choices})", param_hint="--connector")
    return name


# ---------------------------------------------------------------- schools


@click.group("schools", help="Manage schools.")
def schools() -> None:
    """Manage schools."""


@schools.command("add")
@click.option("--urn", required=True, help="The school's 6-digit unique reference number.")
@click.option("--dfe-number", required=True, help="LA code + establishment number, 7 digits (e.g. 2084321).")
@click.option("--name", required=True, help="The school's name.")
@click.option("--phase", default=None, help="Phase of education, e.g. Primary or Secondary.")
@click.option("--la-code", default=None, help="3-digit LA code (default: the first 3 digits of the DfE number).")
@click.option("--statutory-high-age", type=click.IntRange(2, 25), default=None,
              help="GIAS statutory high age, e.g. 18 for an 11-18 school (suggests the last year group, R30).")
@with_appcontext
def schools_add(urn: str, dfe_number: str, name: str, phase: str | None, la_code: str | None,
                statutory_high_age: int | None) -> None:
    """Add a school; nothing is created when any value is wrong."""
    urn, dfe_number, name = urn.strip(), dfe_number.strip().replace("/", ""), name.strip()
    if not URN.fullmatch(urn):
        raise click.BadParameter("a URN is 6 digits, e.g. 100001", param_hint="--urn")
    if not DFE_NUMBER.fullmatch(dfe_number):
        raise click.BadParameter("a DfE number is 7 digits (LA code + establishment number), e.g. 2084321",
                                 param_hint="--dfe-number")
    if not name:
        raise click.BadParameter("enter the school's name", param_hint="--name")
    la_code = (la_code or dfe_number[:3]).strip()
    if la_code != dfe_number[:3]:
        raise click.BadParameter(f"the DfE number {dfe_number} does not start with LA code {la_code}",
                                 param_hint="--la-code")
    clash = db.session.execute(
        select(Organisation.urn, Organisation.dfe_number).where(
            or_(Organisation.urn == urn, Organisation.dfe_number == dfe_number)
        )
    ).first()
    if clash:
        which = "URN" if clash.urn == urn else "DfE number"
        raise click.BadParameter(f"a school with this {which} already exists",
                                 param_hint="--urn" if which == "URN" else "--dfe-number")
    la = db.session.execute(
        select(Organisation).where(Organisation.kind == OrgKind.local_authority, Organisation.la_code == la_code)
    ).scalar()
    if la is None:
        la = Organisation(kind=OrgKind.local_authority, name=f"Local authority {la_code}", la_code=la_code)
        db.session.add(la)
        db.session.flush()
    school = Organisation(kind=OrgKind.school, name=name, urn=urn, dfe_number=dfe_number, phase=phase,
                          statutory_high_age=statutory_high_age, local_authority_id=la.id)
    db.session.add(school)
    db.session.flush()
    audit.record("school.created", organisation_id=school.id, target=school, details={"urn": urn}, actor="cli")
    db.session.commit()
    click.echo(f"Added school {school.id} (URN {urn}).")


# ---------------------------------------------------------------- connect


@click.command("connect")
@click.option("--connector", "connector_name", required=True, help="The connector's name, e.g. wonde.")
@click.option("--school", "urn", required=True, help="The school's URN.")
@click.option("--user", "email", required=True, help="Email of the school admin (or support user) asking for access.")
@click.option("--accept-terms", is_flag=True, help="Record that this user accepts the current terms for the school.")
@with_appcontext
def connect(connector_name: str, urn: str, email: str, accept_terms: bool) -> None:
    """Create the school's connection and ask the provider for access; approved schools can be extracted."""
    name = _connector_name(connector_name)
    school = _school_by_urn(urn)
    user = db.session.execute(select(User).where(func.lower(User.email) == email.strip().lower())).scalar()
    if user is None:
        raise click.BadParameter(f"no user with email {email}", param_hint="--user")
    try:
        if accept_terms and lifecycle.terms_acceptance(school) is None:
            lifecycle.accept_terms(school, user, lifecycle.current_terms_version())
        connection = lifecycle.connection_for(school, name)
        db.session.commit()
        if connection.state.value not in ("approved", "pending"):
            connection = lifecycle.request_access(connection, user, {"name": user.name, "email": user.email})
        if connection.state.value in ("requested", "pending"):
            # The provider may have approved already (the sandbox does): ask once more.
            connector = lifecycle.connector_instance(connection)
            connection = lifecycle.apply_access_status(connection, connector.access_status(school))
    except lifecycle.LifecycleError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"Connection {connection.id} ({name}, URN {school.urn}): {connection.state.label}.")
    if connection.state.value != "approved":
        sys.exit(EXIT_FAILED)


# ---------------------------------------------------------------- extract


def summary(run: Any) -> dict[str, Any]:
    """Return the run's summary for scripts: id, status, mode, counts per category, error (no personal data)."""
    stats = run.stats or {}
    return {
        "run_id": run.id,
        "status": run.status.value,
        "mode": (run.params or {}).get("mode"),
        "categories": stats.get("categories", {}),
        "pages": stats.get("pages", 0),
        "requests": stats.get("requests", 0),
        "retries": stats.get("retries", 0),
        "seconds": stats.get("seconds"),
        "error": None if not run.error_code else {
            "kind": run.error_kind.value if run.error_kind else None,
            "code": run.error_code,
            "message": run.error_message,
        },
    }


class _Bar:
    """A progress bar over the run's categories, showing pages and records as they arrive (on stderr)."""

    def __init__(self) -> None:
        self.bar = None
        self.label = ""

    def __call__(self, event: dict[str, Any]) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=len(CATEGORIES), label="Extracting", file=sys.stderr,
                                         item_show_func=lambda _: self.label, show_eta=False)
            self.bar.__enter__()
        if event["event"] == "category":
            if self.label:
                self.bar.update(1)
            self.label = event["category"]
        else:
            self.label = f"{event['category']}: {event['pages']} pages, {event['records']} records"
        self.bar.render_progress()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(self.bar.length)
            self.bar.__exit__(None, None, None)


@click.command("extract")
@click.option("--connector", "connector_name", required=True, help="The connector's name, e.g. wonde.")
@click.option("--school", "urn", required=True, help="The school's URN.")
@click.option("--full", "mode", flag_value="full", help="Fetch everything and reconcile removals.")
@click.option("--incremental", "mode", flag_value="incremental", help="Fetch changes since the last run.")
@click.option("--category", "categories", multiple=True, type=click.Choice(CATEGORIES),
              help="Only this category (repeatable; must be granted to the school's authorised products).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary for scripts instead of a progress bar.")
@with_appcontext
def extract(connector_name: str, urn: str, mode: str | None, categories: tuple[str, ...], as_json: bool) -> None:
    """Run an extract for one school now (the same run the scheduler starts)."""
    name = _connector_name(connector_name)
    school = _school_by_urn(urn)
    connection = db.session.execute(
        select(Connection).where(Connection.school_id == school.id, Connection.connector == name)
    ).scalar()
    if connection is None:
        raise click.ClickException(f"URN {urn} has no {name} connection: run `flask portal connect` first.")
    bar = None if as_json else _Bar()
    try:
        run = run_extract(connection.id, mode=mode or "auto", categories=list(categories) or None, progress=bar)
    except ExtractRefused as exc:
        raise click.ClickException(exc.message) from None
    finally:
        if bar is not None:
            bar.close()
    result = summary(run)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        click.echo(f"Run {run.id} ({result['mode'] or 'not started'}): {run.status.value}.")
        for category, counts in result["categories"].items():
            click.echo(f"  {category}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
        if run.error_message:
            click.echo(f"  {run.error_message}")
    if run.status == RunStatus.held:
        sys.exit(EXIT_HELD)
    if run.status != RunStatus.succeeded:
        sys.exit(EXIT_FAILED)


# ---------------------------------------------------------------- holds


@click.group("holds", help="Extract runs held for review because they would remove many pupils.")
def holds() -> None:
    """Extract runs held for review because they would remove many pupils."""


@holds.command("list")
@with_appcontext
def holds_list() -> None:
    """List the held runs: run id, school URN, connector, pupils it would remove of those live, when."""
    runs = held_runs()
    if not runs:
        click.echo("No extract run is held.")
        return
    for run in runs:
        connection = db.session.get(Connection, run.connection_id) if run.connection_id else None
        hold = (run.stats or {}).get("hold", {})
        urn = connection.school.urn if connection else "-"
        when = f"{run.finished_at:%Y-%m-%d %H:%M} UTC" if run.finished_at else "-"
        click.echo(
            f"{run.id}\tURN {urn}\t{connection.connector if connection else '-'}\t"
            f"{hold.get('pupils_removed', '?')} of {hold.get('pupils_live', '?')} pupils would be removed\t{when}"
        )


def _decide(run_id: int, approve: bool) -> None:
    try:
        run = (approve_held_run if approve else reject_held_run)(run_id, None)
    except ExtractRefused as exc:
        raise click.ClickException(exc.message) from None
    counts = (run.stats or {}).get("hold", {})
    if approve:
        click.echo(f"Run {run.id} approved: its removals were applied.")
    else:
        click.echo(f"Run {run.id} rejected: {counts.get('discarded', 0)} staged removals were dropped; nothing was removed.")


@holds.command("approve")
@click.argument("run_id", type=int)
@with_appcontext
def holds_approve(run_id: int) -> None:
    """Confirm a held run's removals: they are applied now (check with the school first)."""
    _decide(run_id, True)


@holds.command("reject")
@click.argument("run_id", type=int)
@with_appcontext
def holds_reject(run_id: int) -> None:
    """Refuse a held run's removals: nothing is removed and the run ends failed."""
    _decide(run_id, False)


def register(group: click.Group) -> None:
    """Add this area's commands to the `portal` group."""
    for command in (schools, connect, extract, holds):
        if command.name not in group.commands:
            group.add_command(command)
