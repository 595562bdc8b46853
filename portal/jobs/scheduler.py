"""APScheduler in-process: declared in init_app, started only by wsgi.py or `flask portal scheduler`.

Design:

- Jobs are JobSpecs returned by plugins through ``portal_register_jobs`` (the core's own come
  from the default plugin portal.jobs.builtin). ``init_app`` validates and stores them; it
  builds no scheduler and starts no thread.
- ``start_scheduler(app)`` builds a ``BackgroundScheduler`` (timezone SCHEDULER_TIMEZONE) with
  every declared job and starts it. Several processes may do so against one database (gunicorn
  workers, machines): every firing first claims its JobRun row, unique on (job id, scheduled
  time), and the process that loses the claim skips. For that, every process must compute the
  same scheduled times: the executor hands the exact fire time to the runner, interval
  triggers count from a fixed anchor, and ``jitter`` is refused.
- Extract jobs (``extract:<connection_id>``) depend on rows that change at runtime, so they are
  "dynamic" specs: the housekeeping job ``jobs:refresh`` (declared by builtin, ``claim=False``
  so it runs in every process) recomputes them from the database and ``sync_dynamic_jobs``
  adds and removes this process's APScheduler jobs to match. A newly approved connection is
  therefore scheduled within one refresh interval, and a revoked one stops being fired (a run
  already under way is cancelled by portal.lifecycle, not here). Housekeeping jobs also fire
  once as the scheduler starts, so a fresh process syncs and recovers at once.
"""
from __future__ import annotations

import concurrent.futures
import contextvars
import logging
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from apscheduler.executors.base import run_job
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask, current_app

from portal.errors import StartupError
from portal.jobs import JobSpec
from portal.jobs.runner import fire
from portal.models import JobRun
from portal.plugins.manager import get_plugins

__all__ = [
    "JobRegistry",
    "fire_job",
    "init_app",
    "job_specs",
    "registry",
    "start_scheduler",
    "stop_scheduler",
    "sync_dynamic_jobs",
]

log = logging.getLogger(__name__)

EXTENSION_KEY = "portal.jobs"
# Interval triggers count from this instant in every process, so all agree on the fire times
# (APScheduler would otherwise count from each process's own start).
INTERVAL_ANCHOR = datetime(2000, 1, 1, tzinfo=timezone.utc)
TRIGGERS: dict[str, type[BaseTrigger]] = {"cron": CronTrigger, "interval": IntervalTrigger, "date": DateTrigger}

# The exact scheduled time of the firing the current worker thread is running.
_scheduled_for: contextvars.ContextVar[datetime] = contextvars.ContextVar("scheduled_for")


def make_trigger(spec: JobSpec, timezone_name: str) -> BaseTrigger:
    """Build the APScheduler trigger of a spec; ValueError names what is wrong."""
    if spec.trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {', '.join(TRIGGERS)}, not {spec.trigger!r}")
    args: dict[str, Any] = dict(spec.trigger_args)
    if "jitter" in args:
        raise ValueError("jitter is not allowed: every process must compute the same fire times")
    if spec.trigger == "interval":
        args.setdefault("start_date", INTERVAL_ANCHOR)
    if spec.trigger != "date":
        args.setdefault("timezone", timezone_name)
    try:
        return TRIGGERS[spec.trigger](**args)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


class JobRegistry:
    """One app's jobs: the declared specs, the dynamic (extract) specs and its scheduler once started."""

    def __init__(self, app: Flask, specs: Iterable[JobSpec]) -> None:
        self.timezone: str = app.config["SCHEDULER_TIMEZONE"]
        self.static: dict[str, JobSpec] = {}
        for spec in specs:
            self._check(spec)
            self.static[spec.id] = spec
        self.dynamic: dict[str, JobSpec] = {}
        self.scheduler: BackgroundScheduler | None = None
        # Serialises refreshes (the start-up one and a timed or manual one may overlap). Our own lock,
        # never APScheduler's: stopping the scheduler does not take it, so it cannot deadlock a stop.
        self.sync_lock = threading.Lock()

    def _check(self, spec: JobSpec) -> None:
        try:
            make_trigger(spec, self.timezone)
        except ValueError as exc:
            raise StartupError(f"job {spec.id!r} has an invalid schedule: {exc}") from None

    def spec(self, job_id: str) -> JobSpec | None:
        """Return the spec of a declared or dynamic job."""
        return self.static.get(job_id) or self.dynamic.get(job_id)

    def specs(self) -> dict[str, JobSpec]:
        """Return every known spec by id."""
        return {**self.dynamic, **self.static}


