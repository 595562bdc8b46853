"""What an extract run asks for: the granted categories (R19), full or incremental (R21), and watermarks."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta

from flask import current_app
from sqlalchemy import select

from portal.configuration import WEEKDAYS
from portal.connectors import CATEGORIES, CHANGES_RESTARTED, Connector, PupilRecord, StaffRecord
from portal.extensions import db
from portal.lifecycle import connection_settings
from portal.models import (
    Connection,
    ConnectorSyncState,
    ExtractWatermark,
    FeatureGrant,
    JobRun,
    ProductAuthorisation,
    RunStatus,
    product_features,
)
from portal.models.base import utcnow
from portal.permissions import open_withdrawals
from portal.privacy.suppression import is_suppressed as suppressed
from portal.retention.calendar import add_months, london_date
from portal.store.write import RESTORED_KEYS

# Run stats counting what only a full run can catch up on, in the order their reasons are given: pupils and
# classes an incremental run brought back (store.write.RESTORED_KEYS), and reads whose provider could not
# continue from the saved position and sent everything again without its deletions (CHANGES_RESTARTED).
OWED_KEYS = (*RESTORED_KEYS.values(), CHANGES_RESTARTED)

# R21: more than this long without a successful run means the next run is a full one.
FULL_AFTER = timedelta(days=7)
# Incremental runs ask for changes from a little before the watermark: a change stamped just before
# a run asked may commit at the provider just after (the overlap is re-read, and the content hash
# makes the re-read rows write nothing).
WATERMARK_OVERLAP = timedelta(minutes=5)
# When the provider's answers carry no clock (no Date header), our clock less this stands for theirs.
CLOCK_SKEW_MARGIN = timedelta(minutes=10)


class ExtractRefused(ValueError):
    """The run was asked for something it may not do; ``message`` is plain English, ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def granted_categories(connection: Connection) -> set[str]:
    """Return the union of categories granted to the features of the products the school has authorised (R19)."""
    rows = db.session.execute(
        select(FeatureGrant.category_id)
        .join(product_features, product_features.c.feature_id == FeatureGrant.feature_id)
        .join(ProductAuthorisation, ProductAuthorisation.product_id == product_features.c.product_id)
        .where(
            ProductAuthorisation.school_id == connection.school_id,
            ProductAuthorisation.revoked_at.is_(None),
            FeatureGrant.effective_from <= utcnow().date(),
        )
        .distinct()
    ).scalars()
    return set(rows)


def categories_for(connection: Connection, connector: type[Connector], asked: Iterable[str] | None) -> list[str]:
    """Return the categories this run extracts, in extract order; refuse ones that are unknown or not granted."""
    supplied = set(connector.categories)
    allowed = granted_categories(connection) & supplied
    if asked:
        asked = list(asked)
        unknown = [c for c in asked if c not in CATEGORIES]
        if unknown:
            raise ExtractRefused("unknown_category", f"Unknown category: {', '.join(unknown)}.")
        refused = [c for c in asked if c not in allowed]
        if refused:
            raise ExtractRefused(
                "category_not_granted",
                f"No product the school has authorised needs {', '.join(refused)} from this connector.",
            )
        wanted = set(asked)
    else:
        wanted = allowed
    return [c for c in CATEGORIES if c in wanted]


def cadence(category: str) -> str:
    """Return how often the deployment extracts a category: "daily" or "weekly" (R17, R18; validated at start-up)."""
    schedule = current_app.config.get("EXTRACT_SCHEDULE") or {}
    return str(schedule.get(category, "daily")).strip().lower()


def due_categories(connection: Connection, categories: list[str], now: datetime) -> list[str]:
    """Return the categories a scheduled run extracts today (Europe/London).

    A daily category is always due. A weekly one (R18) is due on the configured weekday, when it
    was never extracted, or when its last successful extract is a week old or more (so a missed
    weekday never makes it less than weekly).
    """

    weekly = [c for c in categories if cadence(c) == "weekly"]
    if not weekly:
        return categories
    today = london_date(now)
    if WEEKDAYS[today.weekday()] == str(current_app.config.get("EXTRACT_WEEKLY_DAY", "sunday")).strip().lower():
        return categories
    marks = watermarks(connection)
    due = set(categories) - set(weekly)
    for category in weekly:
        mark = marks.get(category)
        if mark is None or (today - london_date(mark.updated_at)).days >= 7:
            due.add(category)
    return [c for c in categories if c in due]


def watermarks(connection: Connection) -> dict[str, ExtractWatermark]:
    """Return the connection's watermarks by category."""
    rows = db.session.execute(select(ExtractWatermark).where(ExtractWatermark.connection_id == connection.id))
    return {w.category: w for w in rows.scalars()}


