"""The Celery app that runs queued extract and retention runs: `celery -A portal.tasks worker`.

Nothing is built at import. The portal's own processes get a sending-only Celery app from
``celery_app(flask_app)``; the worker asks this module for ``app``, which builds the Flask app
from the PORTAL_* settings (the same as wsgi.py) and the Celery app bound to it, following
Flask's "Background Tasks with Celery" pattern: every task runs inside an app context.
"""
from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init
from flask import Flask

__all__ = ["celery_app", "run_job"]

log = logging.getLogger(__name__)

EXTENSION_KEY = "portal.celery"
# When a provider is at its concurrency limit, try the run again after this many seconds.
SLOT_RETRY_SECONDS = 2


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
    app.task(name="portal.run_job", bind=True, max_retries=None)(run_job)
    flask_app.extensions[EXTENSION_KEY] = app
    return app


def run_job(task: Task, run_id: int) -> str:
    """Execute one queued run: take a provider slot, start the row atomically, run it, release the slot."""
    from portal.extensions import db
    from portal.jobs.claims import finish, owner_id
    from portal.jobs.executors import spec_for, start
    from portal.jobs.limits import ProviderSlots
    from portal.jobs.runner import execute
    from portal.models import Connection, ErrorKind, JobRun, RunStatus

    run = db.session.get(JobRun, run_id)
    if run is None or run.status != RunStatus.queued:
        # Delivered twice, or already finished or cancelled: the row says what happened.
        log.info("run %s is not queued (%s); message ignored", run_id, run.status.value if run else "missing")
        return "skipped"
    connector = None
    if run.connection_id is not None:
        connector = db.session.scalar(db.select(Connection.connector).where(Connection.id == run.connection_id))
    slots = ProviderSlots.from_config() if connector else None
    db.session.rollback()
    if slots is not None and not slots.take(connector, run_id):
        log.info("run %s waits: connector %s is at its concurrency limit", run_id, connector)
        raise task.retry(countdown=SLOT_RETRY_SECONDS)
    try:
        started = start(run_id, owner_id())
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


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    """A forked worker process must not share the parent's database connections."""
    flask_app = _worker_flask_app
    if flask_app is not None:
        from portal.extensions import db

        with flask_app.app_context():
            db.engine.dispose(close=False)


_worker_flask_app: Flask | None = None


def __getattr__(name: str) -> Any:
    # `celery -A portal.tasks` asks for ``app`` (then ``celery``): build the worker's apps on demand.
    if name not in ("app", "celery"):
        raise AttributeError(name)
    global _worker_flask_app
    if _worker_flask_app is None:
        from portal import create_app

        _worker_flask_app = create_app()
        logging.getLogger("portal").setLevel(_worker_flask_app.config["LOG_LEVEL"])
    return celery_app(_worker_flask_app)
