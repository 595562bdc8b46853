"""Extract writes: the Writer that upserts one run's records in batches, objections withheld (R74), year-group facts (R30)."""
from __future__ import annotations

import functools
import logging
import operator
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, Date, DateTime, String, bindparam, func, or_, select, text, update
from sqlalchemy.dialects import postgresql

from portal import audit
from portal.connectors import Record, Tombstone
from portal.clock import london_date
from portal.crypto import EncryptedText
from portal.dfe import parse_year_group
from portal.extensions import db
from portal.models import Connection, FlagKind, MisPupil, SubjectFlag, SubjectKind
from portal.models.base import UTCDateTime, utcnow
from portal.models.mis import STORE_MODELS, PupilYearGroupFact
from portal.store.removals import stage_removals
from portal.store.tables import (
    KIND_CATEGORY, PUPIL_KINDS, _data_columns, _insert_for, _jsonable, _table, content_hash, hash_key, one_of,
    special_columns,
)

log = logging.getLogger(__name__)

COUNT_KEYS = ("inserted", "updated", "unchanged", "tombstoned")


@functools.lru_cache(maxsize=None)
def _sqlite_upsert(kind: str, cols: tuple[str, ...], only_new: bool = False) -> tuple[str, tuple]:
    """Return (SQL, per-column (bind processor, same value gives the same result)) of a SQLite upsert for these columns.

    ``only_new``: rows whose key is already stored are left as they are (``DO NOTHING``).

    The driver's executemany with these is what SQLAlchemy runs, without compiling and processing
    parameters per row in Python (a third of a SQLite extract's time); the processors are the
    columns' own (UTC timestamps, dates, encryption of special-category values, JSON).
    """
    table = _table(kind)
    dialect = db.session.get_bind().dialect  # SQLite's: only the SQLite writer asks
    convert = tuple(
        (table.c[c].type._cached_bind_processor(dialect), isinstance(table.c[c].type, (Date, DateTime, UTCDateTime)))
        for c in cols
    )
    sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in ("connection_id", "external_id"))
    action = "DO NOTHING" if only_new else f"DO UPDATE SET {sets}, deleted_at = NULL"  # nosec B608: column names from the table's metadata
    sql = (f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "  # nosec B608: names come from the table's own metadata, values are bound
           f"ON CONFLICT (connection_id, external_id) {action}")
    return sql, convert


def _sqlite_parameters(rows: list[dict[str, Any]], cols: tuple[str, ...], convert: tuple) -> list[list[Any]]:
    """Return the rows' values in column order, converted column by column.

    Dates and timestamps are converted once per distinct value in the batch (a batch of marks holds a
    few: its days, one provider time a day, one extracted_at): converting each was a tenth of a SQLite
    extract's time (issue 19). Encrypted values are converted every time (equal values must not share
    a ciphertext).
    """
    getter = operator.itemgetter(*cols)
    params = [list(getter(row)) for row in rows]
    for i, (process, same_for_same) in enumerate(convert):
        if process is None:
            continue
        if not same_for_same:
            for p in params:
                p[i] = process(p[i])
            continue
        seen: dict[Any, Any] = {}
        for p in params:
            value = p[i]
            try:
                p[i] = seen[value]
            except KeyError:
                p[i] = seen[value] = process(value)
    return params


def _objecting(school_id: int, pupil_external_ids: Iterable[str]) -> set[str]:
    """Return which of these pupils have a written objection to special-category processing on file (R74)."""
    wanted = list({p for p in pupil_external_ids if p})
    if not wanted:
        return set()
    return set(db.session.execute(
        select(SubjectFlag.external_id).where(
            SubjectFlag.school_id == school_id, SubjectFlag.subject_kind == SubjectKind.pupil,
            SubjectFlag.kind == FlagKind.special_category_objection, SubjectFlag.lifted_at.is_(None),
            one_of(SubjectFlag.external_id, wanted),
        )
    ).scalars())


