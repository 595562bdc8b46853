"""The Celery executor (EXECUTOR "celery") and the Celery app its workers run (`celery -A portal.tasks worker`).

With "celery" the scheduler, the CLI and the admin only claim a run row as ``queued`` and send
its id to the broker; a worker (the task ``portal.run_job`` below) starts it with one atomic
UPDATE from queued to running, so a task delivered twice runs once. The row stays the single
source of truth:

- broker down when sending: the row stays ``queued`` with error_code ``broker_unavailable``
  and a plain message, and recover() sends it again on the next housekeeping tick;
- a queued row no worker picked up within JOB_REQUEUE_SECONDS is sent again (``claimed_at``
  of a queued row is when it was last handed to the broker);
- a worker that died mid-run stops heartbeating: once its lease lapses recover() puts the run
  back to ``queued`` and sends it again, and the extract engine resumes from its checkpoint.

Nothing is built at import. ``celery_app(flask_app)`` builds (once per Flask app) the Celery
app bound to it, following Flask's "Background Tasks with Celery" pattern: every task runs
inside an app context. portal.tasks is the worker's entry point and builds the Flask app.
Only imported when Celery is installed (the ``celery`` extra).
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from celery import Celery, Task
from flask import Flask, current_app
from sqlalchemy import false, or_, select, update

from portal.extensions import db
from portal.jobs import JobSpec
from portal.jobs.builtin import spec_for
from portal.jobs.claims import (
    BROKER_UNAVAILABLE,
    MAX_ATTEMPTS,
    claim_run,
    dead_runs,
    finish,
    owner_id,
    request_extract,
    start_queued,
)
from portal.jobs.limits import ProviderSlots
from portal.jobs.runner import execute
from portal.models import Connection, ErrorKind, JobRun, RunStatus
from portal.models.base import utcnow

__all__ = ["BROKER_UNAVAILABLE", "CeleryExecutor", "celery_app", "run_job"]

log = logging.getLogger(__name__)

BROKER_MESSAGE = (
    "Waiting: the task queue could not be reached, so this run has not started yet. "
    "It is sent again automatically every minute; nothing is lost."
)
TASK_NAME = "portal.run_job"
EXTENSION_KEY = "portal.celery"
# When a provider is at its concurrency limit, try the run again after this many seconds.
SLOT_RETRY_SECONDS = 2

_runs = JobRun.__table__


def _settings(flask_app: Flask) -> dict[str, Any]:
    limit = flask_app.config["JOB_TIME_LIMIT_SECONDS"]
    return {
        # A run's message is acknowledged only when the run ends: a worker dying mid-run leaves
        # it on the broker. The claimed-run row makes a second delivery a no-op.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One message at a time per worker process: runs are long, so prefetching would park
        # runs behind a busy process while another sits idle.
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": limit,
        "task_time_limit": limit + 60,
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        # Sending when the broker is down fails fast; the run stays queued and is sent again.
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        "broker_transport_options": {"socket_connect_timeout": 3, "visibility_timeout": limit + 120},
        "worker_hijack_root_logger": False,
        **{k.lower(): v for k, v in (flask_app.config.get("CELERY") or {}).items()},
    }


# Connections one run may hold at once: its session, a full run's writer thread, its lease heartbeat.
CONNECTIONS_PER_RUN = 3


def pool_shortfall(flask_app: Flask, pool: Any, concurrency: Any) -> str | None:
    """At a worker's start: why its database pool cannot serve its thread pool's runs at once; None when it can.

    Only a thread pool shares one process's connections between its runs (prefork's processes have a
    pool each). SQLAlchemy's own defaults (5 + 10) apply where the options leave them out.
    """
    if "thread" not in str(pool).lower() or not isinstance(concurrency, int):
        return None
    options = flask_app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}
    if options.get("poolclass") is not None or not str(flask_app.config.get("DATABASE_URL", "")).startswith("postgresql"):
        return None
    size = int(options.get("pool_size", 5))
    room = size + int(options.get("max_overflow", 10))
    needed = CONNECTIONS_PER_RUN * concurrency
    if room >= needed:
        return None
    return (f"this worker runs {concurrency} runs at once on threads, which may need {needed} database connections, "
            f"but its pool allows {room} (pool_size + max_overflow in PORTAL_SQLALCHEMY_ENGINE_OPTIONS): runs would wait "
            f"for a connection and fail after its timeout. Raise max_overflow to at least {needed - size} "
            "or lower --concurrency (docs/scaling.md).")


def celery_app(flask_app: Flask) -> Celery:
    """Return (building once) the Celery app of a Flask app, its tasks running in that app's context."""
    existing = flask_app.extensions.get(EXTENSION_KEY)
    if existing is not None:
        return existing

    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with flask_app.app_context():
                return self.run(*args, **kwargs)

    app = Celery(flask_app.import_name, task_cls=FlaskTask, set_as_current=False)
    app.config_from_object(_settings(flask_app))
    # Retried without end while a provider is at its concurrency limit (the row stays queued).
    app.task(name=TASK_NAME, bind=True, max_retries=None)(run_job)
    flask_app.extensions[EXTENSION_KEY] = app
    return app


