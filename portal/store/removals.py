"""Removals: staged per run (deletions feed, full-pull reconciliation, R20), then applied, carried or discarded."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime

from sqlalchemy import and_, delete, func, literal, or_, select, text, update

from portal import audit
from portal.extensions import db
from portal.models import Connection, ExtractRemoval, MisPupil
from portal.models.base import UTCDateTime, utcnow
from portal.models.mis import STORE_MODELS
from portal.store.tables import KIND_CATEGORY, _insert_for, _table, one_of
from portal.store.walk import DSR_SUBJECT_TABLES, linked_rows


def stage_removals(run_id: int, connection_id: int, removals: Mapping[tuple[str, str], datetime]) -> None:
    """Stage a batch's removals ((kind, external id) -> when deleted) for the run, in one statement.

    On PostgreSQL the batch goes as two JSON parameters: one parameter set per removal, and then
    three arrays, were each a tenth of a national worker's CPU (a day's timetable departures are
    hundreds of membership tombstones). A removal staged already for the run is kept as it is
    (ON CONFLICT DO NOTHING).
    """
    if not removals:
        return
    dialect = db.session.get_bind().dialect.name
    table = ExtractRemoval.__table__
    if dialect != "postgresql":
        db.session.execute(
            _insert_for(dialect)(table).on_conflict_do_nothing(index_elements=["run_id", "kind", "external_id"]),
            [{"run_id": run_id, "connection_id": connection_id, "kind": kind, "external_id": ext, "deleted_at": at}
             for (kind, ext), at in removals.items()],
        )
        return
    # The column's own type checks and converts each time (a naive one is refused), once per distinct time.
    process = UTCDateTime().process_bind_param
    times = {at: process(at, None).isoformat() for at in set(removals.values())}
    # Two JSON parameters, the keys as [kind, id] pairs and their times in the same order: psycopg
    # formats an array parameter element by element in Python (three of them were a tenth of a
    # national worker's CPU for a day's timetable departures, about 1,200 a school, issue 19).
    db.session.execute(_STAGE_JSON, {
        "run_id": run_id, "connection_id": connection_id,
        "keys": json.dumps(list(removals)), "ats": json.dumps([times[at] for at in removals.values()]),
    })


_STAGE_JSON = text(
    "INSERT INTO extract_removals (run_id, connection_id, kind, external_id, deleted_at) "
    "SELECT :run_id, :connection_id, removal.key ->> 0, removal.key ->> 1, CAST(removal.at AS timestamptz) "
    "FROM ROWS FROM (json_array_elements(CAST(:keys AS json)), json_array_elements_text(CAST(:ats AS json))) "
    "AS removal(key, at) "
    "ON CONFLICT (run_id, kind, external_id) DO NOTHING"
)


def stage_reconciliation(
    connection: Connection, run_id: int, kinds: Iterable[str], *, session_window: tuple[date, date] | None = None,
    since: datetime | None = None,
) -> int:
    """Stage the removal of every live row of these kinds that a complete full pull did not return (R20).

    Attendance marks are reconciled only inside the sessions the pull covered: a pull of this
    term's marks says nothing about last year's. A row that any run since this one started saw
    (marked by a later run, or written at or after ``since``) is never proposed: this run being
    resumed after lying dead must not read "newer runs saw it" as "the provider stopped returning it".
    """
    now = utcnow()
    dialect = db.session.get_bind().dialect.name
    staged = 0
    for kind in kinds:
        table = _table(kind)
        where = [
            table.c.connection_id == connection.id,
            table.c.deleted_at.is_(None),
            or_(table.c.seen_run_id.is_(None), table.c.seen_run_id < run_id),
        ]
        if since is not None:
            where.append(table.c.extracted_at < since)
        if kind == "attendance_mark":
            if session_window is None:
                continue
            where.append(table.c.session_date.between(*session_window))
        source = select(
            literal(run_id), literal(connection.id), literal(kind), table.c.external_id, literal(now, UTCDateTime())
        ).where(and_(*where))
        stmt = _insert_for(dialect)(ExtractRemoval.__table__).from_select(
            ["run_id", "connection_id", "kind", "external_id", "deleted_at"], source
        ).on_conflict_do_nothing(index_elements=["run_id", "kind", "external_id"])
        staged += db.session.execute(stmt).rowcount or 0
    audit.record(
        "store.reconciliation_staged",
        organisation_id=connection.school_id,
        target=connection,
        details={"run_id": run_id, "staged": staged},
        actor="system",
    )
    return staged


def pending_pupil_removals(connection: Connection, run_id: int) -> int:
    """Return how many live pupils the run's staged removals would tombstone."""
    return db.session.execute(
        select(func.count())
        .select_from(ExtractRemoval)
        .join(
            MisPupil,
            and_(MisPupil.connection_id == ExtractRemoval.connection_id, MisPupil.external_id == ExtractRemoval.external_id),
        )
        .where(ExtractRemoval.run_id == run_id, ExtractRemoval.kind == "pupil", MisPupil.deleted_at.is_(None))
    ).scalar_one()


