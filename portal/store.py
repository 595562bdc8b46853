"""The MIS store's one door: every write, read and delete of pupil and staff data goes through here.

Write side (the extract engine): a ``Writer`` buffers canonical records and writes them in batches
with SQLAlchemy Core (``INSERT … ON CONFLICT``; on PostgreSQL every batch goes through COPY into a
temporary table first), counting inserted / updated / unchanged per category.
Removals (the deletions feed, full-pull reconciliation) are staged per run and applied only when
the engine says so, so the mass-removal hold can stop them. Every public function, and every
Writer when it finishes, writes one audit entry with ids and counts only.

Other areas add their own sections below (retention deletes, product API reads, data-subject requests).
"""
from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from flask import current_app
from sqlalchemy import JSON, Table, and_, bindparam, delete, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from portal import audit
from portal.connectors import RECORD_TYPES, Record, Tombstone
from portal.extensions import db
from portal.models import Connection, ExtractRemoval, MisPupil
from portal.models.base import UTCDateTime, utcnow
from portal.crypto import EncryptedText
from portal.models.mis import STORE_MODELS, PupilYearGroupFact, special_category_columns

__all__ = [
    "COUNT_KEYS",
    "Writer",
    "apply_removals",
    "content_hash",
    "delete_pupils",
    "delete_rows",
    "carry_removals",
    "clear_fields",
    "clearable_fields",
    "discard_removals",
    "live_pupil_count",
    "pending_pupil_removals",
    "pupil_row_counts",
    "record_year_groups",
    "special_columns",
    "stage_reconciliation",
    "withhold_objections",
]

COUNT_KEYS = ("inserted", "updated", "unchanged", "tombstoned")
# Columns the store fills itself; everything else on a store table comes from the record.
_META = frozenset(
    {"id", "school_id", "connection_id", "category", "external_id", "provider_updated_at", "extracted_at",
     "deleted_at", "data_type", "content_hash", "seen_run_id", "pupil_id"}
)
# Record kinds whose rows hang off a pupil row (resolved from pupil_external_id, R34).
PUPIL_KINDS = frozenset(k for k, m in STORE_MODELS.items() if "pupil_id" in m.__table__.c)
KIND_CATEGORY = {kind: cls.category for kind, cls in RECORD_TYPES.items()}


def _table(kind: str) -> Table:
    return STORE_MODELS[kind].__table__


@functools.lru_cache(maxsize=None)
def _data_columns(kind: str) -> tuple[str, ...]:
    return tuple(c.name for c in _table(kind).columns if c.name not in _META)


@functools.lru_cache(maxsize=None)
def _upsert(dialect: str, kind: str, cols: tuple[str, ...]):
    """Return the (cached) INSERT … ON CONFLICT DO UPDATE statement for these columns."""
    stmt = _insert_for(dialect)(_table(kind))
    set_ = {c: stmt.excluded[c] for c in cols if c not in ("connection_id", "external_id")}
    set_["deleted_at"] = None
    return stmt.on_conflict_do_update(index_elements=["connection_id", "external_id"], set_=set_)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


@functools.lru_cache(maxsize=8)
def _hash_key(secret: str | bytes) -> bytes:
    # BLAKE2b takes a key of at most 64 bytes: derive one from the app's secret key.
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).digest()


def content_hash(kind: str, values: Mapping[str, Any], key: bytes | None = None) -> str:
    """Return a keyed hash of a record's stored values, so change detection never needs to decrypt.

    Keyed (BLAKE2b with a key derived from the app's secret key) because the values include
    special-category codes with few possible values, which a plain hash would give away. The
    payload is the repr of the values in column order: a few microseconds a record, where a
    sorted JSON document and HMAC took three times as long on the extract's hot path. ``key``
    (from ``hash_key()``) saves looking the secret up for every record.
    """
    # The data columns include pupil_external_id on tables about a pupil (pupil_id is the store's own).
    payload = repr(tuple([values.get(c) for c in _data_columns(kind)]))
    return hashlib.blake2b(f"{kind}|{payload}".encode(), key=key or hash_key(), digest_size=32).hexdigest()


def hash_key() -> bytes:
    """Return the key of content hashes for the current app."""
    return _hash_key(current_app.config["SECRET_KEY"])


def _insert_for(dialect: str):
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


@functools.lru_cache(maxsize=None)
def special_columns(kind: str) -> tuple[str, ...]:
    """Return the special-category columns of a kind's store table (marked in portal.models.mis)."""
    return tuple(special_category_columns(_table(kind)))


def _objecting(school_id: int, pupil_external_ids: Iterable[str]) -> set[str]:
    """Return which of these pupils have a written objection to special-category processing on file (R74)."""
    from portal.models import FlagKind, SubjectFlag, SubjectKind

    wanted = list({p for p in pupil_external_ids if p})
    if not wanted:
        return set()
    return set(db.session.execute(
        select(SubjectFlag.external_id).where(
            SubjectFlag.school_id == school_id, SubjectFlag.subject_kind == SubjectKind.pupil,
            SubjectFlag.kind == FlagKind.special_category_objection, SubjectFlag.lifted_at.is_(None),
            SubjectFlag.external_id.in_(wanted),
        )
    ).scalars())


@functools.lru_cache(maxsize=None)
def _copy_plan(kind: str, full: bool) -> tuple[tuple[str, ...], dict[str, Any], str, str]:
    """Return (columns, value converters, stage DDL, upsert SQL) for COPY-ing a kind on PostgreSQL.

    The converters do what SQLAlchemy's bind processing would (COPY bypasses it): encrypt the
    special-category columns (R75) and serialise JSON.
    """
    table = _table(kind)
    name = table.name
    cols = tuple(c for c in (*_data_columns(kind), *(("pupil_id",) if kind in PUPIL_KINDS else ()),
                             "school_id", "connection_id", "category", "external_id", "provider_updated_at",
                             "data_type", "content_hash", "seen_run_id", "extracted_at"))
    convert: dict[str, Any] = {}
    for c in cols:
        column = table.c[c]
        if isinstance(column.type, EncryptedText):
            convert[c] = functools.partial(column.type.process_bind_param, dialect=None)
        elif isinstance(column.type, JSON):
            convert[c] = lambda v: None if v is None else json.dumps(v)
    col_list = ", ".join(cols)
    stage = f"_stage_{name}"
    ddl = f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS SELECT {col_list} FROM {name} WITH NO DATA"  # nosec B608: names come from the table's own metadata, values are bound
    changed = f"{name}.content_hash IS DISTINCT FROM EXCLUDED.content_hash OR {name}.deleted_at IS NOT NULL"
    data = [c for c in cols if c not in ("connection_id", "external_id", "seen_run_id", "extracted_at")]
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in data)
    # A full run marks every row it saw (its reconciliation removes the rest, and spares rows any later
    # full run saw); an incremental run writes only rows whose content changed: marking an unchanged
    # row seen would cost a write per row re-sent in the overlap and protect nothing (issue 19).
    seen = "EXCLUDED.seen_run_id"
    touch = f" OR {name}.seen_run_id IS DISTINCT FROM {seen}" if full else ""
    # One statement writes and counts: a row comes back when it was inserted (xmax = 0) or written;
    # extracted_at moves only when its content changed (the product feed pages by it), so
    # "extracted_at = this flush's time" tells updated rows from rows only marked as seen.
    upsert = (
        f"INSERT INTO {name} ({col_list}) SELECT {col_list} FROM {stage} "  # nosec B608: names come from the table's own metadata, values are bound
        f"ON CONFLICT (connection_id, external_id) DO UPDATE SET {sets}, deleted_at = NULL, seen_run_id = {seen}, "
        f"extracted_at = CASE WHEN {changed} THEN EXCLUDED.extracted_at ELSE {name}.extracted_at END "
        f"WHERE {changed}{touch} "
        f"RETURNING (xmax = 0), (extracted_at = %s)"
    )
    return cols, convert, ddl, upsert


