"""Run a claimed run's body: keep its lease alive while the body runs, record how it ended; fire() hands a firing to the executor."""
from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from flask import Flask, current_app
from sqlalchemy.exc import SQLAlchemyError

from portal.connectors import ConnectorError
from portal.errors import code_location
from portal.extensions import db
from portal.jobs import JobSpec, get_executor
from portal.jobs.claims import beat, finish, owner_id
from portal.models import FINISHED_STATUSES, ErrorKind, JobRun, RunStatus

__all__ = ["Heartbeat", "JobFailed", "beating", "call_body", "execute", "fire"]

log = logging.getLogger(__name__)

UNEXPECTED = (
    "The job stopped because of an unexpected error. "
    "Support staff can find this run's id in the server log."
)


class JobFailed(Exception):
    """A job body's typed failure: ``message`` is plain English for staff, with no personal data."""

    def __init__(self, message: str, *, code: str, kind: ErrorKind = ErrorKind.internal) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.kind = ErrorKind(kind)


def call_body(func: Callable[..., Any], kwargs: Mapping[str, Any], run_id: int | None) -> Any:
    """Call a job body, passing ``run_id`` only when the body asks for it."""
    params = inspect.signature(func).parameters
    if run_id is not None and "run_id" in params:
        return func(**kwargs, run_id=run_id)
    return func(**kwargs)


class _Heartbeat(threading.Thread):
    """Extends one run's lease every JOB_HEARTBEAT_SECONDS on its own connection until stopped.

    A thread rather than calls from the body, so that a body stuck in one long provider call
    still holds its lease, and a dead process stops extending it.
    """

    def __init__(self, app: Flask, run_id: int, owner: str) -> None:
        super().__init__(name=f"heartbeat-run-{run_id}", daemon=True)
        self.app, self.run_id, self.owner = app, run_id, owner
        self.every = app.config["JOB_HEARTBEAT_SECONDS"]
        self.stopped = threading.Event()

    def start(self) -> None:
        with _beating_lock:
            _beating[(self.run_id, self.owner)] = _beating.get((self.run_id, self.owner), 0) + 1
        super().start()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                with self.app.app_context(), db.engine.begin() as conn:
                    if not beat(conn, self.run_id, self.owner):
                        return  # cancelled, finished or taken over: the lease is not ours to extend
            except SQLAlchemyError as exc:
                # SQLite may be locked by the body's own transaction; the next beat tries again.
                log.warning("heartbeat of run %s failed (%s); retrying", self.run_id, type(exc).__name__)

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        with _beating_lock:
            left = _beating.pop((self.run_id, self.owner)) - 1
            if left:
                _beating[(self.run_id, self.owner)] = left


Heartbeat = _Heartbeat

# Heartbeats running in this process, by (run id, owner): a body run by execute() (the extract
# engine) needs no second thread extending the same lease (a thread start per run, issue 19).
_beating: dict[tuple[int, str], int] = {}
_beating_lock = threading.Lock()


def beating(run_id: int, owner: str) -> bool:
    """Whether a heartbeat thread of this process is extending this run's lease for this owner now."""
    with _beating_lock:
        return (run_id, owner) in _beating


def execute(spec: JobSpec, run: JobRun) -> JobRun:
    """Run a claimed run's body in this app context and record how it ended; return the run."""
    app = current_app._get_current_object()
    run_id, owner = run.id, getattr(run, "claimed_as", None) or run.claimed_by
    heart = _Heartbeat(app, run_id, owner)
    heart.start()
    try:
        result = call_body(spec.func, spec.kwargs, run_id)
    except (JobFailed, ConnectorError) as exc:
        db.session.rollback()
        log.warning("job %s run %s failed: %s", spec.id, run_id, exc.code)
        _finish_failed(run_id, owner, ErrorKind(exc.kind), exc.code, exc.message)
    except Exception as exc:
        db.session.rollback()
        # Exception text may quote data values (personal data), so the log gets its type and location only (R65).
        log.error("job %s run %s stopped with an unexpected %s at %s", spec.id, run_id, type(exc).__name__, code_location(exc))
        _finish_failed(run_id, owner, ErrorKind.internal, "unexpected_error", UNEXPECTED)
    else:
        # A body given run_id may have finished the run itself; then this changes nothing. An extract
        # returns its run as it committed it: when that is this run and it ended, there is nothing to
        # record (finish would match no row), and no second read of the row.
        done = isinstance(result, JobRun) and result.id == run_id and result.status in FINISHED_STATUSES
        if not done:
            stats = result if isinstance(result, Mapping) else None
            finish(db.session.get(JobRun, run_id), RunStatus.succeeded, stats=stats, owner=owner)
    finally:
        heart.stop()
    return db.session.get(JobRun, run_id)


def _finish_failed(run_id: int, owner: str, kind: ErrorKind, code: str, message: str) -> None:
    run = db.session.get(JobRun, run_id)
    finish(run, RunStatus.failed, error_kind=kind, error_code=code, error_message=message, owner=owner)


def fire(spec: JobSpec, scheduled_for: datetime, *, owner: str | None = None) -> JobRun | None:
    """Claim and run one firing of a job through the app's executor; None when another process has it.

    The in-process executor runs it here; the Celery executor only claims it (queued) and sends it
    to the workers. Jobs declared with ``claim=False`` just run (in every process) and return None.
    """
    if not spec.claim:
        call_body(spec.func, spec.kwargs, None)
        return None
    return get_executor().submit(spec, scheduled_for, owner=owner or owner_id())