def _latest(connection: Connection, status: RunStatus) -> JobRun | None:
    return db.session.execute(
        select(JobRun)
        .where(JobRun.connection_id == connection.id, JobRun.kind == "extract", JobRun.status == status)
        .order_by(JobRun.finished_at.desc(), JobRun.id.desc())
        .limit(1)
    ).scalar()


def last_success(connection: Connection) -> JobRun | None:
    """Return the connection's most recent successful extract run."""
    return _latest(connection, RunStatus.succeeded)


def pending_hold(connection: Connection) -> JobRun | None:
    """Return the connection's extract run held for review (a mass removal support staff must decide), if any."""
    return _latest(connection, RunStatus.held)


def choose_mode(
    connection: Connection, requested: str, categories: list[str], now: datetime, *, hold: JobRun | None = None
) -> tuple[str, str, dict]:
    """Return (mode, reason, since per category). "incremental" and "auto" fall back to full under R21.

    While a run is held for review (``hold``) every run is incremental, whatever was asked: it
    takes upserts only, from its watermark or else from when the held run started (which read
    everything before), so no full read is repeated and no second hold stacks up.
    """
    if requested not in ("full", "incremental", "auto"):
        raise ExtractRefused("unknown_mode", f"Unknown extract mode {requested!r}: use full, incremental or auto.")
    if hold is not None:
        marks = watermarks(connection)
        held_from = hold.started_at or hold.created_at
        return "incremental", "hold_pending", {
            c: (marks[c].watermark if c in marks else held_from) - WATERMARK_OVERLAP for c in categories
        }
    if requested == "full":
        return "full", "asked", {c: None for c in categories}
    marks = watermarks(connection)
    missing = [c for c in categories if c not in marks]
    if missing:
        # A category the provider confirmed it does not grant never gets a watermark (nothing of it was read):
        # it is read whole in an otherwise incremental run (since None), or one such category made every run
        # of the connection a full one for as long as the school withheld it.
        withdrawn = {w.permission for w in open_withdrawals(connection)}
        missing = [c for c in missing if c not in withdrawn]
    success = last_success(connection)
    recent = recent_runs(connection, now)
    if missing:
        reason = "first_run" if not marks else "no_watermark"
    elif success is None or success.finished_at is None or now - success.finished_at > FULL_AFTER:
        reason = "gap_over_7_days"
    elif requested == "auto" and reconciliation_due(recent, categories):
        # A deletions feed or changeset can miss rows (children of a deleted parent): a full pull catches them.
        reason = "reconciliation_due"
    elif owed := full_run_owed(recent):
        # The run that found it owed queues this full run itself; this catches a queue that never happened
        # (the process ended after that run's commit, the queue failed, or a hold was pending).
        reason = owed
    elif connection.authorised_at is not None and any(marks[c].updated_at < connection.authorised_at for c in categories if c in marks):
        # The connection was (re-)authorised after these watermarks were written (not: it recovered from failing).
        reason = "reauthorised"
    else:
        return "incremental", "asked" if requested == "incremental" else "auto", {
            c: marks[c].watermark - WATERMARK_OVERLAP if c in marks else None for c in categories
        }
    return "full", reason, {c: None for c in categories}


def reconciliation_days(connection: Connection) -> float:
    """Days between full reconciliations: the connection's ``full_reconciliation_days`` setting, else FULL_RECONCILIATION_DAYS."""

    value = connection_settings(connection).get("full_reconciliation_days")
    if value in (None, ""):
        value = current_app.config.get("FULL_RECONCILIATION_DAYS", 7)
    try:
        days = float(value)
    except (TypeError, ValueError):
        days = 7.0
    return days if days > 0 else 7.0


def recent_runs(connection: Connection, now: datetime) -> list:
    """The connection's successful extract runs within the reconciliation period: what the next two rules read.

    One statement before every run, with only the values they need from the runs' JSON.
    """
    since = now - timedelta(days=reconciliation_days(connection))
    return db.session.execute(
        select(
            JobRun.params["mode"].as_string().label("mode"), JobRun.params["categories"].label("categories"),
            *(JobRun.stats[key].as_integer().label(key) for key in OWED_KEYS),
            JobRun.started_at, JobRun.finished_at,
        ).where(
            JobRun.connection_id == connection.id, JobRun.kind == "extract", JobRun.status == RunStatus.succeeded,
            JobRun.finished_at >= since,
        )
    ).all()


def reconciliation_due(runs: list, categories: list[str]) -> bool:
    """Whether a category had no successful full run within the reconciliation period (``runs``: recent_runs)."""
    reconciled: set[str] = set()
    for run in runs:
        if run.mode == "full":
            reconciled.update(run.categories or ())
    return not set(categories) <= reconciled