class Writer:
    """Buffers one run's records for one connection and writes them in batches (no commits: the engine commits).

    Every run marks the rows it returned as seen by it, so a complete full pull can tombstone the
    rest (R20) and spare rows a later run saw.
    On PostgreSQL every batch is COPied into a temporary table and upserted with one statement
    that also returns the counts; on SQLite, batched ``INSERT … ON CONFLICT``.
    """

    def __init__(self, connection: Connection, run_id: int, *, full: bool, batch_size: int = 5000) -> None:
        self.connection_id = connection.id
        self.school_id = connection.school_id
        self.run_id = run_id
        self.full = full
        self.batch_size = batch_size
        self.dialect = db.session.get_bind().dialect.name
        self._rows: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self._removals: dict[tuple[str, str], datetime] = {}
        self._buffered = 0
        # Per category: inserted/updated/unchanged (tombstoned is counted when removals are applied).
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.skipped: Counter = Counter()
        # Earliest and latest attendance session seen: full-pull reconciliation of marks stays inside it.
        self.session_window: list[date | None] = [None, None]
        self.written = 0
        # Per category: the latest provider time seen (updated or deleted), the next watermark.
        self.high_water: dict[str, datetime] = {}
        # Pupil provider id -> store id, filled as batches need them (a school's pupils: a few thousand ids).
        self._pupil_ids: dict[str, int] = {}
        self._key = hash_key()

    # -- buffering

    def add(self, record: Record) -> None:
        """Buffer one record (a tombstone is staged as a removal); write when the buffer is full."""
        if isinstance(record, Tombstone):
            key = (record.record_kind, record.external_id)
            self._removals[key] = record.deleted_at or utcnow()
            self._high_water(record.record_category, record.deleted_at)
        else:
            category, at = record.category, record.updated_at
            if at is not None and (category not in self.high_water or at > self.high_water[category]):
                self.high_water[category] = at
            kind = record.kind
            # Later copies of the same record in one batch win (and ON CONFLICT needs unique keys).
            self._rows[kind][record.external_id] = self._row(record)
            if kind == "attendance_mark":
                self._widen_window(record.session_date)
        self._buffered += 1
        if self._buffered >= self.batch_size:
            self.flush()

    def _high_water(self, category: str, at: datetime | None) -> None:
        if at is not None and (category not in self.high_water or at > self.high_water[category]):
            self.high_water[category] = at

    def _widen_window(self, day: date | None) -> None:
        if day is None:
            return
        lo, hi = self.session_window
        if lo is None or day < lo:
            self.session_window[0] = day
        if hi is None or day > hi:
            self.session_window[1] = day

    def _row(self, record: Record) -> dict[str, Any]:
        values = record.values()
        kind = record.kind
        # R10: only the listed fields are kept; anything else the record carries is dropped here.
        row = {c: values.get(c) for c in _data_columns(kind)}
        if "roles" in row:
            row["roles"] = _jsonable(row["roles"])
        if kind in PUPIL_KINDS:
            row["pupil_external_id"] = values.get("pupil_external_id") or (
                record.external_id if kind == "demographics" else None
            )
        if record.absent:
            # Filled from the stored row at flush (absent is not null); hashed again there.
            absent = tuple(c for c in _data_columns(kind) if c in record.absent)
            if absent:
                row["_absent"] = absent
        row["content_hash"] = content_hash(kind, row, self._key)
        row.update(
            school_id=self.school_id,
            connection_id=self.connection_id,
            category=record.category,
            external_id=record.external_id,
            provider_updated_at=record.updated_at,
            data_type="customer",  # R16: MIS data is the school's, as controller
            seen_run_id=self.run_id,
        )
        return row

    # -- writing

    def flush(self) -> None:
        """Write everything buffered (inside the caller's transaction)."""
        now = utcnow()
        for kind in list(self._rows):
            rows = self._rows.pop(kind)
            if not rows:
                continue
            for row in rows.values():
                row["extracted_at"] = now
            if kind in PUPIL_KINDS:
                rows = self._resolve_pupils(kind, rows)
            if not rows:
                continue
            self._keep_absent(kind, rows)
            if special_columns(kind):
                self._withhold_in_batch(kind, rows)
            if self.dialect == "postgresql":
                self._write_copy(kind, rows, now)
            else:
                self._write_upsert(kind, rows)
            if kind == "pupil":
                record_year_groups(self.connection_id, {ext: (r["year_group"], r["leaving_date"]) for ext, r in rows.items()}, now)
            self.written += len(rows)
        if self._removals:
            ins = _insert_for(self.dialect)(ExtractRemoval.__table__)
            db.session.execute(
                ins.on_conflict_do_nothing(index_elements=["run_id", "kind", "external_id"]),
                [
                    {"run_id": self.run_id, "connection_id": self.connection_id, "kind": kind,
                     "external_id": ext, "deleted_at": at}
                    for (kind, ext), at in self._removals.items()
                ],
            )
            self._removals.clear()
        self._buffered = 0

    def _keep_absent(self, kind: str, rows: dict[str, dict[str, Any]]) -> None:
        """Give fields the provider left out the values already stored (a new row gets None): absent is not null."""
        partial = {ext: row for ext, row in rows.items() if "_absent" in row}
        if not partial:
            return
        table = _table(kind)
        columns = sorted({c for row in partial.values() for c in row["_absent"]})
        stored = {
            r.external_id: r
            for r in db.session.execute(
                select(table.c.external_id, *(table.c[c] for c in columns)).where(
                    table.c.connection_id == self.connection_id, table.c.external_id.in_(list(partial))
                )
            )
        }
        for ext, row in partial.items():
            old = stored.get(ext)
            for c in row.pop("_absent"):
                row[c] = None if old is None else getattr(old, c)
            if "roles" in row:
                row["roles"] = _jsonable(row["roles"])
            row["content_hash"] = content_hash(kind, row, self._key)

    def _withhold_in_batch(self, kind: str, rows: dict[str, dict[str, Any]]) -> None:
        """R74: store no special-category value for a pupil whose written objection is on file (one query a batch)."""
        special = special_columns(kind)
        objecting = _objecting(self.school_id, (r["pupil_external_id"] for r in rows.values()))
        for row in rows.values():
            if row["pupil_external_id"] in objecting:
                row.update(dict.fromkeys(special))
                row["content_hash"] = content_hash(kind, row, self._key)

    def _resolve_pupils(self, kind: str, rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        ids = self._pupil_ids
        wanted = {r["pupil_external_id"] for r in rows.values() if r["pupil_external_id"]} - ids.keys()
        if wanted:
            ids.update(
                db.session.execute(
                    select(MisPupil.external_id, MisPupil.id).where(
                        MisPupil.connection_id == self.connection_id, MisPupil.external_id.in_(wanted),
                        # A pupil the provider deleted takes no new rows (they would be served again).
                        MisPupil.deleted_at.is_(None),
                    )
                ).all()
            )
        kept = {}
        for ext, row in rows.items():
            pupil_id = ids.get(row["pupil_external_id"])
            if pupil_id is None:
                # A record about a pupil the store does not hold (not imported, R23, or erased): dropped.
                self.skipped[KIND_CATEGORY[kind]] += 1
                continue
            row["pupil_id"] = pupil_id
            kept[ext] = row
        return kept

    def _write_upsert(self, kind: str, rows: dict[str, dict[str, Any]]) -> None:
        table = _table(kind)
        category = KIND_CATEGORY[kind]
        existing = {
            ext: (h, deleted)
            for ext, h, deleted in db.session.execute(
                select(table.c.external_id, table.c.content_hash, table.c.deleted_at).where(
                    table.c.connection_id == self.connection_id, table.c.external_id.in_(list(rows))
                )
            )
        }
        changed, unchanged = [], []
        for ext, row in rows.items():
            old = existing.get(ext)
            if old is None:
                self.counts[category]["inserted"] += 1
                changed.append(row)
            elif old[0] != row["content_hash"] or old[1] is not None:
                self.counts[category]["updated"] += 1
                changed.append(row)
            else:
                self.counts[category]["unchanged"] += 1
                unchanged.append(ext)
        if changed:
            db.session.execute(_upsert(self.dialect, kind, tuple(changed[0])), changed)
        if unchanged and self.full:
            db.session.execute(
                update(table)
                .where(table.c.connection_id == self.connection_id, table.c.external_id.in_(unchanged))
                .values(seen_run_id=self.run_id)
            )

    def _write_copy(self, kind: str, rows: dict[str, dict[str, Any]], now: datetime) -> None:
        """COPY the batch into a temporary table, then one INSERT … ON CONFLICT that writes and counts."""
        cols, convert, ddl, upsert = _copy_plan(kind, self.full)
        name = _table(kind).name
        raw = db.session.connection().connection.driver_connection
        with raw.cursor() as cur:
            cur.execute(ddl)
            cur.execute(f"TRUNCATE _stage_{name}")
            with cur.copy(f"COPY _stage_{name} ({', '.join(cols)}) FROM STDIN") as copy:
                if convert:
                    for row in rows.values():
                        copy.write_row([convert[c](row[c]) if c in convert else row[c] for c in cols])
                else:
                    for row in rows.values():
                        copy.write_row([row[c] for c in cols])
            cur.execute(upsert, (now,))
            inserted = updated = 0
            for was_inserted, changed in cur.fetchall():
                if was_inserted:
                    inserted += 1
                elif changed:
                    updated += 1
        counted = {"inserted": inserted, "updated": updated, "unchanged": len(rows) - inserted - updated}
        self.counts[KIND_CATEGORY[kind]].update({k: n for k, n in counted.items() if n})

    def finish(self, action: str = "store.records_written") -> None:
        """Write what is left, apply pupils' objections to stored rows (R74), and record one audit entry with the counts."""
        self.flush()
        for category, n in withhold_objections(self.school_id, connection_id=self.connection_id).items():
            self.counts[category]["updated"] += n
        audit.record(
            action,
            organisation_id=self.school_id,
            target_type="connections",
            target_id=self.connection_id,
            details={"run_id": self.run_id, "counts": {c: dict(v) for c, v in self.counts.items()}},
            actor="system",
        )


def withhold_objections(school_id: int, *, connection_id: int | None = None, pupil_external_id: str | None = None) -> dict[str, int]:
    """Null the stored special-category values of pupils whose written objection is on file (R74).

    The extract calls it at the end of every run (so a notice recorded since the last run takes
    effect even when the provider sends nothing new about the pupil); the action that records a
    notice may call it at once for that pupil. Returns rows changed per category. Flagged pupils
    are few: their rows are read (decrypted) to recompute the keyed hash without the values.
    """
    from portal.models import FlagKind, SubjectFlag, SubjectKind

    flagged = select(SubjectFlag.external_id).where(
        SubjectFlag.school_id == school_id, SubjectFlag.subject_kind == SubjectKind.pupil,
        SubjectFlag.kind == FlagKind.special_category_objection, SubjectFlag.lifted_at.is_(None),
    )
    if pupil_external_id is not None:
        flagged = flagged.where(SubjectFlag.external_id == pupil_external_id)
    counts: Counter = Counter()
    now = utcnow()
    for kind, model in STORE_MODELS.items():
        special = special_columns(kind)
        table = model.__table__
        if not special or "pupil_external_id" not in table.c:
            continue
        where = [table.c.school_id == school_id, table.c.pupil_external_id.in_(flagged),
                 or_(*(table.c[c].is_not(None) for c in special))]
        if connection_id is not None:
            where.append(table.c.connection_id == connection_id)
        rows = db.session.execute(select(table).where(*where)).mappings().all()
        if not rows:
            continue
        changes = []
        for row in rows:
            values = {**row, **dict.fromkeys(special)}
            changes.append({"row_id": row["id"], "new_hash": content_hash(kind, values)})
        db.session.execute(
            update(table).where(table.c.id == bindparam("row_id")).values(
                **dict.fromkeys(special), content_hash=bindparam("new_hash"), extracted_at=now),
            changes,
        )
        counts[KIND_CATEGORY[kind]] += len(changes)
    if counts:
        audit.record("store.special_category_withheld", organisation_id=school_id, target_type="connections",
                     target_id=connection_id, details={"rows": dict(counts)}, actor="system")
    return dict(counts)


# ---------------------------------------------------------------- removals (staged, then applied)


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


def apply_removals(connection: Connection, run_id: int, *, actor: str = "system", actor_user_id: int | None = None) -> dict[str, int]:
    """Tombstone every row the run staged for removal; return tombstoned counts per category."""
    counts: Counter = Counter()
    kinds = db.session.execute(
        select(ExtractRemoval.kind).where(ExtractRemoval.run_id == run_id).distinct()
    ).scalars().all()
    now = utcnow()
    subjects: dict[str, list[int]] = {}
    for kind in kinds:
        if kind not in STORE_MODELS:
            continue
        table = _table(kind)
        staged = select(ExtractRemoval.external_id).where(ExtractRemoval.run_id == run_id, ExtractRemoval.kind == kind)
        if kind in DSR_SUBJECT_TABLES:
            # The pupils and staff this removal takes: everything about them goes with them, below.
            subjects[kind] = list(db.session.execute(select(table.c.id).where(
                table.c.connection_id == connection.id, table.c.deleted_at.is_(None), table.c.external_id.in_(staged)
            )).scalars())
        when = (
            select(ExtractRemoval.deleted_at)
            .where(
                ExtractRemoval.run_id == run_id,
                ExtractRemoval.kind == kind,
                ExtractRemoval.external_id == table.c.external_id,
            )
            .scalar_subquery()
        )
        result = db.session.execute(
            update(table)
            .where(table.c.connection_id == connection.id, table.c.deleted_at.is_(None), table.c.external_id.in_(staged))
            # extracted_at moves too: the product feed pages by it, so consumers see the tombstone and delete.
            .values(deleted_at=when, extracted_at=now)
        )
        counts[KIND_CATEGORY[kind]] += result.rowcount or 0
    for kind, ids in subjects.items():
        counts.update(_tombstone_about(kind, ids, now))
    db.session.execute(delete(ExtractRemoval).where(ExtractRemoval.run_id == run_id))
    # R42: products that received a removed pupil or staff member are told now, in the same transaction.
    from portal import deletions as _deletions

    notices = _deletions.publish_provider_deletion(connection.school_id, subjects.get("pupil", []), subjects.get("staff", []))
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
    ids_by_table = {DSR_SUBJECT_TABLES[subject_kind]: subject_ids}
    for table, parent, fk in dsr_linked_tables(subject_kind):
        parent_ids = ids_by_table.get(parent.name, [])
        if not parent_ids or "deleted_at" not in table.c or not table.name.startswith("mis_"):
            continue
        ids_by_table[table.name] = list(db.session.execute(select(table.c.id).where(fk.parent.in_(parent_ids))).scalars())
        rows = db.session.execute(
            select(table.c.category, func.count()).where(fk.parent.in_(parent_ids), table.c.deleted_at.is_(None))
            .group_by(table.c.category)
        ).all()
        if not rows:
            continue
        db.session.execute(
            update(table).where(fk.parent.in_(parent_ids), table.c.deleted_at.is_(None)).values(deleted_at=now, extracted_at=now)
        )
        for category, n in rows:
            counts[category] += n
    return counts
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


# ---------------------------------------------------------------------------
# Product API reads (owner: product API). Every product read of pupil or staff data comes
# through read_feed(), after portal.api.purpose.check_read() has allowed it (R11); each call
# writes one audit entry with feature, category, school and count, never field values (R68).
# ---------------------------------------------------------------------------

from dataclasses import dataclass as _dataclass  # noqa: E402  (this section keeps its imports to itself)
from datetime import date as _date, datetime as _datetime  # noqa: E402

from sqlalchemy import and_ as _and, func as _func, or_ as _or, select as _select  # noqa: E402

from portal import audit as _audit  # noqa: E402
from portal.extensions import db as _db  # noqa: E402
from portal.models.base import utcnow as _utcnow  # noqa: E402


# The feed's record types: name in the URL -> (store model, the category it belongs to).
def api_record_types() -> dict[str, tuple[type, str]]:
    """Return each record type the product API serves, with its store model and category."""
    from portal.models import mis

    return {
        "pupils": (mis.MisPupil, "student_basic"),
        "demographics": (mis.MisDemographics, "student_demographics"),
        "subjects": (mis.MisSubject, "student_timetable"),
        "groups": (mis.MisGroup, "student_timetable"),
        "memberships": (mis.MisMembership, "student_timetable"),
        "lessons": (mis.MisLesson, "student_timetable"),
        "assessment_results": (mis.MisAssessmentResult, "student_assessment"),
        "attendance_marks": (mis.MisAttendanceMark, "student_attendance_exclusions"),
        "exclusions": (mis.MisExclusion, "student_attendance_exclusions"),
        "staff": (mis.MisStaff, "staff_basic"),
    }


# Columns that locate a row in the portal rather than describe the subject; the envelope carries what consumers need.
API_ENVELOPE_COLUMNS = frozenset(
    {"id", "school_id", "connection_id", "category", "external_id", "provider_updated_at", "extracted_at",
     "deleted_at", "data_type", "content_hash", "seen_run_id"}
)


def api_field_columns(model: type) -> list:
    """Return the columns a record of this model shows in its "fields" object, in table order."""
    return [c for c in model.__table__.columns if c.name not in API_ENVELOPE_COLUMNS]


@_dataclass
class FeedPage:
    """One page of a product feed: the records and the position of the last one (None when empty)."""

    records: list[dict]
    last_changed_at: _datetime | None
    last_id: int | None
    has_more: bool


def _is_dated(column) -> bool:
    try:
        return issubclass(column.type.python_type, (_date, _datetime))
    except NotImplementedError:
        return False


def _api_json(value):
    if isinstance(value, (_date, _datetime)):
        return value.isoformat()
    if hasattr(value, "value") and not isinstance(value, (str, int, float, bool)):
        return value.value
    return value


def _feed_horizon(school_id: int, now: _datetime):
    """Return the time before which every stored change of the school is committed.

    A running extract writes rows stamped at or after its start, and may commit them later than rows
    a consumer has already paged past; serving only rows stamped before the earliest running extract
    started keeps the keyset (extracted_at, id) gap-free while extracts write.
    """
    from portal.models import Connection, JobRun, RunStatus

    started = _db.session.execute(
        _select(_func.min(_func.coalesce(JobRun.started_at, JobRun.claimed_at)))
        .join(Connection, Connection.id == JobRun.connection_id)
        .where(
            Connection.school_id == school_id,
            JobRun.status == RunStatus.running,
            # A run whose lease lapsed has died; its committed rows should not be held back for ever.
            _or(JobRun.lease_expires_at.is_(None), JobRun.lease_expires_at > now),
        )
    ).scalar()
    return min(started, now) if started is not None else now


def read_feed(grant, record_type: str, *, after: tuple[_datetime, int] | None = None,
              updated_since: _datetime | None = None, limit: int = 1000, now: _datetime | None = None) -> FeedPage:
    """Return one page of a school's records of one type for an allowed read (a portal.api.purpose.ReadGrant).

    Rows come in (extracted_at, id) order after ``after``; tombstones are included so consumers delete
    too; rows from connections that are not live, restricted subjects (R51) and, for current-students
    features, pupils not on roll (R13) are left out; special-category fields are withheld without a
    policy document (R73) or after the pupil's written objection (R74). Writes one audit entry.
    """
    from portal.models import EXTRACTABLE_STATES, Connection, FlagKind, SubjectFlag, SubjectFlagFeature, SubjectKind
    from portal.models.mis import MisPupil

    model, category = api_record_types()[record_type]
    if category != grant.category_id:
        raise ValueError(f"{record_type} records are not in the category {grant.category_id}")
    now = now or _utcnow()
    horizon = _feed_horizon(grant.school_id, now)
    live_connections = _select(Connection.id).where(
        Connection.school_id == grant.school_id, Connection.state.in_(EXTRACTABLE_STATES)
    )

    def flagged(kind: FlagKind, subject: SubjectKind):
        query = _select(SubjectFlag.external_id).where(
            SubjectFlag.school_id == grant.school_id, SubjectFlag.subject_kind == subject,
            SubjectFlag.kind == kind, SubjectFlag.lifted_at.is_(None),
        )
        if kind is FlagKind.restricted:
            # R51: a restriction naming features holds for those features only; one naming none, for all.
            named = _select(SubjectFlagFeature.flag_id).where(SubjectFlagFeature.flag_id == SubjectFlag.id)
            query = query.where(_or(~named.exists(), named.where(SubjectFlagFeature.feature_id == grant.feature_id).exists()))
        return query

    # Core rows, not ORM objects: a 10,000-record page is read several times faster this way.
    table = model.__table__
    query = _select(*table.columns).where(
        model.school_id == grant.school_id,
        model.connection_id.in_(live_connections),
        model.extracted_at < horizon,
    )
    if updated_since is not None:
        query = query.where(model.extracted_at >= updated_since)
    if after is not None:
        query = query.where(_or(model.extracted_at > after[0], _and(model.extracted_at == after[0], model.id > after[1])))
    # R51: restricted subjects are kept in sync but never leave to a product.
    if model is MisPupil:
        query = query.where(model.external_id.not_in(flagged(FlagKind.restricted, SubjectKind.pupil)))
    elif hasattr(model, "pupil_external_id"):
        query = query.where(model.pupil_external_id.not_in(flagged(FlagKind.restricted, SubjectKind.pupil)))
    elif record_type == "staff":
        query = query.where(model.external_id.not_in(flagged(FlagKind.restricted, SubjectKind.staff)))
    # R13: on roll means admitted on or before the day and not left on or before it. Tombstones still
    # flow, so a consumer deletes what it holds.
    if grant.on_roll_only and (model is MisPupil or hasattr(model, "pupil_id")):
        on_roll = _and(
            _or(MisPupil.admission_date.is_(None), MisPupil.admission_date <= grant.on),
            _or(MisPupil.leaving_date.is_(None), MisPupil.leaving_date > grant.on),
        )
        if model is not MisPupil:
            query = query.join(MisPupil, MisPupil.id == model.pupil_id)
        query = query.where(_or(model.deleted_at.is_not(None), on_roll))
    rows = list(_db.session.execute(query.order_by(model.extracted_at, model.id).limit(limit + 1)).mappings())
    has_more = len(rows) > limit
    rows = rows[:limit]

    special = [c.name for c in model.__table__.columns if c.info.get("special_category")]
    objecting: set[str] = set()
    if special and rows:
        objecting = set(_db.session.execute(
            flagged(FlagKind.special_category_objection, SubjectKind.pupil)
            .where(SubjectFlag.external_id.in_({r["pupil_external_id"] for r in rows}))
        ).scalars())
    columns = api_field_columns(model)
    records = []
    tombstones = 0
    # Only date and time columns need converting for JSON; decide per column once, not per value.
    dated = {c.name for c in columns if _is_dated(c)}
    plain = [c.name for c in columns if c.name not in dated]
    for row in rows:
        record = {
            "id": row["id"],
            "external_id": row["external_id"],
            "category": category,
            "data_type": row["data_type"],
            "provider_updated_at": _api_json(row["provider_updated_at"]),
            "changed_at": row["extracted_at"].isoformat(),
            "deleted": row["deleted_at"] is not None,
            "deleted_at": _api_json(row["deleted_at"]),
        }
        if row["deleted_at"] is not None:
            tombstones += 1
            record["fields"] = None
        else:
            fields = {name: row[name] for name in plain}
            for name in dated:
                value = row[name]
                fields[name] = None if value is None else value.isoformat()
            if special:
                # R73 before R74: without a policy document nobody's fields are served.
                reason = ("no_policy_document" if grant.policy_document is None
                          else "objection" if row["pupil_external_id"] in objecting else None)
                if reason:
                    fields.update(dict.fromkeys(special))
                record["withheld"] = reason
            record["fields"] = fields
        records.append(record)
    # R42: which ids this product now holds, so a later deletion reaches it (and only it).
    from portal import deletions as _deletions

    _deletions.record_received(grant, record_type, rows)
    _audit.record(
        "api.read",
        organisation_id=grant.school_id,
        target_type="products",
        target_id=grant.product_id,
        actor=grant.actor,
        details={"feature": grant.feature_id, "category": category, "record_type": record_type,
                 "count": len(records), "tombstones": tombstones},
    )
    last = rows[-1] if rows else None
    return FeedPage(records, last["extracted_at"] if last else None, last["id"] if last else None, has_more)


def record_year_groups(connection_id: int, year_groups: Mapping[str, tuple[str | None, date | None]], seen_at: datetime) -> None:
    """R30: record that each pupil (by provider id: year group, leaving date) was in this NC year group on this (London) day.

    Called for every pupil an extract returns, changed or not: the day last seen in a year group is a
    fact R30's clock starts from, never the time a row was last written. A pupil whose leaving date has
    passed is no longer in any year group: the MIS only repeats the last one they had.
    """
    from portal.retention.calendar import london_date
    from portal.retention.deadlines import parse_year_group

    day = london_date(seen_at)
    years = {ext: parse_year_group(value) for ext, (value, left) in year_groups.items() if left is None or left >= day}
    years = {ext: year for ext, year in years.items() if year is not None}
    if not years:
        return
    pupils = db.session.execute(
        select(MisPupil.external_id, MisPupil.id, MisPupil.school_id)
        .where(MisPupil.connection_id == connection_id, MisPupil.external_id.in_(list(years)))
    ).all()
    if not pupils:
        return
    table = PupilYearGroupFact.__table__
    ins = _insert_for(db.session.get_bind().dialect.name)(table)
    db.session.execute(
        ins.on_conflict_do_update(
            index_elements=["pupil_id", "nc_year"],
            set_={"last_seen_on": func.max(table.c.last_seen_on, ins.excluded.last_seen_on)
                  if db.session.get_bind().dialect.name == "sqlite"
                  else func.greatest(table.c.last_seen_on, ins.excluded.last_seen_on)},
        ),
        [{"pupil_id": pupil_id, "school_id": school_id, "nc_year": years[ext], "first_seen_on": day, "last_seen_on": day}
         for ext, pupil_id, school_id in pupils],
    )


# ---------------------------------------------------------------- retention deletes (owner: portal.retention)


def erase_subject_exports(subject_kind: str, subjects: Iterable[tuple[int, str]]) -> int:
    """Delete the prepared access exports (content and row) about these subjects, (school id, provider id) pairs (R34).

    An export is a copy of the subject's data: it goes with them, downloaded or not. The request stays in the register.
    """
    from portal.models.dsr import SubjectExport, SubjectRequest

    by_school: dict[int, set[str]] = defaultdict(set)
    for school_id, external_id in subjects:
        by_school[school_id].add(external_id)
    erased = 0
    for school_id, external_ids in by_school.items():
        requests = select(SubjectRequest.id).where(
            SubjectRequest.school_id == school_id, SubjectRequest.subject_type == subject_kind,
            SubjectRequest.subject_external_id.in_(sorted(external_ids)))
        erased += db.session.execute(delete(SubjectExport).where(SubjectExport.request_id.in_(requests))).rowcount or 0
    if erased:
        audit.record("store.exports_erased", details={"subject_kind": subject_kind, "exports": erased})
    return erased



def _about_pupil_tables() -> list[Table]:
    pupils = MisPupil.__table__
    return [t for t in db.metadata.sorted_tables if t is not pupils and any(fk.column.table is pupils for fk in t.foreign_keys)]


def pupil_row_counts(pupil_ids: list[int]) -> dict[int, Counter]:
    """Return, per pupil, how many rows (the pupil's own included) each category holds about them."""
    pupils = MisPupil.__table__
    counts: dict[int, Counter] = defaultdict(Counter)
    for pupil_id, category in db.session.execute(select(pupils.c.id, pupils.c.category).where(pupils.c.id.in_(pupil_ids))):
        counts[pupil_id][category] += 1
    for table in _about_pupil_tables():
        if "category" not in table.c:
            continue  # bookkeeping about the pupil (R30 year-group facts): deleted with them, not a category's rows
        rows = db.session.execute(
            select(table.c.pupil_id, table.c.category, func.count())
            .where(table.c.pupil_id.in_(pupil_ids))
            .group_by(table.c.pupil_id, table.c.category)
        )
        for pupil_id, category, n in rows:
            counts[pupil_id][category] += n
    return counts


def delete_pupils(pupil_ids: list[int], *, run_id: int | None = None) -> dict[int, Counter]:
    """Hard-delete pupils and every row about them (R34, R36); return rows deleted per pupil per category.

    Children are deleted explicitly before the pupils, so nothing is left behind on SQLite
    connections without foreign-key enforcement; the caller's transaction makes it all or nothing.
    """
    pupils = MisPupil.__table__
    if not pupil_ids:
        return {}
    counts = pupil_row_counts(pupil_ids)
    erase_subject_exports("pupil", db.session.execute(
        select(pupils.c.school_id, pupils.c.external_id).where(pupils.c.id.in_(pupil_ids))).all())
    for table in _about_pupil_tables():
        db.session.execute(delete(table).where(table.c.pupil_id.in_(pupil_ids)))
    db.session.execute(delete(pupils).where(pupils.c.id.in_(pupil_ids)))
    total: Counter = Counter()
    for per_pupil in counts.values():
        total.update(per_pupil)
    audit.record("store.pupils_deleted", details={"run_id": run_id, "pupils": len(counts), "deleted": dict(total)})
    return counts


def delete_rows(table_name: str, ids: list[int], *, run_id: int | None = None) -> dict[int, str]:
    """Hard-delete single store rows (not pupils) by id; return each deleted row's category."""
    if table_name == MisPupil.__tablename__:
        raise ValueError("pupils are deleted with delete_pupils, which takes their rows with them")
    if not table_name.startswith("mis_"):
        raise ValueError(f"{table_name} is not a store table")
    if not ids:
        return {}
    table = db.metadata.tables[table_name]
    if table_name == "mis_staff":
        erase_subject_exports("staff", db.session.execute(
            select(table.c.school_id, table.c.external_id).where(table.c.id.in_(ids))).all())
    found = dict(db.session.execute(select(table.c.id, table.c.category).where(table.c.id.in_(ids))).all())
    db.session.execute(delete(table).where(table.c.id.in_(ids)))
    audit.record("store.rows_deleted", details={"run_id": run_id, "table": table_name, "deleted": dict(Counter(found.values()))})
    return found


def clearable_fields(category: str, names: Iterable[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Split field names into {store table of the category: its columns of those names} and the names none has.

    Only value columns can be cleared: never a key, link or provenance column, and a column that
    cannot hold NULL only if it is a JSON list (cleared to an empty list).
    """
    names = sorted(set(names))
    tables: dict[str, list[str]] = {}
    for kind, model in STORE_MODELS.items():
        if KIND_CATEGORY.get(kind) != category:
            continue
        table = model.__table__
        cols = [n for n in names if n in table.c and n not in _META
                and (table.c[n].nullable or isinstance(table.c[n].type, JSON))]
        if cols:
            tables[table.name] = cols
    known = {c for cols in tables.values() for c in cols}
    return tables, [n for n in names if n not in known]


def clear_fields(table_name: str, ids: list[int], columns: list[str], *, run_id: int | None = None) -> int:
    """Clear these columns (NULL; an empty list for a list column) of these store rows, which stay; return rows changed.

    The rows' content hash is reset, so the next read of values the provider shares again writes them.
    Special-category columns clear like any other (NULL is stored unencrypted). Audited with counts only.
    """
    if not table_name.startswith("mis_") or table_name not in db.metadata.tables:
        raise ValueError(f"{table_name} is not a store table")
    table = db.metadata.tables[table_name]
    if not ids or not columns:
        return 0
    values: dict[str, Any] = {}
    for name in columns:
        column = table.c[name]
        if name in _META:
            raise ValueError(f"{table_name}.{name} is not a value column")
        values[name] = None if column.nullable else []
    # A new extract time puts the rows back in the product feeds (products delete and fetch them again, R42).
    values["content_hash"] = ""
    values["extracted_at"] = utcnow()
    changed = db.session.execute(update(table).where(table.c.id.in_(ids)).values(**values)).rowcount
    audit.record("store.fields_cleared", details={"run_id": run_id, "table": table_name, "columns": sorted(columns),
                                                   "rows": changed})
    return changed


def attendance_cells(pupil_ids) -> list[tuple]:
    """Return attendance counted per (school, academic year, year group, DfE code): pupils and sessions (R36).

    ``pupil_ids`` is a SELECT of pupil ids. Only counts leave: no pupil id, UPN or other key.
    """
    from sqlalchemy import Integer, case, cast

    from portal.models.mis import MisAttendanceMark

    marks, pupils = MisAttendanceMark.__table__, MisPupil.__table__
    year = cast(func.extract("year", marks.c.session_date), Integer)
    month = cast(func.extract("month", marks.c.session_date), Integer)
    academic_year = case((month >= 9, year), else_=year - 1)
    query = (
        select(pupils.c.school_id, academic_year.label("academic_year"), pupils.c.year_group, marks.c.code,
               func.count(func.distinct(marks.c.pupil_id)), func.count())
        .join(pupils, pupils.c.id == marks.c.pupil_id)
        .where(marks.c.pupil_id.in_(pupil_ids), marks.c.session_date.is_not(None))
        .group_by(pupils.c.school_id, academic_year, pupils.c.year_group, marks.c.code)
    )
    return [tuple(r) for r in db.session.execute(query)]


# ---------------------------------------------------------------- school pages (owner: portal.school)


def category_counts(school_id: int) -> dict[str, int]:
    """Return the live records held for a school per category (tombstoned rows excluded), for the data-use page.

    Counts only: no record is read, so no audit entry is written (a page view is not a data access).
    """
    totals: Counter = Counter()
    for model in STORE_MODELS.values():
        rows = db.session.execute(
            select(model.category, func.count())
            .where(model.school_id == school_id, model.deleted_at.is_(None))
            .group_by(model.category)
        )
        for category, n in rows:
            totals[category] += n
    return dict(totals)


# ---------------------------------------------------------------- data-subject requests (owner: portal.privacy)
# Reads for subject search and access exports, and erasure. Every table holding a subject's rows is found by
# walking foreign keys from the subject's table (mis_pupils or mis_staff), so a new linked table is never missed.

DSR_SUBJECT_TABLES = {"pupil": "mis_pupils", "staff": "mis_staff"}
# Bookkeeping that says nothing about the subject (a keyed hash of the row); left out of exports.
_DSR_INTERNAL = frozenset({"content_hash", "seen_run_id"})


def dsr_linked_tables(subject_kind: str) -> list[tuple[Table, Table, Any]]:
    """Return (table, parent table, foreign key) for every table linked, directly or through others, to the subject's table."""
    root = db.metadata.tables[DSR_SUBJECT_TABLES[subject_kind]]
    found: list[tuple[Table, Table, Any]] = []
    seen, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop(0)
        for table in db.metadata.sorted_tables:
            for fk in table.foreign_keys:
                if fk.column.table is parent and table not in seen:
                    seen.add(table)
                    found.append((table, parent, fk))
                    frontier.append(table)
    return found


def _dsr_roots(school_id: int, subject_kind: str, external_id: str) -> list[int]:
    root = db.metadata.tables[DSR_SUBJECT_TABLES[subject_kind]]
    return list(db.session.execute(
        select(root.c.id).where(root.c.school_id == school_id, root.c.external_id == external_id)
    ).scalars())


def dsr_subject_rows(school_id: int, subject_kind: str, external_id: str, *, request_id: int | None = None) -> dict[str, list[dict]]:
    """Return every stored row about one subject of a school, table by table (R48); writes one audit entry (counts only)."""
    root = db.metadata.tables[DSR_SUBJECT_TABLES[subject_kind]]
    ids_by_table: dict[str, list[int]] = {root.name: _dsr_roots(school_id, subject_kind, external_id)}
    out: dict[str, list[dict]] = {
        root.name: [dict(r) for r in db.session.execute(select(root).where(root.c.id.in_(ids_by_table[root.name]))).mappings()]
    }
    for table, parent, fk in dsr_linked_tables(subject_kind):
        parent_ids = ids_by_table.get(parent.name, [])
        rows = [dict(r) for r in db.session.execute(
            select(table).where(fk.parent.in_(parent_ids)).order_by(*table.primary_key.columns)
        ).mappings()] if parent_ids else []
        ids_by_table[table.name] = [r["id"] for r in rows if "id" in r]
        out[table.name] = rows
    for rows in out.values():
        for row in rows:
            for name in _DSR_INTERNAL:
                row.pop(name, None)
    audit.record("store.dsr_read", organisation_id=school_id, target_type="subject_requests", target_id=request_id,
                 details={"subject_kind": subject_kind, "rows": {t: len(r) for t, r in out.items() if r}})
    return out


# Portal tables that hold no data about the subject worth exporting: copies (the exports themselves), work queues.
_DSR_PORTAL_SKIP = frozenset({"subject_exports", "retention_work_items", "extract_removals"})
# Columns of portal rows left out of an export: another person's contact details, or bookkeeping.
_DSR_PORTAL_HIDDEN = frozenset({"requester_contact", "token_hash", "content"})


def _pupil_record_types() -> list[str]:
    """Return the API record types whose product receipts name a pupil (their subject_id is the pupil's row id)."""
    return [name for name, (model, _category) in api_record_types().items()
            if model is MisPupil or "pupil_id" in model.__table__.c]


def dsr_portal_rows(school_id: int, subject_kind: str, external_id: str) -> dict[str, list[dict]]:
    """Return the portal's own rows about one subject (R48): flags, requests, holds, product receipts.

    Found by walking the schema for the shapes that name a subject: (school_id, subject_kind, external_id),
    (school_id, subject_type, subject_external_id), (record_table, record_id) and the product receipts.
    """
    root = db.metadata.tables[DSR_SUBJECT_TABLES[subject_kind]]
    root_ids = _dsr_roots(school_id, subject_kind, external_id)
    out: dict[str, list[dict]] = {}
    for table in db.metadata.sorted_tables:
        if table.name.startswith("mis_") or table.name in _DSR_PORTAL_SKIP:
            continue
        c = table.c
        if {"school_id", "subject_kind", "external_id"} <= set(c.keys()):
            where = and_(c.school_id == school_id, c.subject_kind == subject_kind, c.external_id == external_id)
        elif {"school_id", "subject_type", "subject_external_id"} <= set(c.keys()):
            where = and_(c.school_id == school_id, c.subject_type == subject_kind, c.subject_external_id == external_id)
        elif {"record_table", "record_id"} <= set(c.keys()) and root_ids:
            where = and_(c.record_table == root.name, c.record_id.in_(root_ids))
        elif {"record_type", "subject_id", "product_id"} <= set(c.keys()) and root_ids:
            types = _pupil_record_types() if subject_kind == "pupil" else ["staff"]
            where = and_(c.school_id == school_id, c.subject_id.in_(root_ids), c.record_type.in_(types))
        else:
            continue
        rows = [{k: v for k, v in r.items() if k not in _DSR_PORTAL_HIDDEN}
                for r in db.session.execute(select(table).where(where)).mappings()]
        if rows:
            out[table.name] = rows
    return out


def dsr_recipients(school_id: int, subject_kind: str, external_id: str) -> dict[int, set[str]]:
    """Return {product id: record types} of the products that received this subject's data (R48, from receipts)."""
    from portal.models.deletions import ProductReceipt

    root_ids = _dsr_roots(school_id, subject_kind, external_id)
    if not root_ids:
        return {}
    types = _pupil_record_types() if subject_kind == "pupil" else ["staff"]
    out: dict[int, set[str]] = defaultdict(set)
    for product_id, record_type in db.session.execute(
        select(ProductReceipt.product_id, ProductReceipt.record_type).where(
            ProductReceipt.school_id == school_id, ProductReceipt.subject_id.in_(root_ids),
            ProductReceipt.record_type.in_(types))
    ):
        out[product_id].add(record_type)
    return dict(out)


def dsr_count_rows(school_id: int, subject_kind: str, external_id: str) -> int:
    """Return how many rows the store still holds about the subject (the proof re-query after erasure)."""
    root = db.metadata.tables[DSR_SUBJECT_TABLES[subject_kind]]
    total = 0
    ids_by_table = {root.name: _dsr_roots(school_id, subject_kind, external_id)}
    total += len(ids_by_table[root.name])
    for table, parent, fk in dsr_linked_tables(subject_kind):
        parent_ids = ids_by_table.get(parent.name, [])
        ids = list(db.session.execute(select(*table.primary_key.columns).where(fk.parent.in_(parent_ids))).scalars()) if parent_ids else []
        ids_by_table[table.name] = ids
        total += len(ids)
    # Rows that name the pupil by provider id only (a row whose pupil link was never resolved) count too.
    if subject_kind == "pupil":
        for model in STORE_MODELS.values():
            if "pupil_external_id" in model.__table__.c:
                total += db.session.execute(select(func.count()).select_from(model).where(
                    model.school_id == school_id, model.pupil_external_id == external_id)).scalar()
    return total


def dsr_search_pupils(school_ids: list[int], *, external_id: str | None = None, upn: str | None = None,
                      surname: str | None = None, date_of_birth: date | None = None) -> list[dict]:
    """Return pupils of the given schools matching a provider id, a UPN, or a surname plus date of birth.

    Rows carry what a school needs to choose between matches; one audit entry with the count.
    """
    query = select(MisPupil.school_id, MisPupil.external_id, MisPupil.legal_forename, MisPupil.legal_surname,
                   MisPupil.date_of_birth, MisPupil.year_group).where(MisPupil.school_id.in_(school_ids))
    if external_id:
        query = query.where(MisPupil.external_id == external_id.strip())
    elif upn:
        query = query.where(MisPupil.upn == upn.strip().upper())
    elif surname and date_of_birth:
        query = query.where(func.lower(MisPupil.legal_surname) == surname.strip().lower(),
                            MisPupil.date_of_birth == date_of_birth)
    else:
        raise ValueError("search by provider id, UPN, or surname and date of birth")
    rows = [dict(r) for r in db.session.execute(query.distinct().order_by(MisPupil.school_id, MisPupil.external_id)).mappings()]
    audit.record("store.dsr_search", details={"schools": len(school_ids), "matches": len(rows)})
    return rows


def dsr_erase(school_id: int, subject_kind: str, external_id: str, *, request_id: int | None = None) -> dict[str, int]:
    """Hard-delete one subject of a school and everything linked to them (R50); return rows deleted per table.

    Deepest tables first, so nothing is left behind where the database does not enforce foreign keys.
    """
    root = db.metadata.tables[DSR_SUBJECT_TABLES[subject_kind]]
    ids_by_table = {root.name: _dsr_roots(school_id, subject_kind, external_id)}
    plan = []
    for table, parent, fk in dsr_linked_tables(subject_kind):
        parent_ids = ids_by_table.get(parent.name, [])
        ids = list(db.session.execute(select(*table.primary_key.columns).where(fk.parent.in_(parent_ids))).scalars()) if parent_ids else []
        ids_by_table[table.name] = ids
        plan.append((table, fk, parent_ids))
    counts: dict[str, int] = {}
    for table, fk, parent_ids in reversed(plan):
        if parent_ids:
            counts[table.name] = db.session.execute(delete(table).where(fk.parent.in_(parent_ids))).rowcount
    if subject_kind == "pupil":
        for model in STORE_MODELS.values():
            table = model.__table__
            if "pupil_external_id" in table.c:
                n = db.session.execute(delete(table).where(
                    table.c.school_id == school_id, table.c.pupil_external_id == external_id)).rowcount
                counts[table.name] = counts.get(table.name, 0) + n
    counts[root.name] = db.session.execute(delete(root).where(root.c.id.in_(ids_by_table[root.name]))).rowcount
    counts["subject_exports"] = erase_subject_exports(subject_kind, [(school_id, external_id)])
    counts = {t: n for t, n in counts.items() if n}
    audit.record("store.dsr_erased", organisation_id=school_id, target_type="subject_requests", target_id=request_id,
                 details={"subject_kind": subject_kind, "deleted": counts})
    return counts


# ---------------------------------------------------------------- deletion notices (owner: portal.deletions)
# R42: ids only, read before a deletion so the products that received the records can be told.


def deletion_notice_pupils(table_name: str, ids: list[int]) -> dict[int, int | None]:
    """Return the pupil id of each of these rows of a table about pupils (rows already gone are left out)."""
    table = db.metadata.tables[table_name]
    if "pupil_id" not in table.c or not table_name.startswith("mis_"):
        raise ValueError(f"{table_name} is not a store table about pupils")
    return dict(db.session.execute(select(table.c.id, table.c.pupil_id).where(table.c.id.in_(ids))).all()) if ids else {}


def deletion_notice_subject_ids(school_id: int, subject_kind: str, external_id: str) -> list[int]:
    """Return the row ids (mis_pupils or mis_staff) of one subject of a school, as the product API served them."""
    return _dsr_roots(school_id, subject_kind, external_id)


# ---------------------------------------------------------------- people with pupil-data access (owner: portal.oversight)


def roll_for_viewer(school_id: int, on: date, *, viewer: str, feature: str | None = None) -> list[dict[str, Any]]:
    """Return the school's pupils on roll on a day (basic fields only) for a user allowed to see pupil data, audited.

    ``viewer`` says why the user may see it ("school", "link" (R57) or "support_grant" (R58)); links and support
    grants never see restricted pupils (R51). Special-category fields are never returned here (R72).
    """
    from portal.models import FlagKind, SubjectFlag, SubjectKind

    query = select(MisPupil.id, MisPupil.external_id, MisPupil.preferred_forename, MisPupil.legal_forename,
                   MisPupil.preferred_surname, MisPupil.legal_surname, MisPupil.year_group,
                   MisPupil.registration_group).where(
        MisPupil.school_id == school_id, MisPupil.deleted_at.is_(None),
        or_(MisPupil.admission_date.is_(None), MisPupil.admission_date <= on),
        or_(MisPupil.leaving_date.is_(None), MisPupil.leaving_date > on))
    restricted = set(db.session.execute(select(SubjectFlag.external_id).where(
        SubjectFlag.school_id == school_id, SubjectFlag.subject_kind == SubjectKind.pupil,
        SubjectFlag.kind == FlagKind.restricted, SubjectFlag.lifted_at.is_(None))).scalars())
    rows = []
    for row in db.session.execute(query.order_by(MisPupil.legal_surname, MisPupil.id)).mappings():
        if row["external_id"] in restricted and viewer != "school":
            continue
        rows.append({"id": row["id"], "forename": row["preferred_forename"] or row["legal_forename"],
                     "surname": row["preferred_surname"] or row["legal_surname"], "year_group": row["year_group"],
                     "registration_group": row["registration_group"], "restricted": row["external_id"] in restricted})
    audit.record("store.pupils_viewed", organisation_id=school_id,
                 details={"viewer": viewer, "feature": feature, "category": "student_basic", "count": len(rows)})
    return rows
# ---------------------------------------------------------------- staff leavers (owner: portal.staff_access, R59)


def staff_matching_emails(school_id: int, emails: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """Return {lower-cased email: [(provider id, "Forename Surname")]} of live staff of the school with these work emails.

    For a school admin to confirm a user is that member of staff; one audit entry with the count.
    """
    wanted = sorted({e.strip().lower() for e in emails if e})
    if not wanted:
        return {}
    from portal.models.mis import MisStaff

    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    rows = db.session.execute(
        select(MisStaff.email, MisStaff.external_id, MisStaff.forename, MisStaff.surname).where(
            MisStaff.school_id == school_id, MisStaff.deleted_at.is_(None), func.lower(MisStaff.email).in_(wanted))
        .order_by(MisStaff.external_id)
    ).all()
    for email, external_id, forename, surname in rows:
        pair = (external_id, " ".join(p for p in (forename, surname) if p))
        if pair not in out[email.lower()]:
            out[email.lower()].append(pair)
    audit.record("store.staff_matched", organisation_id=school_id, details={"emails": len(wanted), "matches": len(rows)})
    return dict(out)


def staff_no_longer_current(school_id: int, external_ids: Iterable[str]) -> set[str]:
    """Return the provider ids (of these) the store holds only as not currently employed or removed at source.

    Evidence only: an id with no row at all is not returned (nothing shows they left).
    """
    from portal.models.mis import MisStaff

    ids = sorted(set(external_ids))
    if not ids:
        return set()
    seen: set[str] = set()
    current: set[str] = set()
    for external_id, deleted_at, employed in db.session.execute(
        select(MisStaff.external_id, MisStaff.deleted_at, MisStaff.currently_employed)
        .where(MisStaff.school_id == school_id, MisStaff.external_id.in_(ids))
    ):
        seen.add(external_id)
        if deleted_at is None and employed is not False:
            current.add(external_id)
    return seen - current
