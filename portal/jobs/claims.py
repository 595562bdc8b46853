"""Claimed job runs: claim a (job, scheduled time) once across processes, heartbeat, take over, finish.

Every write here is one atomic statement whose WHERE clause (or the unique constraint on
(job_id, scheduled_for)) decides who wins, so there is no read-then-write race between
processes. Each function commits the session: a claim must be visible to other processes
before the work starts.
"""
from __future__ import annotations

import functools
import os
import secrets
import socket
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection as DBConnection

from portal.extensions import db
from portal.models import FINISHED_STATUSES, ErrorKind, JobRun, RunStatus
from portal.models.base import utcnow

__all__ = ["MAX_ATTEMPTS", "beat", "claim_run", "finish", "heartbeat", "owner_id", "take_over", "take_over_lapsed"]

# A run whose process died this many times is not tried again: it is probably what kills it.
MAX_ATTEMPTS = 3

_runs = JobRun.__table__


@functools.cache
def owner_id() -> str:
    """Return this process's claim owner: host, pid and a random part (pids are reused after restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _lease(now: datetime) -> datetime:
    return now + timedelta(seconds=current_app.config["JOB_LEASE_SECONDS"])


def _insert_ignoring_duplicates(values: Mapping[str, Any]):
    """Return an INSERT that does nothing when (job_id, scheduled_for) is already claimed."""
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(_runs)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["job_id", "scheduled_for"])
        .returning(_runs.c.id)
    )


def claim_run(
    job_id: str,
    scheduled_for: datetime,
    *,
    kind: str,
    connection_id: int | None = None,
    owner: str,
    params: Mapping[str, Any] | None = None,
    queued: bool = False,
) -> JobRun | None:
    """Claim one firing of a job and return its running row, or None when another process has it.

    The row is inserted already ``running`` with a lease of JOB_LEASE_SECONDS; keep it alive
    with heartbeat() and end it with finish(). With ``queued`` it is inserted ``queued`` instead,
    unowned, for a Celery worker to start (portal.jobs.executors). Commits the session.
    """
    if scheduled_for.tzinfo is None:
        raise ValueError("scheduled_for must be timezone-aware")
    now = utcnow()
    stmt = _insert_ignoring_duplicates(
        {
            "job_id": job_id,
            "kind": kind,
            "scheduled_for": scheduled_for,
            "connection_id": connection_id,
            "status": RunStatus.queued if queued else RunStatus.running,
            "claimed_by": None if queued else owner,
            "claimed_at": now,
            "heartbeat_at": None if queued else now,
            "lease_expires_at": None if queued else _lease(now),
            "attempts": 0 if queued else 1,
            "started_at": None if queued else now,
            "params": dict(params or {}),
            "stats": {},
            "created_at": now,
        }
    )
    run_id = db.session.execute(stmt).scalar_one_or_none()
    db.session.commit()
    if run_id is None:
        return None
    return _owned(db.session.get(JobRun, run_id), owner)


def _owned(run: JobRun, owner: str) -> JobRun:
    # Remembered outside the mapped columns, which reload from the database after a commit and
    # would then name whoever holds the run now, not who we were when we claimed it.
    run.claimed_as = owner
    return run


def _owner_of(run: JobRun, owner: str | None) -> str:
    return owner or getattr(run, "claimed_as", None) or run.claimed_by


def _heartbeat_statement(run_id: int, owner: str):
    now = utcnow()
    return (
        update(_runs)
        .where(_runs.c.id == run_id, _runs.c.status == RunStatus.running, _runs.c.claimed_by == owner)
        .values(heartbeat_at=now, lease_expires_at=_lease(now))
    )


def heartbeat(run: JobRun, *, owner: str | None = None, connection: DBConnection | None = None) -> bool:
    """Extend the run's lease; False when the run is no longer ours (cancelled, finished or taken over).

    A job that sees False should stop. ``owner`` defaults to whoever claimed or took over this
    run object. Without ``connection`` it uses and commits the session.
    """
    stmt = _heartbeat_statement(run.id, _owner_of(run, owner))
    if connection is not None:
        return connection.execute(stmt).rowcount == 1
    db.session.flush()
    alive = db.session.execute(stmt).rowcount == 1
    db.session.commit()
    return alive


def beat(connection: DBConnection, run_id: int, owner: str) -> bool:
    """Extend a run's lease on the given connection (the runner's heartbeat thread uses this)."""
    return connection.execute(_heartbeat_statement(run_id, owner)).rowcount == 1


def finish(
    run: JobRun,
    status: RunStatus,
    *,
    stats: Mapping[str, Any] | None = None,
    error_kind: ErrorKind | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    owner: str | None = None,
) -> bool:
    """Record how a run ended; False (and nothing written) when the run is no longer ours.

    ``error_message`` is plain English for staff, never personal data or a traceback. ``owner``
    defaults to whoever claimed or took over this run object. Commits the session, including
    any changes the caller made to ``run``.
    """
    status = RunStatus(status)
    if status not in FINISHED_STATUSES:
        raise ValueError(f"{status.value} is not a finished status")
    owner = _owner_of(run, owner)
    db.session.flush()
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "lease_expires_at": None}
    if stats is not None:
        values["stats"] = dict(stats)
    if error_kind is not None:
        values.update(error_kind=ErrorKind(error_kind), error_code=error_code, error_message=error_message)
    result = db.session.execute(
        update(_runs)
        .where(_runs.c.id == run.id, _runs.c.status == RunStatus.running, _runs.c.claimed_by == owner)
        .values(**values)
    )
    db.session.commit()
    return result.rowcount == 1


def take_over(run_id: int, owner: str) -> JobRun | None:
    """Take over one running run whose lease lapsed (its process died); None when it is not ours to take.

    Runs already tried MAX_ATTEMPTS times are marked failed instead. Commits the session.
    """
    now = utcnow()
    lapsed = (_runs.c.id == run_id, _runs.c.status == RunStatus.running, _runs.c.lease_expires_at < now)
    gave_up = db.session.execute(
        update(_runs)
        .where(*lapsed, _runs.c.attempts >= MAX_ATTEMPTS)
        .values(
            status=RunStatus.failed,
            finished_at=now,
            lease_expires_at=None,
            error_kind=ErrorKind.internal,
            error_code="interrupted",
            error_message=(
                f"The run stopped {MAX_ATTEMPTS} times because the process running it ended, "
                "so it was not tried again. Support staff can check the server."
            ),
        )
    ).rowcount
    taken = 0
    if not gave_up:
        taken = db.session.execute(
            update(_runs)
            .where(*lapsed)
            .values(
                claimed_by=owner,
                claimed_at=now,
                heartbeat_at=now,
                lease_expires_at=_lease(now),
                attempts=_runs.c.attempts + 1,
            )
        ).rowcount
    db.session.commit()
    return _owned(db.session.get(JobRun, run_id), owner) if taken == 1 else None


def take_over_lapsed(owner: str) -> list[JobRun]:
    """Take over every running run whose lease lapsed; return the runs this process now owns."""
    candidates = db.session.scalars(
        select(_runs.c.id)
        .where(_runs.c.status == RunStatus.running, _runs.c.lease_expires_at < utcnow())
        .order_by(_runs.c.id)
    ).all()
    return [run for run in (take_over(run_id, owner) for run_id in candidates) if run is not None]