def full_run_owed(runs: list) -> str | None:
    """The reason a full run is owed when an incremental run found something only a full run catches up on
    (OWED_KEYS in its stats) and no full run has started since; None when none is.

    A restored pupil's older records, and a restored class's lessons, carry stamps no incremental run
    asks for again; a changeset the provider started again (Groupcall's expired ``changedRows``) lists
    no deletions of the time it forgot. Only a full run reads or reconciles them. Runs older than the
    reconciliation period (``runs``: recent_runs) are not looked at: a full run is due by then.
    """
    fulls = [r.started_at for r in runs if r.mode == "full" and r.started_at is not None]
    since = max(fulls) if fulls else None
    owed = {key: n for r in runs if since is None or r.finished_at > since
            for key in OWED_KEYS if (n := getattr(r, key))}
    return owed_reason(owed) if owed else None


def owed_reason(owed: dict[str, int]) -> str:
    """The reason given for a full run owed (counts by stats key, OWED_KEYS): the first that is counted."""
    return next(key for key in OWED_KEYS if owed.get(key))


def read_to(asked: datetime, clock_offset: timedelta | None) -> datetime:
    """Return the watermark a category read to the end earns: when the run started asking for it, by the provider's clock.

    ``asked`` is our clock just before the category's first request; ``clock_offset`` the provider's
    clock minus ours (a lower bound, from its answers' Date headers) or None, when our clock less
    CLOCK_SKEW_MARGIN stands in. Not the newest ``updated_at`` the run saw: a provider that stamps a
    whole data drop with one time (or a future one) would pin the watermark there, and every run
    would read the drop again (issue 19). Everything the provider changed before this time was
    there to read; anything later is stamped later and comes back through the overlap.
    """
    return asked + clock_offset if clock_offset is not None else asked - CLOCK_SKEW_MARGIN


def save_watermarks(connection: Connection, at: dict[str, datetime | None], run_id: int, *, fallback: datetime) -> None:
    """Move the watermarks of the categories to the given provider times (after a successful run).

    A category that saw nothing newer keeps its watermark; one that never had any data gets ``fallback``.
    """
    marks = watermarks(connection)
    now = utcnow()
    for category, at_ in at.items():
        mark = marks.get(category)
        if mark is not None and (at_ is None or mark.watermark > at_):
            at_ = mark.watermark
        at_ = at_ or fallback
        if mark is None:
            db.session.add(
                ExtractWatermark(connection_id=connection.id, category=category, watermark=at_, run_id=run_id, updated_at=now)
            )
        else:
            mark.watermark, mark.run_id, mark.updated_at = at_, run_id, now


def sync_state(connection: Connection) -> dict[str, str]:
    """Return the connector's stored positions at the provider for this connection, by key."""
    rows = db.session.execute(
        select(ConnectorSyncState.key, ConnectorSyncState.value).where(ConnectorSyncState.connection_id == connection.id)
    )
    return dict(rows.all())


def save_sync_state(connection: Connection, staged: dict[str, str | None], run_id: int) -> None:
    """Store the positions a successful run reached (with its watermarks, in the caller's transaction); None forgets one."""
    if not staged:
        return
    stored = {r.key: r for r in db.session.execute(
        select(ConnectorSyncState).where(ConnectorSyncState.connection_id == connection.id,
                                         ConnectorSyncState.key.in_(list(staged)))
    ).scalars()}
    now = utcnow()
    for key, value in staged.items():
        row = stored.get(key)
        if value is None:
            if row is not None:
                db.session.delete(row)
        elif row is None:
            db.session.add(ConnectorSyncState(connection_id=connection.id, key=key, value=value, run_id=run_id, updated_at=now))
        else:
            row.value, row.run_id, row.updated_at = value, run_id, now


def is_suppressed(school_id: int, kind: str, external_id: str) -> bool:
    """Return whether an erased subject must not come back (R50): the suppression list of portal.privacy."""

    return suppressed(school_id, kind, external_id)


# R23/R29: a leaver whose data would already be due for deletion (6 months after leaving).
LEAVER_RETENTION_MONTHS = 6


def is_historic_leaver(record: object, today: date) -> bool:
    """Return whether the first import must skip this record: a pupil past R29's deadline (R23), or staff past R39's.

    Records about a skipped pupil (attendance, results, memberships) are then dropped by the store,
    which keeps only records about pupils it holds, so past years' attendance comes only for pupils imported.
    A member of staff shown as not employed since a provider change time 6 months ago is past R39's deadline
    (the clock portal.retention.deadlines.staff_dues starts from that time).
    """

    if isinstance(record, StaffRecord):
        changed = record.updated_at
        return (record.currently_employed is False and changed is not None
                and add_months(london_date(changed), LEAVER_RETENTION_MONTHS) <= today)
    leaving = getattr(record, "leaving_date", None) if isinstance(record, PupilRecord) else None
    return leaving is not None and add_months(leaving, LEAVER_RETENTION_MONTHS) <= today
