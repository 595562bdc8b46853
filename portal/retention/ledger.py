"""R35: the deletion ledger kept outside the database, its replay after a restore, and the check that blocks serving until then.

Every batch the sweep deletes appends a line to a JSON-lines file (keyed hashes of the deleted
records' ids, per table and school: no personal data) and, in the batch's transaction, records the
line's number in the database (``retention_ledger_state.seq``). A batch of field clears (a withdrawn
field set's order: the rows stay, some columns go) is a line that also names the columns. A restored
backup holds an older number than the file: until `flask portal retention replay-ledger` has deleted
(or cleared) again everything the later lines list, the portal answers every request with 503.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from flask import current_app, jsonify, render_template_string, request
from sqlalchemy import select

from portal import audit, store
from portal.extensions import db
from portal.models import Membership
from portal.models.base import utcnow
from portal.models.retention import LedgerState
from portal.retention.delete import delete_records
from portal.retention.plan import BATCH

__all__ = ["LedgerError", "append", "check_before_request", "ledger_path", "record_key", "replay", "status"]


class LedgerError(RuntimeError):
    """The ledger and the database disagree in a way replay cannot settle (the ledger file is missing or short)."""


def _state() -> LedgerState:
    state = db.session.get(LedgerState, 1)
    if state is None:  # a database migrated before 0004 seeded it
        state = LedgerState(id=1, database_id=str(uuid.uuid4()), seq=0)
        db.session.add(state)
        db.session.flush()
    return state


def ledger_path(database_id: str) -> Path:
    """Return this database's ledger file: RETENTION_LEDGER_PATH, else one per database in the instance folder."""
    configured = current_app.config.get("RETENTION_LEDGER_PATH")
    if configured:
        return Path(configured)
    return Path(current_app.instance_path) / f"deletion-ledger-{database_id}.jsonl"


def _secret() -> bytes:
    # Derived from the app's secret: the ledger cannot be matched against a dump without it.
    return hashlib.sha256(b"portal deletion ledger\0" + str(current_app.config["SECRET_KEY"]).encode()).digest()


def record_key(table: str, record_id: int, secret: bytes | None = None) -> str:
    """Return the keyed hash the ledger holds for one deleted record (its table and internal id)."""
    return hmac.new(secret or _secret(), f"{table}:{int(record_id)}".encode(), hashlib.sha256).hexdigest()[:32]


def _lines(path: Path) -> Iterator[dict]:
    if not path.exists():
        return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                try:
                    yield json.loads(line)
                except ValueError:
                    return  # a torn last line (power cut mid-write): nothing after it was committed


def _last_seq(path: Path) -> int:
    last = 0
    for entry in _lines(path):
        last = max(last, int(entry["seq"]))
    return last


