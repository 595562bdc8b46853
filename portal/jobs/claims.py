"""Claimed job runs: claim a (job, scheduled time) once across processes, heartbeat, take over, finish.

This is the one way a run is claimed, resumed or superseded: the scheduler (portal.jobs.runner),
the Celery executor, the extract engine (CLI, admin "run now", demo) and the R49 resync
(portal.privacy.actions.rectify) all come through here. A run is dead when its lease lapsed, its
heartbeat is older than JOB_DEAD_AFTER_SECONDS, or its owner ran on this host and that process is
gone; a dead extract run is resumed from its last committed page, unless a newer completed run
already did its work, in which case it is closed as ``superseded``.

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
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection as DBConnection

from portal.extensions import db
from portal.models import FINISHED_STATUSES, ErrorKind, ExtractRemoval, JobRun, RunStatus
from portal.models.base import utcnow

__all__ = [
    "BROKER_UNAVAILABLE", "MAX_ATTEMPTS", "REQUESTED", "RunBusy", "beat", "claim_extract", "claim_run", "finish", "heartbeat", "is_dead",
    "owner_gone", "owner_id", "request_extract", "start_queued", "take_over", "take_over_lapsed",
]

# Key in a queued extract run's params: the mode and categories asked for by whoever queued it.
REQUESTED = "requested"
# error_code of a run still queued because the task queue could not be reached (the Celery executor sends it again).
BROKER_UNAVAILABLE = "broker_unavailable"
# Statuses of a run that did its work: a dead run older than one of these need not be resumed.
_COMPLETED = (RunStatus.succeeded, RunStatus.held)

# A run whose process died this many times is not tried again: it is probably what kills it.
MAX_ATTEMPTS = 3

_runs = JobRun.__table__


@functools.cache
def owner_id() -> str:
    """Return this process's claim owner: host, pid and a random part (pids are reused after restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class RunBusy(Exception):
    """Another, live process is running this job now; ``run_id`` is its run."""

    def __init__(self, run_id: int) -> None:
        super().__init__(f"run {run_id} is still running")
        self.run_id = run_id


def owner_gone(owner: str | None) -> bool:
    """Whether the owner of a claim ran on this host and its process no longer exists (or is a zombie).

    Owners on other hosts are judged by their heartbeat only. A pid that was reused by another
    process looks alive: then the heartbeat age decides, a little later.
    """
    parts = (owner or "").split(":")
    if len(parts) < 2 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        # This process: alive, unless the claim is from an earlier process that had our pid.
        return owner != owner_id()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _dead_after() -> timedelta:
    return timedelta(seconds=current_app.config.get("JOB_DEAD_AFTER_SECONDS", 45))


def is_dead(run: JobRun, now: datetime | None = None) -> bool:
    """Whether a running run's process died: lease lapsed, heartbeat too old, or owner gone on this host."""
    if run.status != RunStatus.running:
        return False
    now = now or utcnow()
    if run.lease_expires_at is not None and run.lease_expires_at < now:
        return True
    if run.heartbeat_at is not None and now - run.heartbeat_at > _dead_after():
        return True
    return owner_gone(run.claimed_by)


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
    unowned, for the executor to start (portal.jobs.celery, portal.jobs.inprocess). Commits the session.
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


def take_over(run_id: int, owner: str, *, dead_owner: str | None = None) -> JobRun | None:
    """Take over one running run whose process died; None when it is not ours to take.

    Dead means its lease lapsed or, with ``dead_owner``, that it is still claimed by that owner
    (whom the caller found dead): the WHERE clause lets one taker win. Runs already tried
    MAX_ATTEMPTS times are marked failed instead. Commits the session.
    """
    now = utcnow()
    gone = _runs.c.lease_expires_at < now
    if dead_owner is not None:
        gone = gone | (_runs.c.claimed_by == dead_owner)
    lapsed = (_runs.c.id == run_id, _runs.c.status == RunStatus.running, gone)
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