def run_job(task: Task, run_id: int) -> str:
    """Execute one queued run on a worker: take a provider slot, start the row atomically, run it, release the slot."""
    # The run's status and its connection's connector in one statement (a run with no connection has none).
    row = db.session.execute(
        select(_runs.c.status, Connection.connector)
        .outerjoin(Connection, Connection.id == _runs.c.connection_id)
        .where(_runs.c.id == run_id)
    ).one_or_none()
    if row is None or row.status != RunStatus.queued:
        # Delivered twice, or already finished or cancelled: the row says what happened.
        log.info("run %s is not queued (%s); message ignored", run_id, row.status.value if row else "missing")
        return "skipped"
    connector = row.connector
    slots = ProviderSlots.from_config() if connector else None
    db.session.rollback()
    if slots is not None and not slots.take(connector, run_id):
        log.info("run %s waits: connector %s is at its concurrency limit", run_id, connector)
        raise task.retry(countdown=SLOT_RETRY_SECONDS)
    try:
        started = start_queued(run_id, owner_id())
        if started is None:
            log.info("run %s was started elsewhere; message ignored", run_id)
            return "skipped"
        spec = spec_for(started)
        if spec is None:
            finish(started, RunStatus.failed, error_kind=ErrorKind.internal, error_code="not_declared",
                   error_message="The run's job is no longer scheduled, so it was not run.")
            return "failed"
        log.info("run %s (%s) started on this worker", run_id, started.job_id)
        return execute(spec, started).status.value
    finally:
        if slots is not None:
            slots.release(connector, run_id)
        db.session.remove()


class CeleryExecutor:
    """Claims runs as queued and sends their ids to the Celery workers; the Executor of a multi-machine deployment."""

    name = "celery"
    # Workers on several machines run at once: a provider's rate limit is shared through Redis.
    shared = True

    def submit(self, spec: JobSpec, scheduled_for: datetime, *, owner: str) -> JobRun | None:
        """Claim one firing as ``queued`` and send it to the workers; None when another process has it."""
        run = claim_run(
            spec.id, scheduled_for, kind=spec.kind, connection_id=spec.connection_id, owner=owner, queued=True
        )
        if run is None:
            log.info("job %s at %s already claimed by another process; skipped", spec.id, scheduled_for.isoformat())
            return None
        log.info("job %s at %s claimed as run %s and queued", spec.id, scheduled_for.isoformat(), run.id)
        self.enqueue(run.id)
        return db.session.get(JobRun, run.id)

    def queue_extract(self, connection_id: int, *, owner: str, mode: str = "incremental",
                      categories: list[str] | None = None, **params: Any) -> JobRun | None:
        """Claim an extract of one connection for now as queued and send it; None if claimed already.

        The mode and categories travel in the row's params (the broker carries only the run id),
        and the worker's job body passes them to the engine.
        """
        run = request_extract(connection_id, owner=owner, mode=mode, categories=categories, **params)
        if run is None:
            return None
        log.info("extract of connection %s queued as run %s (%s)", connection_id, run.id, mode)
        self.enqueue(run.id)
        return db.session.get(JobRun, run.id)

    def extract_now(self, connection_id: int, *, mode: str = "incremental",
                    categories: list[str] | None = None) -> JobRun | None:
        """Like the scheduler: claim the run as queued and hand it to the workers, never run it in the web process."""
        return self.queue_extract(connection_id, owner=owner_id(), mode=mode, categories=categories)

    def enqueue(self, run_id: int) -> bool:
        """Send a queued run's id to the broker; on failure note it on the row (still queued) and return False."""
        try:
            celery_app(current_app).send_task(TASK_NAME, args=[run_id])
        except Exception as exc:  # kombu raises several types for "broker unreachable"
            log.warning("run %s could not be sent to the task queue (%s); it stays queued and is retried",
                        run_id, type(exc).__name__)
            _mark_queued(run_id, error_code=BROKER_UNAVAILABLE, error_message=BROKER_MESSAGE)
            return False
        _mark_queued(run_id, error_code=None, error_message=None)
        return True

    def recover(self) -> int:
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
                # Only rows an executor queued (claimed_at set); other queued rows, such as provider
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
            if not self.enqueue(run_id):
                break  # the broker is down: the rest stay queued for the next tick
            sent += 1
        return sent


def _mark_queued(run_id: int, *, error_code: str | None, error_message: str | None) -> None:
    db.session.execute(
        update(_runs)
        .where(_runs.c.id == run_id, _runs.c.status == RunStatus.queued)
        .values(claimed_at=utcnow(), error_code=error_code, error_message=error_message,
                error_kind=ErrorKind.temporary if error_code else None)
    )
    db.session.commit()