def live_pupil_count(connection: Connection) -> int:
    """Return how many pupils of the connection are not tombstoned."""
    return db.session.execute(
        select(func.count()).select_from(MisPupil).where(
            MisPupil.connection_id == connection.id, MisPupil.deleted_at.is_(None)
        )
    ).scalar_one()


# Keys per statement when applying removals (on SQLite each is a bound parameter, and it allows 32,766 a
# statement; PostgreSQL gets them as one array, see one_of).
_KEYS_PER_STATEMENT = 2000


def apply_removals(connection: Connection, run_id: int, *, publish: Callable[[int, list[int], list[int]], int],
                   actor: str = "system", actor_user_id: int | None = None) -> dict[str, int]:
    """Tombstone every row the run staged for removal; return tombstoned counts per category.

    ``publish(school id, pupil ids, staff ids)`` tells the products that received the removed pupils and
    staff (R42, ``portal.deletions.publish_provider_deletion``) in the same transaction; returns notices.
    """
    counts: Counter = Counter()
    staged_ids: dict[str, list[str]] = {}
    for kind, external_id in db.session.execute(
        select(ExtractRemoval.kind, ExtractRemoval.external_id).where(ExtractRemoval.run_id == run_id)
    ):
        staged_ids.setdefault(kind, []).append(external_id)
    if not staged_ids:
        # Nothing staged (most incremental runs): nothing to tombstone, tell or audit.
        return {}
    now = utcnow()
    subjects: dict[str, list[int]] = {}
    groups: list[str] = []
    for kind, external_ids in staged_ids.items():
        if kind not in STORE_MODELS:
            continue
        table = _table(kind)
        when = (
            select(ExtractRemoval.deleted_at)
            .where(
                ExtractRemoval.run_id == run_id,
                ExtractRemoval.kind == kind,
                ExtractRemoval.external_id == table.c.external_id,
            )
            .scalar_subquery()
        )
        # The rows are found by their keys (the store's unique (connection, external id) index), not by a
        # join with the staging table: that table is filled and emptied by every run, so its planner
        # statistics are never right, and a join planned on them scanned every pair of rows (a second for
        # a day's 1,500 membership tombstones of a 250-pupil school; 20 ms of its 120 ms incremental run).
        for start in range(0, len(external_ids), _KEYS_PER_STATEMENT):
            keys = external_ids[start:start + _KEYS_PER_STATEMENT]
            live = and_(table.c.connection_id == connection.id, table.c.deleted_at.is_(None), one_of(table.c.external_id, keys))
            if kind in DSR_SUBJECT_TABLES:
                # The pupils and staff this removal takes: everything about them goes with them, below.
                subjects.setdefault(kind, []).extend(db.session.execute(select(table.c.id).where(live)).scalars())
            elif kind == "group":
                # The groups this removal takes: their memberships and lessons go with them, below.
                groups.extend(db.session.execute(select(table.c.external_id).where(live)).scalars())
            result = db.session.execute(
                # extracted_at moves too: the product feed pages by it, so consumers see the tombstone and delete.
                update(table).where(live).values(deleted_at=when, extracted_at=now)
            )
            counts[KIND_CATEGORY[kind]] += result.rowcount or 0
    for kind, ids in subjects.items():
        counts.update(_tombstone_about(kind, ids, now))
    counts.update(_tombstone_group_children(connection.id, groups, now))
    db.session.execute(delete(ExtractRemoval).where(ExtractRemoval.run_id == run_id))
    # R42: products that received a removed pupil or staff member are told now, in the same transaction.
    notices = publish(connection.school_id, subjects.get("pupil", []), subjects.get("staff", []))
    audit.record(
        "store.records_tombstoned",
        organisation_id=connection.school_id,
        target=connection,
        details={"run_id": run_id, "tombstoned": dict(counts), "notices": notices},
        actor=actor,
        actor_user_id=actor_user_id,
    )
    return dict(counts)