def init_app(app: Flask) -> None:
    """Collect and check the job specs of every plugin; build and start nothing."""
    app.extensions[EXTENSION_KEY] = JobRegistry(app, get_plugins(app).jobs(app))


def registry(app: Flask | None = None) -> JobRegistry:
    """Return the job registry of the given app, or of the current app."""
    return (app or current_app).extensions[EXTENSION_KEY]


def job_specs(app: Flask) -> dict[str, JobSpec]:
    """Return the declared jobs by id."""
    return dict(registry(app).static)


class _ClaimingExecutor(ThreadPoolExecutor):
    """A thread pool that tells each firing its exact scheduled time (the key of its claim).

    APScheduler 3 does not pass the run time to the job function; it does pass it to the
    executor, so this executor puts it in a context variable around the standard run_job().
    """

    def start(self, scheduler, alias):
        super().start(scheduler, alias)
        self.futures: set = set()

    def wait_for_running(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the jobs running now; True when none is left.

        Called with no scheduler lock held, so a running job that adds or removes jobs (jobs:refresh)
        can finish (APScheduler's own shutdown(wait=True) waits while holding the job-store lock).
        """
        _, running = concurrent.futures.wait(set(getattr(self, "futures", ())), timeout=timeout)
        return not running

    def _do_submit_job(self, job, run_times):
        def callback(future):
            self.futures.discard(future)
            exc = future.exception()
            if exc:
                self._run_job_error(job.id, exc, getattr(exc, "__traceback__", None))
            else:
                self._run_job_success(job.id, future.result())

        future = self._pool.submit(_run_with_times, job, job._jobstore_alias, run_times, self._logger.name)
        self.futures.add(future)
        future.add_done_callback(callback)


def _run_with_times(job, jobstore_alias, run_times, logger_name):
    events = []
    for run_time in run_times:
        token = _scheduled_for.set(run_time)
        try:
            events.extend(run_job(job, jobstore_alias, [run_time], logger_name))
        finally:
            _scheduled_for.reset(token)
    return events


def _fire_from_scheduler(app: Flask, job_id: str) -> None:
    """What APScheduler calls: run one firing inside an app context, claiming it first."""
    with app.app_context():
        fire_job(job_id, _scheduled_for.get())


def fire_job(job_id: str, scheduled_for: datetime) -> JobRun | None:
    """Claim and run one firing of a known job in the current app context; None when not run here.

    The scheduler, `flask portal jobs run` and tests all come through here.
    """
    spec = registry().spec(job_id)
    if spec is None:
        # A dynamic job removed between its firing and now (e.g. its connection was revoked).
        log.info("job %s is no longer declared; firing at %s skipped", job_id, scheduled_for.isoformat())
        return None
    return fire(spec, scheduled_for)


def _add(scheduler: BackgroundScheduler, app: Flask, spec: JobSpec, *, run_now: bool = False) -> None:
    extra = {"next_run_time": datetime.now(timezone.utc)} if run_now else {}
    scheduler.add_job(
        _fire_from_scheduler,
        trigger=make_trigger(spec, registry(app).timezone),
        args=(app, spec.id),
        id=spec.id,
        name=spec.id,
        # Harmless with the memory store; required if a persistent job store is ever used.
        replace_existing=True,
        **extra,
    )


def build_scheduler(app: Flask) -> BackgroundScheduler:
    """Build (but do not start) a scheduler holding every declared and dynamic job."""
    jobs = registry(app)
    scheduler = BackgroundScheduler(
        timezone=jobs.timezone,
        executors={"default": _ClaimingExecutor()},
        job_defaults={
            # After downtime or a stall, run a missed job once, not once per missed time.
            "coalesce": True,
            # Never overlap a job with itself in this process; other processes are kept out by the claim.
            "max_instances": 1,
            # A firing delayed by a busy pool or a paused process still runs within this window;
            # later than that, the next scheduled time is the better one to run.
            "misfire_grace_time": app.config["SCHEDULER_MISFIRE_GRACE_SECONDS"],
        },
    )
    for spec in jobs.static.values():
        _add(scheduler, app, spec, run_now=not spec.claim)
    for spec in jobs.dynamic.values():
        _add(scheduler, app, spec)
    return scheduler


def start_scheduler(app: Flask) -> BackgroundScheduler:
    """Start this process's scheduler (once); only wsgi.py and `flask portal scheduler` call this."""
    jobs = registry(app)
    if jobs.scheduler is None or not jobs.scheduler.running:
        jobs.scheduler = build_scheduler(app)
        jobs.scheduler.start()
        log.info("scheduler started with %d jobs", len(jobs.scheduler.get_jobs()))
    return jobs.scheduler


def stop_scheduler(app: Flask, *, wait: bool = True, grace: float | None = None) -> bool:
    """Stop this process's scheduler; with ``wait``, give running jobs up to ``grace`` seconds to finish.

    Returns True when no job is still running. The scheduler is shut down without waiting (which
    would hold its job-store lock while a running jobs:refresh needs it: a deadlock), then the
    running jobs are waited for with no lock held. A run still going after the grace period is left
    to the process's end; its heartbeat stops and the next run resumes it from its last page.
    """
    jobs = registry(app)
    scheduler, jobs.scheduler = jobs.scheduler, None
    if scheduler is None or not scheduler.running:
        return True
    scheduler.shutdown(wait=False)
    done = True
    if wait:
        grace = app.config.get("SCHEDULER_SHUTDOWN_GRACE_SECONDS", 30) if grace is None else grace
        done = all(
            executor.wait_for_running(grace)
            for executor in scheduler._executors.values()
            if isinstance(executor, _ClaimingExecutor)
        )
    log.info("scheduler stopped" if done else "scheduler stopped with jobs still running after the grace period")
    return done


def sync_dynamic_jobs(app: Flask, specs: Iterable[JobSpec]) -> tuple[set[str], set[str]]:
    """Make the dynamic jobs exactly ``specs``; return the ids (added, removed).

    Jobs whose schedule changed are rescheduled. Declared (static) ids cannot be replaced.
    """
    jobs = registry(app)
    with jobs.sync_lock:
        return _sync(app, jobs, specs)


def _sync(app: Flask, jobs: JobRegistry, specs: Iterable[JobSpec]) -> tuple[set[str], set[str]]:
    wanted: dict[str, JobSpec] = {}
    for spec in specs:
        if spec.id in jobs.static:
            raise ValueError(f"dynamic job {spec.id!r} clashes with a declared job")
        jobs._check(spec)
        wanted[spec.id] = spec
    before = jobs.dynamic
    added = set(wanted) - set(before)
    removed = set(before) - set(wanted)
    changed = {
        job_id
        for job_id in set(wanted) & set(before)
        if (wanted[job_id].trigger, dict(wanted[job_id].trigger_args))
        != (before[job_id].trigger, dict(before[job_id].trigger_args))
    }
    jobs.dynamic = wanted
    scheduler = jobs.scheduler
    if scheduler is not None and scheduler.running:
        for job_id in removed:
            if scheduler.get_job(job_id):
                scheduler.remove_job(job_id)
        for job_id in added | changed:
            _add(scheduler, app, wanted[job_id])
    if added or removed:
        log.info("dynamic jobs synced: %d added, %d removed", len(added), len(removed))
    return added, removed
