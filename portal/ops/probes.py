"""Readiness probes shared by /readyz and `flask portal check --deploy`: each answers (ok, detail) with no personal data."""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import text

from portal.extensions import db
from portal.ops.heartbeat import last_heartbeat_age
from portal.retention.ledger import status


@dataclass(frozen=True)
class Probe:
    """One dependency's state; ``blocking`` ones make the instance not ready."""

    name: str
    ok: bool
    detail: str
    blocking: bool = True


def _first_line(exc: BaseException) -> str:
    text_ = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text_[0] if text_ else type(exc).__name__)[:200]


def database() -> Probe:
    """The database answers a query."""
    try:
        db.session.execute(text("SELECT 1"))
        return Probe("database", True, db.engine.dialect.name)
    except Exception as exc:  # any driver error: not reachable
        db.session.rollback()
        return Probe("database", False, f"unreachable: {type(exc).__name__}")


def migration_heads() -> tuple[set[str], set[str]]:
    """Return (the database's revisions, the code's head revisions)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = current_app.extensions["migrate"].migrate.get_config()
    heads = set(ScriptDirectory.from_config(config).get_heads())
    current = set(MigrationContext.configure(db.session.connection()).get_current_heads())
    return current, heads


def migrations() -> Probe:
    """The database is at the code's migration head."""
    try:
        current, heads = migration_heads()
    except Exception as exc:
        db.session.rollback()
        return Probe("migrations", False, f"unknown: {type(exc).__name__}")
    if current == heads:
        return Probe("migrations", True, "at head " + ",".join(sorted(heads)))
    return Probe("migrations", False, f"database at {','.join(sorted(current)) or 'none'}, code at {','.join(sorted(heads))}")


def broker() -> Probe | None:
    """With EXECUTOR=celery, the broker accepts a connection; None when no broker is used."""
    if current_app.config.get("EXECUTOR") != "celery":
        return None
    url = (current_app.config.get("CELERY") or {}).get("broker_url")
    if not url:
        return Probe("broker", False, "no broker_url set")
    try:
        from kombu import Connection

        with Connection(url, connect_timeout=3, transport_options={"socket_connect_timeout": 3}) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
        return Probe("broker", True, "reachable")
    except Exception as exc:
        return Probe("broker", False, f"unreachable: {type(exc).__name__}")


def scheduler() -> Probe:
    """A scheduler beat within three heartbeat intervals. Not blocking: web pages work without it."""
    try:
        age = last_heartbeat_age()
    except Exception as exc:
        db.session.rollback()
        return Probe("scheduler", False, f"unknown: {type(exc).__name__}", blocking=False)
    limit = 3 * current_app.config.get("SCHEDULER_HEARTBEAT_SECONDS", 30)
    if age is None:
        return Probe("scheduler", False, "no scheduler has ever run", blocking=False)
    if age > limit:
        return Probe("scheduler", False, f"last heartbeat {int(age)} s ago (more than {limit} s)", blocking=False)
    return Probe("scheduler", True, f"last heartbeat {int(age)} s ago", blocking=False)


def ledger() -> Probe:
    """The database is not behind the deletion ledger (R35: a restored backup not yet replayed)."""
    try:
        state, db_seq, file_seq = status()
    except Exception as exc:
        db.session.rollback()
        return Probe("ledger", False, f"unknown: {type(exc).__name__}")
    if state == "ok":
        return Probe("ledger", True, f"in step at entry {db_seq}")
    if state == "behind":
        return Probe("ledger", False, f"database at entry {db_seq}, ledger at {file_seq}: run flask portal retention replay-ledger")
    return Probe("ledger", False, f"ledger file ends at {file_seq}, database at {db_seq}: restore the ledger file")


def readiness() -> list[Probe]:
    """Return every probe in a fixed order; later probes are skipped when the database is down."""
    first = database()
    if not first.ok:
        return [first]
    probes = [first, migrations()]
    if (b := broker()) is not None:
        probes.append(b)
    probes += [scheduler(), ledger()]
    return probes