def _tombstone_about(subject_kind: str, subject_ids: list[int], now: datetime) -> Counter:
    """Tombstone every live store row about these pupils or staff (found by foreign keys); return counts per category.

    A provider deletion names the pupil only (Wonde's feed lists top-level records; a changeset may
    list only the pupil): their marks, results, memberships and census rows must stop flowing too.
    """
    counts: Counter = Counter()
    if not subject_ids:
        return counts
    for table, fk, parent_ids, _ids in linked_rows(subject_kind, subject_ids):
        if not parent_ids or "deleted_at" not in table.c or not table.name.startswith("mis_"):
            continue
        rows = db.session.execute(
            select(table.c.category, func.count()).where(one_of(fk.parent, parent_ids), table.c.deleted_at.is_(None))
            .group_by(table.c.category)
        ).all()
        if not rows:
            continue
        db.session.execute(
            update(table).where(one_of(fk.parent, parent_ids), table.c.deleted_at.is_(None)).values(deleted_at=now, extracted_at=now)
        )
        for category, n in rows:
            counts[category] += n
    return counts


def _tombstone_group_children(connection_id: int, group_external_ids: list[str], now: datetime) -> Counter:
    """Tombstone the live memberships and lessons of these removed groups; return counts per category.

    A provider deletes a class's lessons (and its pupils' memberships) with the class, without deletion
    entries of their own (Wonde: "when a class is removed its lessons vanish"): they must stop flowing
    with it, not at the next full reconciliation. A class the provider restores gets them back from
    the full run it makes owed (the engine's ``groups_restored``).
    """
    counts: Counter = Counter()
    if not group_external_ids:
        return counts
    for kind in ("membership", "lesson"):
        table = _table(kind)
        for start in range(0, len(group_external_ids), _KEYS_PER_STATEMENT):
            live = and_(table.c.connection_id == connection_id, table.c.deleted_at.is_(None),
                        one_of(table.c.group_external_id, group_external_ids[start:start + _KEYS_PER_STATEMENT]))
            counts[KIND_CATEGORY[kind]] += db.session.execute(
                update(table).where(live).values(deleted_at=now, extracted_at=now)
            ).rowcount or 0
    return +counts


def carry_removals(connection: Connection, from_run_id: int, to_run_id: int) -> int:
    """Move a run's staged removals to another (held) run, to be decided with it; return how many moved."""
    dialect = db.session.get_bind().dialect.name
    removal = ExtractRemoval.__table__
    source = select(
        literal(to_run_id), removal.c.connection_id, removal.c.kind, removal.c.external_id, removal.c.deleted_at
    ).where(removal.c.run_id == from_run_id, removal.c.connection_id == connection.id)
    db.session.execute(
        _insert_for(dialect)(removal).from_select(
            ["run_id", "connection_id", "kind", "external_id", "deleted_at"], source
        ).on_conflict_do_nothing(index_elements=["run_id", "kind", "external_id"])
    )
    # (An INSERT … SELECT's rowcount is not reliable on every driver: count what is removed instead.)
    moved = db.session.execute(delete(ExtractRemoval).where(ExtractRemoval.run_id == from_run_id)).rowcount or 0
    if moved:
        audit.record("store.removals_carried", organisation_id=connection.school_id, target=connection,
                     details={"run_id": from_run_id, "held_run_id": to_run_id, "carried": moved}, actor="system")
    return moved


def discard_removals(connection: Connection, run_id: int, *, actor: str = "system", actor_user_id: int | None = None) -> int:
    """Drop the run's staged removals without applying them; return how many there were."""
    result = db.session.execute(delete(ExtractRemoval).where(ExtractRemoval.run_id == run_id))
    audit.record(
        "store.removals_discarded",
        organisation_id=connection.school_id,
        target=connection,
        details={"run_id": run_id, "discarded": result.rowcount or 0},
        actor=actor,
        actor_user_id=actor_user_id,
    )
    return result.rowcount or 0
