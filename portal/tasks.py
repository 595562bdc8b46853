"""The Celery workers' entry point: `celery -A portal.tasks worker`.

The Celery app and its task live in portal.jobs.celery; this module only builds the worker's
apps when Celery asks for ``app`` (then ``celery``): the Flask app from the PORTAL_* settings
(the same as wsgi.py) and the Celery app bound to it. Nothing in the portal imports this module.
"""
from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_init, worker_process_init
from flask import Flask

from portal import create_app
from portal.extensions import db
from portal.gc_settings import tune_for_long_runs
from portal.jobs.celery import celery_app, pool_shortfall, run_job

__all__ = ["celery_app", "run_job"]

log = logging.getLogger(__name__)

_worker_flask_app: Flask | None = None


@worker_init.connect
def _at_worker_start(sender: Any = None, **_: Any) -> None:
    """Sent once the worker has imported its modules, before it takes a task (and before a prefork pool forks)."""
    tune_for_long_runs()
    if _worker_flask_app is not None and sender is not None:
        problem = pool_shortfall(_worker_flask_app, getattr(sender, "pool_cls", None), getattr(sender, "concurrency", None))
        if problem:
            log.error("worker start: %s", problem)


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    """A forked worker process must not share the parent's database connections."""
    flask_app = _worker_flask_app
    if flask_app is not None:
        with flask_app.app_context():
            db.engine.dispose(close=False)


def __getattr__(name: str) -> Any:
    # `celery -A portal.tasks` asks for ``app`` (then ``celery``): build the worker's apps on demand.
    if name not in ("app", "celery"):
        raise AttributeError(name)
    global _worker_flask_app
    if _worker_flask_app is None:
        _worker_flask_app = create_app()
        logging.getLogger("portal").setLevel(_worker_flask_app.config["LOG_LEVEL"])
    return celery_app(_worker_flask_app)
