"""Where claimed runs execute: in this process (EXECUTOR "inprocess") or on Celery workers ("celery").

With "celery" the scheduler, the CLI and the admin only claim a run row as ``queued`` and send
its id to the broker; a worker (portal.tasks) starts it with one atomic UPDATE from queued to
running, so a task delivered twice runs once. The row stays the single source of truth:

- broker down when sending: the row stays ``queued`` with error_code ``broker_unavailable``
  and a plain message, and recover() sends it again on the next housekeeping tick;
- a queued row no worker picked up within JOB_REQUEUE_SECONDS is sent again (``claimed_at``
  of a queued row is when it was last handed to the broker);
- a worker that died mid-run stops heartbeating: once its lease lapses recover() puts the run
  back to ``queued`` and sends it again, and the extract engine resumes from its checkpoint.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import false, or_, select, update

from portal.extensions import db
from portal.jobs import JobSpec
from portal.jobs.claims import MAX_ATTEMPTS, REQUESTED, claim_run, dead_runs, request_extract, start_queued
from portal.models import ErrorKind, JobRun, RunStatus
from portal.models.base import utcnow

__all__ = [
    "BROKER_UNAVAILABLE", "REQUESTED", "enqueue", "queue_extract", "recover", "spec_for", "start", "submit", "uses_celery",
]

log = logging.getLogger(__name__)

BROKER_UNAVAILABLE = "broker_unavailable"
BROKER_MESSAGE = (
    "Waiting: the task queue could not be reached, so this run has not started yet. "
    "It is sent again automatically every minute; nothing is lost."
)
TASK_NAME = "portal.run_job"

_runs = JobRun.__table__


def uses_celery(app: Any = None) -> bool:
    """Whether runs go to Celery workers rather than run in this process."""
    return (app or current_app).config.get("EXECUTOR") == "celery"


def submit(spec: JobSpec, scheduled_for: datetime, *, owner: str) -> JobRun | None:
    """Claim one firing as ``queued`` and send it to the workers; None when another process has it."""
    run = claim_run(
        spec.id, scheduled_for, kind=spec.kind, connection_id=spec.connection_id, owner=owner, queued=True
    )
    if run is None:
        log.info("job %s at %s already claimed by another process; skipped", spec.id, scheduled_for.isoformat())
        return None
    log.info("job %s at %s claimed as run %s and queued", spec.id, scheduled_for.isoformat(), run.id)
    enqueue(run.id)
    return db.session.get(JobRun, run.id)


def queue_extract(connection_id: int, *, owner: str, mode: str = "incremental",
                  categories: list[str] | None = None) -> JobRun | None:
    """Claim an extract of one connection for now (support's "run now") as queued and send it; None if claimed already.

    The mode and categories travel in the row's params (the broker carries only the run id),
    and the worker's job body passes them to the engine.
    """
    run = request_extract(connection_id, owner=owner, mode=mode, categories=categories)
    if run is not None:
        log.info("extract of connection %s queued as run %s (%s)", connection_id, run.id, mode)
    return run


def enqueue(run_id: int) -> bool:
    """Send a queued run's id to the broker; on failure note it on the row (still queued) and return False."""
    from portal.tasks import celery_app

    try:
        celery_app(current_app).send_task(TASK_NAME, args=[run_id])
    except Exception as exc:  # kombu raises several types for "broker unreachable"
        log.warning("run %s could not be sent to the task queue (%s); it stays queued and is retried", run_id, type(exc).__name__)
        _mark_queued(run_id, error_code=BROKER_UNAVAILABLE, error_message=BROKER_MESSAGE)
        return False
    _mark_queued(run_id, error_code=None, error_message=None)
    return True


def _mark_queued(run_id: int, *, error_code: str | None, error_message: str | None) -> None:
    db.session.execute(
        update(_runs)
        .where(_runs.c.id == run_id, _runs.c.status == RunStatus.queued)
        .values(claimed_at=utcnow(), error_code=error_code, error_message=error_message,
                error_kind=ErrorKind.temporary if error_code else None)
    )
    db.session.commit()


def start(run_id: int, owner: str) -> JobRun | None:
    """Move a queued run to running for this worker in one atomic statement; None when not queued any more."""
    return start_queued(run_id, owner)


def spec_for(run: JobRun) -> JobSpec | None:
    """Return the job a run belongs to: an extract of its connection, or a declared job."""
    from portal.jobs.builtin import extract
    from portal.jobs.scheduler import registry

    if run.kind == "extract" and run.connection_id is not None:
        return JobSpec(run.job_id, extract, kwargs={"connection_id": run.connection_id},
                       kind="extract", connection_id=run.connection_id)
    return registry().spec(run.job_id)


def recover() -> int:
    """Re-queue runs whose worker died and re-send queued runs the broker never delivered; return how many were sent."""
    now = utcnow()
    # Dead: lease lapsed, heartbeat too old, or the worker's process gone (portal.jobs.claims.is_dead);
    # a dead extract a newer completed run superseded is closed there, not queued again.
    dead = [(run.id, run.claimed_by) for run in dead_runs()]
    ids = [run_id for run_id, _ in dead]
    owners = [owner for _, owner in dead if owner]
    lapsed = (_runs.c.status == RunStatus.running, _runs.c.id.in_(ids), _runs.c.claimed_by.in_(owners))
    db.session.execute(
        update(_runs)
        .where(*lapsed, _runs.c.attempts >= MAX_ATTEMPTS)
        .values(
            status=RunStatus.failed, finished_at=now, lease_expires_at=None,
            error_kind=ErrorKind.internal, error_code="interrupted",
            error_message=(
                f"The run stopped {MAX_ATTEMPTS} times because the worker running it ended, "
                "so it was not tried again. Support staff can check the workers."
            ),
        )
    )
    requeued = db.session.execute(
        update(_runs)
        .where(*lapsed)
        .values(status=RunStatus.queued, claimed_by=None, lease_expires_at=None)
        .returning(_runs.c.id)
    ).scalars().all()
    db.session.commit()
    for run_id in requeued:
        log.warning("run %s lost its worker (lease lapsed); queued again to resume from its checkpoint", run_id)
    stale_before = now - timedelta(seconds=current_app.config["JOB_REQUEUE_SECONDS"])
    waiting = db.session.scalars(
        select(_runs.c.id)
        .where(
            _runs.c.status == RunStatus.queued,
            # Only rows this module queued (claimed_at set); other queued rows, such as provider
            # revokes waiting for their own retry job, are not ours to send.
            _runs.c.claimed_at.is_not(None),
            or_(
                _runs.c.id.in_(requeued) if requeued else false(),
                _runs.c.error_code == BROKER_UNAVAILABLE,
                _runs.c.claimed_at < stale_before,
            ),
        )
        .order_by(_runs.c.id)
    ).all()
    sent = 0
    for run_id in waiting:
        if not enqueue(run_id):
            break  # the broker is down: the rest stay queued for the next tick
        sent += 1
    return sent
