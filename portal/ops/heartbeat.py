"""Default plugin: every scheduling process records a heartbeat row, so /readyz and `check --deploy` see the schedulers."""
from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import delete, select

from portal.errors import StartupError
from portal.extensions import db
from portal.jobs import JobSpec
from portal.models import LedgerState, SchedulerHeartbeat
from portal.models.base import utcnow
from portal.plugins import hookimpl
from portal.retention.ledger import ledger_path

HEARTBEAT = "scheduler:heartbeat"
# Rows of processes silent for longer than this are removed (a restarted service gets a new pid).
FORGET_AFTER = timedelta(days=1)


@hookimpl
def portal_register_jobs(app: Flask, connectors: Mapping[str, Any]) -> list[JobSpec]:
    """Declare the heartbeat: every scheduling process runs it (claim=False), also once as it starts."""
    seconds = app.config.get("SCHEDULER_HEARTBEAT_SECONDS", 30)
    if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds <= 0:
        raise StartupError("setting PORTAL_SCHEDULER_HEARTBEAT_SECONDS is invalid: it must be a positive whole number of seconds")
    return [JobSpec(HEARTBEAT, beat, "interval", {"seconds": seconds}, kind="housekeeping", claim=False)]


def process_owner() -> str:
    """Return this process's heartbeat key: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def current_ledger_path() -> str:
    """Return the deletion-ledger file this process uses (R35)."""
    state = db.session.get(LedgerState, 1)
    return str(ledger_path(state.database_id if state else "unknown").resolve())


def beat() -> None:
    """Record that this process's scheduler is alive, and forget processes silent for a day."""
    now = utcnow()
    row = db.session.get(SchedulerHeartbeat, process_owner())
    if row is None:
        row = SchedulerHeartbeat(owner=process_owner(), started_at=now)
        db.session.add(row)
    row.beat_at = now
    row.ledger_path = current_ledger_path()
    db.session.execute(delete(SchedulerHeartbeat).where(SchedulerHeartbeat.beat_at < now - FORGET_AFTER))
    db.session.commit()


def fresh_heartbeats() -> list[SchedulerHeartbeat]:
    """Return the schedulers that beat within three heartbeat intervals."""
    seconds = current_app.config.get("SCHEDULER_HEARTBEAT_SECONDS", 30)
    since = utcnow() - timedelta(seconds=3 * seconds)
    return list(db.session.scalars(select(SchedulerHeartbeat).where(SchedulerHeartbeat.beat_at >= since)))


def last_heartbeat_age() -> float | None:
    """Return the seconds since any scheduler last beat, or None when none ever did."""
    from sqlalchemy import func

    last = db.session.scalar(select(func.max(SchedulerHeartbeat.beat_at)))
    if last is None:
        return None
    if last.tzinfo is None:  # SQLite's max() returns the stored text, read without the column type
        from datetime import timezone

        last = last.replace(tzinfo=timezone.utc)
    return max(0.0, (utcnow() - last).total_seconds())