def append(groups: dict[tuple[str, int | None], list[int]], *, run_id: int | None,
           columns: Sequence[str] | None = None) -> int:
    """Write one ledger line per (table, school) of deleted record ids, durably, before the batch commits.

    With ``columns``, the records were not deleted but had these columns cleared (a field-set order):
    a replay clears them again and leaves the rows.

    Sets the database's ledger number in the caller's transaction; returns the last line's number.
    Written before the commit, so a crash in between leaves the file ahead: the next check asks for a
    replay, which deletes those (already due) records again rather than letting a backup keep them.
    """
    if not groups:
        return 0
    state = _state()
    path = ledger_path(state.database_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    seq = max(state.seq, _last_seq(path))
    secret = _secret()
    now = utcnow().isoformat()
    with path.open("a", encoding="utf-8") as fh:
        for (table, school_id), ids in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
            seq += 1
            line = {"seq": seq, "at": now, "run_id": run_id, "table": table, "school_id": school_id}
            if columns:
                line["columns"] = sorted(columns)
            line["keys"] = sorted(record_key(table, i, secret) for i in ids)
            fh.write(json.dumps(line, separators=(",", ":")) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    state.seq = seq
    return seq


def status() -> tuple[str, int, int]:
    """Return ("ok" | "behind" | "missing", the database's number, the file's number)."""
    state = db.session.get(LedgerState, 1)
    db_seq = state.seq if state else 0
    file_seq = _last_seq(ledger_path(state.database_id)) if state else 0
    if db_seq < file_seq:
        return "behind", db_seq, file_seq
    if db_seq > file_seq:
        return "missing", db_seq, file_seq
    return "ok", db_seq, file_seq


# ---------------------------------------------------------------- replay


def _candidates(table: str, school_id: int | None) -> Iterable[int]:
    """Yield the ids of the rows a ledger line may name, in id order, one bounded page at a time."""
    t = db.metadata.tables[table]
    query = select(t.c.id)
    if school_id is not None and "school_id" in t.c:
        query = query.where(t.c.school_id == school_id)
    elif school_id is not None and table == Membership.__tablename__:
        query = query.where(t.c.organisation_id == school_id)
    last = 0
    while True:
        ids = db.session.execute(query.where(t.c.id > last).order_by(t.c.id).limit(BATCH)).scalars().all()
        if not ids:
            return
        yield from ids
        last = ids[-1]


def replay() -> dict[str, int]:
    """Delete again everything the ledger lists after this database's number; return records deleted per table.

    Lines that name columns clear those columns again instead, counted as "table:column,column".
    Run after restoring a backup (R35). Idempotent: records already gone are simply not found.
    """
    state = _state()
    path = ledger_path(state.database_id)
    file_seq = _last_seq(path)
    if state.seq > file_seq:
        raise LedgerError(
            f"The database has applied ledger entry {state.seq} but the ledger file {path} ends at {file_seq}: "
            "restore the ledger file from its own copy before serving data."
        )
    wanted: dict[tuple[str, int | None, tuple[str, ...]], set[str]] = defaultdict(set)
    for entry in _lines(path):
        if int(entry["seq"]) > state.seq:
            wanted[(entry["table"], entry["school_id"], tuple(entry.get("columns") or ()))].update(entry["keys"])
    secret = _secret()
    deleted: dict[str, int] = defaultdict(int)
    # Pupils first: their rows go with them, so the rows' own lines then find nothing left. Clears
    # after deletions: a row deleted later than its fields were cleared is not cleared for nothing.
    for (table, school_id, columns), keys in sorted(
            wanted.items(), key=lambda kv: (bool(kv[0][2]), kv[0][0] != "mis_pupils", kv[0][0], kv[0][1] or 0, kv[0][2])):
        if table not in db.metadata.tables:
            continue
        if columns:
            # As for a table: a column a later migration dropped holds nothing to clear any more.
            columns = tuple(c for c in columns if c in db.metadata.tables[table].c)
            if not columns:
                continue
        found = [i for i in _candidates(table, school_id) if record_key(table, i, secret) in keys]
        for start in range(0, len(found), 500):
            if columns:
                store.clear_fields(table, found[start:start + 500], list(columns))
            else:
                delete_records(table, found[start:start + 500])
        deleted[f"{table}:{','.join(columns)}" if columns else table] += len(found)
    previous = state.seq
    state.seq = file_seq
    audit.record("retention.ledger_replayed", actor="system",
                 details={"from_seq": previous, "to_seq": file_seq, "deleted": dict(deleted)})
    db.session.commit()
    _forget_check()
    return dict(deleted)


# ---------------------------------------------------------------- the check before serving

_CHECK_KEY = "retention_ledger_check"
PAGE = """<!doctype html><html lang="en-GB"><head><meta charset="utf-8"><title>Portal paused</title></head>
<body><h1>The portal is paused</h1><p>{{ message }}</p></body></html>"""


def _forget_check() -> None:
    current_app.extensions.pop(_CHECK_KEY, None)


def check_before_request():
    """Refuse to serve anything while the database is behind the deletion ledger (a restored backup, R35).

    Checked at most every RETENTION_LEDGER_CHECK_SECONDS per process; static files are still served.
    """
    # Health probes report the ledger themselves (portal.ops.probes), so a load balancer still gets JSON.
    if request.endpoint == "static" or (request.blueprint or "").startswith("ops_"):
        return None
    every = float(current_app.config.get("RETENTION_LEDGER_CHECK_SECONDS", 60))
    cached = current_app.extensions.get(_CHECK_KEY)
    now = time.monotonic()
    if cached is None or now - cached[0] >= every:
        cached = (now, status()[0])
        current_app.extensions[_CHECK_KEY] = cached
    if cached[1] == "ok":
        return None
    if cached[1] == "behind":
        message = ("A backup has been restored and the deletion ledger has not been replayed yet; the operator runs "
                   "`flask portal retention replay-ledger`, then the portal serves data again.")
    else:
        message = ("The deletion ledger file is missing or shorter than the database's record of it; the operator "
                   "restores it from its separate copy before the portal serves data again.")
    if request.path.startswith("/api/"):
        resp = jsonify({"error": {"code": "ledger_replay_required", "message": message}})
        resp.status_code = 503
        return resp
    return render_template_string(PAGE, message=message), 503
