"""Find what is due: walk the store connection by connection in id order and yield each record whose deadline has come."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta

from sqlalchemy import Table, and_, or_, select

from portal.extensions import db
from portal.models import Connection, FINISHED_STATUSES, JobRun
from portal.models.mis import MisPupil, MisStaff
from portal.retention.calendar import LONDON
from portal.retention.deadlines import Due, RetentionContext, earliest
from portal.retention.items import BATCH, Item, _keyset
from portal.retention.users import user_items

__all__ = ["BATCH", "RUN_LOGS", "Item", "iter_due", "row_tables"]

# The category of finished run logs (the portal's own operational data).
RUN_LOGS = "run_logs"
PUPILS = MisPupil.__table__
STAFF = MisStaff.__table__
RUNS = JobRun.__table__


def row_tables() -> list[Table]:
    """Return the store tables other than pupils and staff (their rows go one by one)."""
    return [t for t in db.metadata.sorted_tables if t.name.startswith("mis_") and t not in (PUPILS, STAFF)]


def _start_of_day(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=LONDON)


def iter_due(ctx: RetentionContext, horizon: date, *, include_held: bool = False, school_id: int | None = None) -> Iterator[Item]:
    """Yield every record due on or before the horizon; with include_held, also those a legal hold keeps.

    With ``school_id``, only that school's records (and no operational data).
    """
    query = select(Connection.id, Connection.school_id).order_by(Connection.id)
    if school_id is not None:
        query = query.where(Connection.school_id == school_id)
    for connection_id, owner in db.session.execute(query).all():
        yield from _connection_items(ctx, horizon, owner, connection_id, include_held)
    if school_id is None:
        yield from _operational_items(ctx, horizon)
    yield from user_items(ctx, horizon, organisation_id=school_id)


def _wanted(due: Due | None, held: bool, horizon: date, include_held: bool) -> bool:
    if due is None:
        return False
    return due.due_on <= horizon or (include_held and held)


def _connection_items(ctx, horizon, school_id, connection_id, include_held) -> Iterator[Item]:
    due_pupils: set[int] = set()
    held_pupils: dict[int, date] = {}
    query = select(PUPILS).where(PUPILS.c.connection_id == connection_id)
    for pupil in _keyset(query, PUPILS):
        hold = ctx.hold_until("mis_pupils", pupil.id)
        due, held = earliest(ctx.pupil_dues(pupil), hold)
        if hold is not None:
            held_pupils[pupil.id] = hold
        if _wanted(due, held, horizon, include_held):
            if due.due_on <= horizon:
                due_pupils.add(pupil.id)
            yield Item("mis_pupils", pupil.id, school_id, connection_id, pupil.category, due,
                       ctx.order_for(school_id, connection_id, due), held)

    query = select(STAFF).where(STAFF.c.connection_id == connection_id)
    for staff in _keyset(query, STAFF):
        due, held = earliest(ctx.staff_dues(staff), ctx.hold_until("mis_staff", staff.id))
        if _wanted(due, held, horizon, include_held):
            yield Item("mis_staff", staff.id, school_id, connection_id, staff.category, due,
                       ctx.order_for(school_id, connection_id, due), held)

    shared = ctx.school_dues(school_id, connection_id)
    whole = any(d.due_on <= horizon and not _category_scoped(ctx, d, school_id) for d in shared)
    categories = sorted({c for o in ctx.orders.get(school_id, ()) if o.connection_id in (None, connection_id) for c in o.categories})
    cutoff = _start_of_day(horizon + timedelta(days=1))
    for table in row_tables():
        about_pupil = "pupil_id" in table.c
        tombstoned = and_(table.c.deleted_at.is_not(None), table.c.deleted_at < cutoff)
        if whole and not about_pupil:
            which = True
        elif categories:
            which = or_(tombstoned, table.c.category.in_(categories))
        else:
            which = tombstoned
        query = select(table).where(table.c.connection_id == connection_id, which)
        for row in _keyset(query, table):
            hold = None
            if about_pupil:
                if row.pupil_id in due_pupils:
                    continue  # deleted with its pupil, and counted there
                hold = held_pupils.get(row.pupil_id)
            dues = ctx.school_dues(school_id, connection_id, row.category)
            if about_pupil:
                # Whole-connection clocks reach these rows through their pupil.
                dues = [d for d in dues if _category_scoped(ctx, d, school_id)]
            if row.deleted_at is not None:
                dues += ctx.tombstone_dues(row.deleted_at)
            due, held = earliest(dues, hold)
            if _wanted(due, held, horizon, include_held):
                yield Item(table.name, row.id, school_id, connection_id, row.category, due,
                           ctx.order_for(school_id, connection_id, due), held)


def _category_scoped(ctx: RetentionContext, due: Due, school_id: int) -> bool:
    """Return whether a Due comes from a deletion order limited to some categories (a removed grant)."""
    return any(o.categories and o.rule_id == due.rule_id and o.trigger_on == due.trigger_on for o in ctx.orders.get(school_id, ()))


def _operational_items(ctx: RetentionContext, horizon: date) -> Iterator[Item]:
    """Yield finished run logs past their period (the portal's own operational data)."""
    rules = ctx.rules.get("operational:run_finished", ())
    if not rules:
        return
    # The oldest trigger that is due by the horizon under the shortest rule bounds the query.
    query = select(RUNS.c.id, RUNS.c.finished_at).where(
        RUNS.c.finished_at.is_not(None), RUNS.c.status.in_([s.value for s in FINISHED_STATUSES])
    )
    for run in _keyset(query, RUNS):
        due, _ = earliest(ctx.run_dues(run.finished_at))
        if due is not None and due.due_on <= horizon:
            yield Item("job_runs", run.id, None, None, RUN_LOGS, due)
