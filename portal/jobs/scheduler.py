"""APScheduler in-process: declared in init_app, started only by wsgi.py or `flask portal scheduler`."""
from __future__ import annotations

from flask import Flask

from portal.plugins.manager import get_plugins

EXTENSION_KEY = "portal.jobs"


def init_app(app: Flask) -> None:
    """Collect the job specs of every plugin; start nothing."""
    app.extensions[EXTENSION_KEY] = {spec.id: spec for spec in get_plugins(app).jobs(app)}


def job_specs(app: Flask) -> dict:
    """Return the declared jobs by id."""
    return app.extensions[EXTENSION_KEY]