@functools.lru_cache(maxsize=None)
def _upsert_plan(kind: str, full: bool) -> tuple[dict[str, Any], str]:
    """Return (value converters, upsert SQL) for writing a batch of a kind on PostgreSQL in one statement.

    The batch travels as one JSON document (the rows as they are, encoded by orjson in C) that
    ``json_to_recordset`` turns back into typed rows; keys the rows carry beyond the listed columns
    are skipped. The converters do what SQLAlchemy's bind processing would (a raw statement bypasses
    it): encrypt the special-category columns (R75).
    """
    table = _table(kind)
    name = table.name
    cols = tuple(c for c in (*_data_columns(kind), *(("pupil_id",) if kind in PUPIL_KINDS else ()),
                             "school_id", "connection_id", "category", "external_id", "provider_updated_at",
                             "data_type", "content_hash", "seen_run_id", "extracted_at"))
    convert: dict[str, Any] = {}
    for c in cols:
        if isinstance(table.c[c].type, EncryptedText):
            convert[c] = functools.partial(table.c[c].type.process_bind_param, dialect=None)

    def declared(c: str) -> str:
        # The base type without a length: the INSERT's assignment then refuses a value too long
        # for its column (a cast to varchar(n) inside the recordset would cut it short instead).
        column_type = table.c[c].type
        if isinstance(column_type, JSON):
            return "json"
        if isinstance(column_type, (String, EncryptedText)):
            return "text"
        return column_type.compile(dialect=postgresql.dialect()).split("(")[0]

    # Columns with one value for the whole batch are parameters of the statement, not read per row.
    per_row = tuple(c for c in cols if c not in BATCH_CONSTANTS)
    constants = ", ".join(
        f"CAST(%({c})s AS {table.c[c].type.compile(dialect=postgresql.dialect())})" for c in cols if c in BATCH_CONSTANTS
    )
    record = ", ".join(f"{c} {declared(c)}" for c in per_row)
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
    # "extracted_at = this write's time" tells updated rows from rows only marked as seen.
    upsert = (
        f"WITH written AS (INSERT INTO {name} ({', '.join(per_row)}, {', '.join(c for c in cols if c in BATCH_CONSTANTS)}) "  # nosec B608: names come from the table's own metadata, values are bound
        f"SELECT {', '.join(f'r.{c}' for c in per_row)}, {constants} FROM json_to_recordset(%(rows)s::json) AS r({record}) "
        f"ON CONFLICT (connection_id, external_id) DO UPDATE SET {sets}, deleted_at = NULL, seen_run_id = {seen}, "
        f"extracted_at = CASE WHEN {changed} THEN EXCLUDED.extracted_at ELSE {name}.extracted_at END "
        f"WHERE {changed}{touch} "
        f"RETURNING (xmax = 0) AS inserted, (extracted_at = %(extracted_at)s) AS changed) "
        # Counted here, so one row comes back per batch rather than one per record.
        f"SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted AND changed) FROM written"
    )
    return convert, upsert


@dataclass
class Batch:
    """What a Writer buffered between two commits: rows per kind (by external id) and staged removals.

    Taken on the engine's thread and written on whichever thread commits it (``Writer.write_batch``).
    """

    rows: dict[str, dict[str, dict[str, Any]]]
    removals: dict[tuple[str, str], datetime]

    @classmethod
    def merge(cls, batches: list[Batch]) -> Batch:
        """Return one batch holding these, in order: a later copy of a record wins, as a later write would."""
        if len(batches) == 1:
            return batches[0]
        rows: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        removals: dict[tuple[str, str], datetime] = {}
        for batch in batches:
            for kind, kept in batch.rows.items():
                rows[kind].update(kept)
            removals.update(batch.removals)
        return cls(dict(rows), removals)


# Kinds whose return after a removal makes a full run owed (their older children keep older stamps), and
# the run's stats key that counts them (portal.extract.plan.full_run_owed).
RESTORED_KEYS = {"pupil": "pupils_restored", "group": "groups_restored"}

# Store columns whose value is the same for every row of a batch (see Writer._row and write_batch).
BATCH_CONSTANTS = ("school_id", "connection_id", "category", "data_type", "seen_run_id", "extracted_at")


