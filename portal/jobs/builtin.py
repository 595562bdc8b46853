"""Default plugin: the core's own jobs (retention sweep, extracts, housekeeping) through portal_register_jobs.

Declared jobs: ``retention:sweep`` daily at 02:00 Europe/London, and two housekeeping jobs
that run in every scheduling process (``claim=False``): ``jobs:refresh`` re-syncs the dynamic
``extract:<connection_id>`` jobs with the connections in the database, and ``jobs:recover``
takes over runs whose process died (lease lapsed) and runs them to the end, through the
executor chosen at start-up (portal.jobs.executors).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select

from portal.connectors import Connector
from portal.errors import StartupError
from portal.extensions import db
from portal.extract import run_extract
from portal.jobs import JobSpec, get_executor
from portal.jobs.claims import REQUESTED
from portal.jobs.runner import call_body
from portal.jobs.scheduler import make_trigger, registry, sync_dynamic_jobs
from portal.models import EXTRACTABLE_STATES, Connection, JobRun
from portal.plugins import hookimpl
from portal.plugins.manager import get_plugins
from portal.retention.sweep import run_sweep

RETENTION_SWEEP = "retention:sweep"
REFRESH = "jobs:refresh"
RECOVER = "jobs:recover"


@hookimpl
def portal_register_jobs(app: Flask, connectors: Mapping[str, Any]) -> list[JobSpec]:
    """Declare the core jobs; the extract jobs are dynamic (see refresh_extract_jobs)."""
    every = {key: app.config.get(key, default) for key, default in (("JOB_REFRESH_SECONDS", 300), ("JOB_RECOVER_SECONDS", 60))}
    for key, value in every.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise StartupError(f"setting PORTAL_{key} is invalid: it must be a positive whole number of seconds")
    return [
        JobSpec(RETENTION_SWEEP, retention_sweep, "cron", {"hour": 2, "minute": 0}, kind="retention"),
        JobSpec(
            REFRESH, refresh_extract_jobs, "interval", {"seconds": every["JOB_REFRESH_SECONDS"]},
            kind="housekeeping", claim=False,
        ),
        JobSpec(
            RECOVER, recover_runs, "interval", {"seconds": every["JOB_RECOVER_SECONDS"]},
            kind="housekeeping", claim=False,
        ),
    ]


@hookimpl
def portal_startup(app: Flask) -> None:
    """Refuse to start when a connector's schedule is invalid."""
    jobs = registry(app)
    for name, connector in get_plugins(app).connectors().items():
        try:
            make_trigger(extract_spec(1, connector), jobs.timezone)
        except ValueError as exc:
            raise StartupError(f"connector {name!r} has an invalid schedule: {exc}") from None


def retention_sweep(run_id: int) -> Any:
    """Run the daily retention sweep in the claimed run ``run_id``."""
    return call_body(run_sweep, {}, run_id)


def extract(connection_id: int, run_id: int) -> Any:
    """Run one connection's extract in the claimed run ``run_id``: scheduled ("auto"), or as queued by support."""
    # The worker has just read the row (start_queued): the session's copy, unless a commit expired it since.
    run = db.session.get(JobRun, run_id)
    requested = ((run.params if run is not None else None) or {}).get(REQUESTED) or {}
    return run_extract(connection_id, mode=requested.get("mode") or "auto", categories=requested.get("categories"), run_id=run_id)


def extract_spec(connection_id: int, connector: type[Connector]) -> JobSpec:
    """Return the job of one connection, on its connector's schedule.

    A cron schedule that names no minute (e.g. ``hour=2``) gets minute = connection id mod 60,
    so thousands of schools spread over the hour instead of starting in the same second.
    """
    schedule = dict(connector.schedule)
    trigger = schedule.pop("trigger", "cron")
    if trigger == "cron" and not {"minute", "second"} & schedule.keys():
        schedule["minute"] = connection_id % 60
    return JobSpec(
        f"extract:{connection_id}",
        extract,
        trigger,
        schedule,
        kwargs={"connection_id": connection_id},
        kind="extract",
        connection_id=connection_id,
    )


def extract_specs(app: Flask) -> list[JobSpec]:
    """Return one extract job per connection that may be extracted through an enabled connector."""
    connectors = get_plugins(app).connectors()
    rows = db.session.execute(
        select(Connection.id, Connection.connector)
        .where(
            Connection.state.in_(EXTRACTABLE_STATES),
            Connection.paused.is_(False),
            Connection.connector.in_(list(connectors)),
        )
        .order_by(Connection.id)
    ).all()
    return [extract_spec(connection_id, connectors[name]) for connection_id, name in rows]


def refresh_extract_jobs() -> None:
    """Make this process's extract jobs match the connections in the database."""
    app = current_app._get_current_object()
    sync_dynamic_jobs(app, extract_specs(app))


def spec_for(run: JobRun) -> JobSpec | None:
    """Return the job a run belongs to: an extract of its connection, or a declared job (a Celery worker asks)."""
    if run.kind == "extract" and run.connection_id is not None:
        return JobSpec(run.job_id, extract, kwargs={"connection_id": run.connection_id},
                       kind="extract", connection_id=run.connection_id)
    return registry().spec(run.job_id)


def recover_runs() -> None:
    """Take over every run whose process died, and start queued extracts: run them here, or send them to the workers."""
    get_executor().recover()
