"""Jobs are data: a JobSpec names a stable id, the function to run and its trigger; an Executor runs their runs.

This package's own module imports nothing of the portal, so every jobs module (and the engines
that claim runs) can import it: the executor chosen at start-up (portal.jobs.executors.init_app)
is reached through ``get_executor()``, never by importing its implementation.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from flask import Flask, current_app

if TYPE_CHECKING:
    from portal.models import JobRun

__all__ = ["EXECUTOR_KEY", "Executor", "JobSpec", "get_executor"]

# Where create_app stores the executor it chose (app.extensions).
EXECUTOR_KEY = "portal.executor"


@dataclass(frozen=True)
class JobSpec:
    """A scheduled job. ``func`` is a plain function run inside an app context with ``kwargs``.

    ``id`` is stable and readable (``extract:12``, ``retention:sweep``): it keys the claimed
    run rows, so two processes firing the same job at the same time run it once.

    ``trigger``/``trigger_args`` are APScheduler's ("cron" with hour=2, "interval" with
    minutes=5...). Every process must compute the same fire times, so ``jitter`` is refused and
    interval triggers are anchored to a fixed start date unless one is given.

    If ``func`` accepts a ``run_id`` argument it is given the id of the claimed JobRun row and
    may finish that run itself (as portal.extract.run_extract does); otherwise the runner
    finishes it from the return value (a dict becomes the run's stats) or the exception.

    ``claim=False`` is for housekeeping that must run in *every* scheduling process (such as
    re-syncing that process's own job list): no run row is claimed or recorded.
    """

    id: str
    func: Callable[..., Any]
    trigger: str = "cron"
    trigger_args: Mapping[str, Any] = field(default_factory=dict)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "job"
    connection_id: int | None = None
    claim: bool = True


class Executor(Protocol):
    """Where claimed runs execute: in this process (portal.jobs.inprocess) or on Celery workers (portal.jobs.celery).

    One is chosen at start-up from the EXECUTOR setting; the scheduler, the CLI, support's
    "run now" and the R49 resync all hand their runs to it and never ask which one it is.
    """

    #: The EXECUTOR setting this executor answers to ("inprocess" or "celery").
    name: str
    #: Whether runs execute in several processes or machines at once, so per-provider limits must be shared (Redis).
    shared: bool

    def submit(self, spec: JobSpec, scheduled_for: datetime, *, owner: str) -> JobRun | None:
        """Claim one firing of a job and run it (or hand it to a worker); None when another process has it."""

    def queue_extract(self, connection_id: int, *, owner: str, mode: str = "incremental",
                      categories: list[str] | None = None, **params: Any) -> JobRun | None:
        """Claim an extract of one connection for now as queued and hand it over; None when claimed already."""

    def extract_now(self, connection_id: int, *, mode: str = "incremental",
                    categories: list[str] | None = None) -> JobRun | None:
        """Support's "run now": run the extract here and return the finished run, or queue it for a worker."""

    def recover(self) -> int:
        """The housekeeping tick: resume or re-send runs whose process died or that wait; return how many."""


def get_executor(app: Flask | None = None) -> Executor:
    """Return the executor chosen at start-up for the given app, or for the current app."""
    return (app or current_app).extensions[EXECUTOR_KEY]
