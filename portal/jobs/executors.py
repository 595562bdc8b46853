"""Choose, once at start-up, where claimed runs execute: in this process (EXECUTOR "inprocess") or on Celery workers.

create_app calls init_app, which stores the chosen Executor on ``app.extensions``; everything
else reaches it through portal.jobs.get_executor() and never branches on the setting.
"""
from __future__ import annotations

from flask import Flask

from portal.errors import StartupError
from portal.jobs import EXECUTOR_KEY, Executor
from portal.jobs.inprocess import InProcessExecutor

__all__ = ["init_app"]


def init_app(app: Flask) -> Executor:
    """Build the executor the EXECUTOR setting names and store it on the app; refuse to start when it cannot work."""
    if app.config["EXECUTOR"] == "celery":
        executor = _celery(app)
    else:
        executor = InProcessExecutor()
    app.extensions[EXECUTOR_KEY] = executor
    return executor


def _celery(app: Flask) -> Executor:
    if not (app.config.get("CELERY") or {}).get("broker_url"):
        raise StartupError(
            "setting PORTAL_CELERY__broker_url is missing: with PORTAL_EXECUTOR=celery it must name the broker, "
            "e.g. redis://127.0.0.1:6379/0"
        )
    try:
        # Imported here, not at the top: Celery is an optional dependency (the ``celery`` extra).
        from portal.jobs.celery import CeleryExecutor
    except ImportError as exc:
        if exc.name is None or exc.name.split(".")[0] != "celery":
            raise
        raise StartupError("PORTAL_EXECUTOR=celery needs Celery: pip install 'mis-portal[celery]'") from None
    return CeleryExecutor()