def dead_runs() -> list[JobRun]:
    """Return the running runs whose process died, oldest first; dead extract runs already superseded are closed."""
    now = utcnow()
    dead = [run for run in db.session.scalars(
        select(JobRun).where(JobRun.status == RunStatus.running).order_by(JobRun.id)
    ).all() if is_dead(run, now)]
    out = []
    for run in dead:
        newer = _superseded_by(run) if run.kind == "extract" else None
        if newer is not None:
            close_superseded(run, newer)
        else:
            out.append(run)
    return out


def take_over_lapsed(owner: str) -> list[JobRun]:
    """Take over every running run whose process died; return the runs this process now owns."""
    taken = (take_over(run.id, owner, dead_owner=run.claimed_by) for run in dead_runs())
    return [run for run in taken if run is not None]


# ---------------------------------------------------------------- extract runs


def _categories(run: JobRun) -> set[str]:
    params = run.params or {}
    return set(params.get("categories") or (params.get(REQUESTED) or {}).get("categories") or [])


def _superseded_by(run: JobRun) -> JobRun | None:
    """Return a newer completed run of the same job that did this dead run's work, if any.

    A full run is superseded only by a newer full run (its reconciliation is the point of it);
    an incremental one by any newer run. Either must have covered the dead run's categories
    (an unknown set counts as covered only by a run that names none either).
    """
    wanted = _categories(run)
    full = (run.params or {}).get("mode") == "full"
    for newer in db.session.scalars(
        select(JobRun)
        .where(JobRun.job_id == run.job_id, JobRun.id > run.id, JobRun.status.in_(_COMPLETED))
        .order_by(JobRun.id.desc())
    ):
        if full and (newer.params or {}).get("mode") != "full":
            continue
        if wanted <= _categories(newer):
            return newer
    return None


def close_superseded(run: JobRun, newer: JobRun, *, message: str | None = None) -> bool:
    """Close a dead run as ``superseded`` by a newer run; its staged removals are dropped (never applied)."""
    closed = db.session.execute(
        update(_runs)
        .where(_runs.c.id == run.id, _runs.c.status == RunStatus.running, _runs.c.claimed_by == run.claimed_by)
        .values(
            status=RunStatus.superseded, finished_at=utcnow(), lease_expires_at=None,
            error_kind=None, error_code="superseded",
            error_message=message or (
                f"This run stopped because the process running it ended, and run {newer.id} has since "
                "completed the same work, so it was closed and not resumed. Nothing needs doing."
            ),
        )
    ).rowcount
    if closed:
        db.session.execute(delete(ExtractRemoval).where(ExtractRemoval.run_id == run.id))
    db.session.commit()
    if closed:
        db.session.refresh(run)
    return closed == 1