class Writer:
    """Buffers one run's records for one connection and writes them in batches (no commits: the engine commits).

    Every run marks the rows it returned as seen by it, so a complete full pull can tombstone the
    rest (R20) and spare rows a later run saw.
    On PostgreSQL every batch of a kind is upserted with one statement over the rows sent as one
    JSON document, which also returns the counts; on SQLite, batched ``INSERT … ON CONFLICT``.
    """

    def __init__(self, connection: Connection, run_id: int, *, full: bool, batch_size: int = 5000,
                 flush_when_full: bool = True) -> None:
        self.connection_id = connection.id
        self.school_id = connection.school_id
        self.run_id = run_id
        self.full = full
        self.batch_size = batch_size
        # False when another thread writes the batches (the engine takes them with take_batch).
        self.flush_when_full = flush_when_full
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
        # The last record's category, time and session day, already taken into the high water and the session window.
        self._last_category: str | None = None
        self._last_at: datetime | None = None
        self._last_day: date | None = None
        # Pupil provider id -> store id, filled as batches need them (a school's pupils: a few thousand ids).
        self._pupil_ids: dict[str, int] = {}
        self._all_pupils_read = False
        self._key = hash_key()
        # SQLite: per kind, whether this connection had no stored rows when this writer first wrote it.
        self._first_rows: dict[str, bool] = {}
        # Incremental runs: pupils and groups the store held as removed that the provider sent again
        # (restored), by the run's stats key; only counts above 0.
        self.restored: dict[str, int] = {}

    # -- buffering

    def add(self, record: Record) -> None:
        """Buffer one record (a tombstone is staged as a removal); write when the buffer is full."""
        if isinstance(record, Tombstone):
            key = (record.record_kind, record.external_id)
            self._removals[key] = record.deleted_at or utcnow()
            self._high_water(record.record_category, record.deleted_at)
        else:
            category, at = record.category, record.updated_at
            # Parsed times are shared objects (pages repeat them), so most records skip the comparison.
            if at is not None and (at is not self._last_at or category is not self._last_category):
                self._high_water(category, at)
                self._last_at, self._last_category = at, category
            kind = record.kind
            # Later copies of the same record in one batch win (and ON CONFLICT needs unique keys).
            self._rows[kind][record.external_id] = self._row(record)
            if kind == "attendance_mark" and record.session_date is not self._last_day:
                self._widen_window(record.session_date)
                self._last_day = record.session_date
        self._buffered += 1
        if self.flush_when_full and self._buffered >= self.batch_size:
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
        # The record's fields, read in place (Record.values() would copy them for every record).
        values = record.__dict__
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
        # The columns with one value for the batch (BATCH_CONSTANTS) are added where a write needs them:
        # PostgreSQL's statement takes them as parameters, so its JSON document does not carry them on
        # every row (they were a third of its bytes, encoded here and parsed again by the server).
        row["external_id"] = record.external_id
        row["provider_updated_at"] = record.updated_at
        return row

    # -- writing

    @property
    def buffered(self) -> int:
        """Records (and tombstones) buffered since the last batch was taken."""
        return self._buffered

    def take_batch(self) -> Batch:
        """Return what is buffered and start an empty buffer (the engine hands the batch to its writer)."""
        batch = Batch(dict(self._rows), self._removals)
        self._rows = defaultdict(dict)
        self._removals = {}
        self._buffered = 0
        return batch

    def flush(self) -> None:
        """Write everything buffered (inside the caller's transaction)."""
        self.write_batch(self.take_batch())

    def write_batch(self, batch: Batch) -> None:
        """Write one batch inside the current session's transaction; counts go to this writer.

        Batches must be written in the order they were taken, one at a time (the engine's writer
        thread does so), on a session that sees the ones before them.
        """
        now = utcnow()
        for kind, rows in batch.rows.items():
            if not rows:
                continue
            if kind in PUPIL_KINDS:
                rows = self._resolve_pupils(kind, rows)
            if not rows:
                continue
            self._keep_absent(kind, rows)
            if special_columns(kind):
                self._withhold_in_batch(kind, rows)
            if kind in RESTORED_KEYS and not self.full:
                restored = self._count_removed(kind, rows)
                if restored:
                    key = RESTORED_KEYS[kind]
                    self.restored[key] = self.restored.get(key, 0) + restored
            if self.dialect == "postgresql":
                self._write_json(kind, rows, now)
            else:
                self._write_upsert(kind, rows, now)
            if kind == "pupil":
                record_year_groups(self.connection_id, {ext: (r["year_group"], r["leaving_date"]) for ext, r in rows.items()}, now)
            self.written += len(rows)
        stage_removals(self.run_id, self.connection_id, batch.removals)

    def _count_removed(self, kind: str, rows: dict[str, dict[str, Any]]) -> int:
        """How many of these rows the store holds as removed (before this write brings them back)."""
        table = _table(kind)
        return db.session.execute(select(func.count()).select_from(table).where(
            table.c.connection_id == self.connection_id, table.c.deleted_at.is_not(None), one_of(table.c.external_id, rows)
        )).scalar_one()

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
                    table.c.connection_id == self.connection_id, one_of(table.c.external_id, partial)
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
        if not self._all_pupils_read:
            # The first batch about pupils reads every live pupil id of the connection in one plain
            # statement: a run's records are about most of a school's pupils, and an IN list of a
            # thousand ids costs more to build than the rows cost to read (issue 19). Pupils
            # written later in the run are looked up below, as before.
            self._all_pupils_read = True
            ids.update(db.session.execute(
                select(MisPupil.external_id, MisPupil.id).where(
                    MisPupil.connection_id == self.connection_id, MisPupil.deleted_at.is_(None))
            ).all())
        wanted = {r["pupil_external_id"] for r in rows.values() if r["pupil_external_id"]} - ids.keys()
        if wanted:
            ids.update(
                db.session.execute(
                    select(MisPupil.external_id, MisPupil.id).where(
                        MisPupil.connection_id == self.connection_id, one_of(MisPupil.external_id, wanted),
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

    def _constants(self, kind: str, now: datetime) -> dict[str, Any]:
        """The values of the BATCH_CONSTANTS columns for a batch of a kind written at ``now``."""
        return {"school_id": self.school_id, "connection_id": self.connection_id, "category": KIND_CATEGORY[kind],
                "data_type": "customer",  # R16: MIS data is the school's, as controller
                "seen_run_id": self.run_id, "extracted_at": now}

    def _write_upsert(self, kind: str, rows: dict[str, dict[str, Any]], now: datetime) -> None:
        # Stamped on each row here only: PostgreSQL's statement takes them once, as parameters.
        constants = self._constants(kind, now)
        for row in rows.values():
            row.update(constants)
        table = _table(kind)
        category = KIND_CATEGORY[kind]
        raw = db.session.connection().connection.driver_connection
        if kind not in self._first_rows:
            self._first_rows[kind] = raw.execute(
                f"SELECT 1 FROM {table.name} WHERE connection_id = ? LIMIT 1", (self.connection_id,)  # nosec B608: the table's own name, values are bound
            ).fetchone() is None
        if self._first_rows[kind]:
            # A first import: all but a record sent twice are new, so insert first and look up only
            # what was already there (reading every batch's keys back was 3 % of a first import).
            rows = self._insert_new(kind, rows, raw)
            if not rows:
                return
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
            cols = tuple(changed[0])
            sql, convert = _sqlite_upsert(kind, cols)
            # In key order: the unique index's pages are then visited once each, in order (a batch of
            # marks comes day by day, so in provider order each row lands on another pupil's page).
            changed.sort(key=operator.itemgetter("external_id"))
            raw.executemany(sql, _sqlite_parameters(changed, cols, convert))
        if unchanged and self.full:
            db.session.execute(
                update(table)
                .where(table.c.connection_id == self.connection_id, table.c.external_id.in_(unchanged))
                .values(seen_run_id=self.run_id)
            )

    def _insert_new(self, kind: str, rows: dict[str, dict[str, Any]], raw: Any) -> dict[str, dict[str, Any]]:
        """Insert the rows whose key is not stored yet, count them, and return the others (already stored)."""
        name = _table(kind).name
        if not raw.in_transaction:
            # Take the write lock now: no other connection writes until the commit, so the ids above
            # the largest one are exactly the rows this statement inserts.
            raw.execute("BEGIN IMMEDIATE")
        (last_id,) = raw.execute(f"SELECT coalesce(max(id), 0) FROM {name}").fetchone()  # nosec B608: the table's own name
        new = sorted(rows.values(), key=operator.itemgetter("external_id"))  # key order: see _write_upsert
        cols = tuple(new[0])
        sql, convert = _sqlite_upsert(kind, cols, only_new=True)
        inserted = raw.executemany(sql, _sqlite_parameters(new, cols, convert)).rowcount
        self.counts[KIND_CATEGORY[kind]]["inserted"] += inserted
        if inserted == len(rows):
            return {}
        written = {ext for (ext,) in raw.execute(
            f"SELECT external_id FROM {name} WHERE connection_id = ? AND id > ?", (self.connection_id, last_id)  # nosec B608: the table's own name, values are bound
        )}
        return {ext: row for ext, row in rows.items() if ext not in written}

    def _write_json(self, kind: str, rows: dict[str, dict[str, Any]], now: datetime) -> None:
        """Write the batch with one INSERT … ON CONFLICT over the rows sent as one JSON document; it also counts.

        One round trip a write and no per-row Python for most kinds (COPY into a stage table took
        two round trips and formatted every value on this thread, where the engine maps the next page).
        """
        convert, upsert = _upsert_plan(kind, self.full)
        values = list(rows.values())
        if convert:
            values = [{**row, **{c: f(row[c]) for c, f in convert.items()}} for row in values]
        # Naive times do not reach here (records carry aware ones); were one to, it is read as UTC, the store's zone.
        encoded = orjson.dumps(values, option=orjson.OPT_NAIVE_UTC)
        if b"\\u0000" in encoded:
            # PostgreSQL's text cannot hold U+0000: one provider value with it would fail the whole batch
            # (and the run, with no message support could act on). The character is dropped; one scan of
            # the encoded batch finds it, so batches without it cost nothing more.
            values, removed = _without_nul(values)
            log.warning("store: %d value(s) of kind %s held U+0000, which was removed (run %s)", removed, kind, self.run_id)
            # Two provider ids that differ only by the character are one key without it: one statement
            # cannot write a row twice, so the later record wins, as it would in two batches.
            values = list({row["external_id"]: row for row in values}.values())
            encoded = orjson.dumps(values, option=orjson.OPT_NAIVE_UTC)
        document = encoded.decode()
        raw = db.session.connection().connection.driver_connection
        with raw.cursor() as cur:
            cur.execute(upsert, {"rows": document, **self._constants(kind, now)})
            inserted, updated = cur.fetchone()
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


def _without_nul(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Return the rows with U+0000 taken out of every string (nested JSON values too), and how many values held it."""
    removed = 0

    def clean(value: Any) -> Any:
        nonlocal removed
        if isinstance(value, str):
            if "\x00" in value:
                removed += 1
                return value.replace("\x00", "")
            return value
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return [clean(row) for row in rows], removed


def withhold_objections(school_id: int, *, connection_id: int | None = None, pupil_external_id: str | None = None) -> dict[str, int]:
    """Null the stored special-category values of pupils whose written objection is on file (R74).

    The extract calls it at the end of every run (so a notice recorded since the last run takes
    effect even when the provider sends nothing new about the pupil); the action that records a
    notice may call it at once for that pupil. Returns rows changed per category. Flagged pupils
    are few: their rows are read (decrypted) to recompute the keyed hash without the values.
    """
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



def record_year_groups(connection_id: int, year_groups: Mapping[str, tuple[str | None, date | None]], seen_at: datetime) -> None:
    """R30: record that each pupil (by provider id: year group, leaving date) was in this NC year group on this (London) day.

    Called for every pupil an extract returns, changed or not: the day last seen in a year group is a
    fact R30's clock starts from, never the time a row was last written. A pupil whose leaving date has
    passed is no longer in any year group: the MIS only repeats the last one they had.
    """
    day = london_date(seen_at)
    years = {ext: parse_year_group(value) for ext, (value, left) in year_groups.items() if left is None or left >= day}
    years = {ext: year for ext, year in years.items() if year is not None}
    if not years:
        return
    if db.session.get_bind().dialect.name == "postgresql":
        # One statement, the pupils' ids found by PostgreSQL: an IN list and a parameter set per
        # pupil were 3 % of a national worker's CPU (issue 19).
        db.session.execute(_YEAR_GROUPS_JSON, {
            "connection_id": connection_id, "day": day,
            "years": orjson.dumps([{"external_id": ext, "nc_year": year} for ext, year in years.items()]).decode(),
        })
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


_YEAR_GROUPS_JSON = text(
    "INSERT INTO pupil_year_group_facts (pupil_id, school_id, nc_year, first_seen_on, last_seen_on) "
    "SELECT p.id, p.school_id, y.nc_year, :day, :day "
    "FROM json_to_recordset(CAST(:years AS json)) AS y(external_id varchar, nc_year integer) "
    "JOIN mis_pupils p ON p.connection_id = :connection_id AND p.external_id = y.external_id "
    "ON CONFLICT (pupil_id, nc_year) DO UPDATE "
    "SET last_seen_on = greatest(pupil_year_group_facts.last_seen_on, EXCLUDED.last_seen_on)"
).bindparams(bindparam("day", type_=Date()))