def claim_extract(connection_id: int, *, owner: str, run_id: int | None = None) -> tuple[JobRun, JobRun | None]:
    """Return (the run to work in, the run given that was folded into it, if any) for one connection's extract.

    A live run of the connection raises RunBusy. A dead one is closed as superseded when a newer
    completed run did its work, otherwise taken over and returned, to resume from its checkpoint;
    then a run given by ``run_id`` (a fresh firing) is closed as cancelled, pointing at it.
    Without a dead run to resume: the run given, or a new claim for now. Commits the session.
    """
    job_id = f"extract:{connection_id}"
    given = db.session.get(JobRun, run_id) if run_id is not None else None
    now = utcnow()
    others = db.session.scalars(
        select(JobRun)
        .where(JobRun.job_id == job_id, JobRun.status == RunStatus.running, JobRun.id != (run_id or 0))
        .order_by(JobRun.id.desc())
    ).all()
    resumable = None
    # A run asked for explicitly (support's "run now", an R49 resync) is not folded into a dead one.
    explicit = given is not None and bool((given.params or {}).get(REQUESTED))
    for other in others:
        if not is_dead(other, now):
            raise RunBusy(other.id)
        newer = _superseded_by(other)
        if newer is not None:
            close_superseded(other, newer)
        elif explicit:
            close_superseded(other, given, message=(
                f"This run stopped because the process running it ended; run {given.id}, asked for since, "
                "replaced it. Nothing needs doing."
            ))
        elif resumable is None:
            resumable = other
        else:
            # An older dead run behind a newer dead one: the newer one is resumed and does its work.
            close_superseded(other, resumable)
    taken = take_over(resumable.id, owner, dead_owner=resumable.claimed_by) if resumable is not None else None
    if resumable is not None and taken is None:
        db.session.refresh(resumable)
        if resumable.status == RunStatus.running:
            raise RunBusy(resumable.id)  # another process took it over first
        # Otherwise it died MAX_ATTEMPTS times and was marked failed: a fresh run starts below.
    if taken is not None:
        if given is not None:
            db.session.execute(
                update(_runs).where(_runs.c.id == given.id, _runs.c.status.in_([RunStatus.running, RunStatus.queued]))
                .values(status=RunStatus.cancelled, finished_at=utcnow(), lease_expires_at=None,
                        error_code="resumed_instead",
                        error_message=f"Run {taken.id} had been interrupted, so it was resumed instead of starting anew.")
            )
            db.session.commit()
            db.session.refresh(given)
        return taken, given
    if given is not None:
        if given.status == RunStatus.queued:
            started = start_queued(given.id, owner)
            if started is None:
                raise RunBusy(given.id)
            return started, None
        if is_dead(given, now):
            # Asked to resume a run whose process died: take it over first (one taker wins).
            taken = take_over(given.id, owner, dead_owner=given.claimed_by)
            if taken is None:
                raise RunBusy(given.id)
            return taken, None
        # Worked in by whoever claimed it (the runner, a worker), not re-stamped here.
        return _owned(given, getattr(given, "claimed_as", None) or given.claimed_by or owner), None
    run = claim_run(job_id, now, kind="extract", connection_id=connection_id, owner=owner)
    if run is None:
        raise RunBusy(db.session.scalar(select(JobRun.id).where(JobRun.job_id == job_id, JobRun.scheduled_for == now)) or 0)
    return run, None


def request_extract(connection_id: int, *, owner: str, mode: str, categories: list[str] | None = None,
                    **params: Any) -> JobRun | None:
    """Claim an extract of one connection for now as queued (admin "run now", R49 resync); None if claimed already.

    The mode and categories travel in the row's params. The caller is the executor
    (``get_executor().queue_extract``), which hands the run over: a Celery worker starts it, or
    in-process the housekeeping job (jobs:recover) starts it in a scheduling process. ``claimed_at``
    is set, which marks the row as handed over.
    """
    return claim_run(
        f"extract:{connection_id}", utcnow(), kind="extract", connection_id=connection_id, owner=owner,
        params={REQUESTED: {"mode": mode, "categories": list(categories) if categories else None}, **params},
        queued=True,
    )


def start_queued(run_id: int, owner: str) -> JobRun | None:
    """Move a queued run to running for this owner in one atomic statement; None when not queued any more."""
    now = utcnow()
    started = db.session.execute(
        update(_runs)
        .where(_runs.c.id == run_id, _runs.c.status == RunStatus.queued)
        .values(
            status=RunStatus.running, claimed_by=owner, claimed_at=now, heartbeat_at=now,
            lease_expires_at=_lease(now), attempts=_runs.c.attempts + 1,
            error_kind=None, error_code=None, error_message=None,
            # A run started before (queued again after its worker died) keeps its first start.
            started_at=func.coalesce(_runs.c.started_at, now),
        )
    ).rowcount
    db.session.commit()
    if started != 1:
        return None
    # One read of the row as committed (the session's copy, if any, expired with the commit).
    return _owned(db.session.get(JobRun, run_id, populate_existing=True), owner)


def queued_extracts() -> list[int]:
    """Return the ids of extract runs queued for this process's executor (in-process), oldest first."""
    return db.session.scalars(
        select(_runs.c.id)
        .where(_runs.c.status == RunStatus.queued, _runs.c.kind == "extract", _runs.c.claimed_at.is_not(None))
        .order_by(_runs.c.id)
    ).all()
