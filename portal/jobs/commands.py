"""Commands for jobs: run the scheduler in the foreground, list the jobs, run one job now."""
from __future__ import annotations

import os
import signal
import sys
import threading
from datetime import datetime, timezone

import click
from flask import current_app
from flask.cli import with_appcontext

from portal.gc_settings import tune_for_long_runs
from portal.jobs.builtin import extract_specs
from portal.jobs.runner import fire
from portal.jobs.scheduler import registry, start_scheduler, stop_scheduler


def register(group: click.Group) -> None:
    """Add this area's commands to the `portal` group."""
    group.add_command(scheduler_command)
    group.add_command(jobs_group)


@click.command("scheduler")
@with_appcontext
def scheduler_command() -> None:
    """Run the scheduler in the foreground until SIGTERM or Ctrl-C, then stop cleanly.

    Safe to run in several processes or machines on one database: each firing runs once.
    """
    app = current_app._get_current_object()
    stopping = threading.Event()

    def request_stop(signum, frame):
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    done = True
    tune_for_long_runs()
    try:
        scheduler = start_scheduler(app)
        click.echo(f"Scheduler running with {len(scheduler.get_jobs())} jobs; stop with Ctrl-C or SIGTERM.")
        stopping.wait()
        grace = app.config["SCHEDULER_SHUTDOWN_GRACE_SECONDS"]
        click.echo(f"Stopping: waiting up to {grace} seconds for running jobs to finish.")
    finally:
        done = stop_scheduler(app, wait=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not done:
        # Job threads would keep the interpreter alive at exit: end now. Their runs stop
        # heartbeating and the next run (here or in another process) resumes them from their last page.
        click.echo("Scheduler stopped; runs still going were left to resume in the next process.")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    click.echo("Scheduler stopped.")


@click.group("jobs")
def jobs_group() -> None:
    """Scheduled jobs and their runs."""


@jobs_group.command("list")
@with_appcontext
def jobs_list() -> None:
    """List the declared jobs and the extract jobs the database implies."""
    specs = {**{s.id: s for s in extract_specs(current_app)}, **registry().specs()}
    for job_id in sorted(specs):
        spec = specs[job_id]
        args = ", ".join(f"{k}={v}" for k, v in spec.trigger_args.items())
        click.echo(f"{job_id}\t{spec.trigger}({args}){'' if spec.claim else '  [every process]'}")


@jobs_group.command("run")
@click.argument("job_id")
@with_appcontext
def jobs_run(job_id: str) -> None:
    """Run one job now, in this process, recorded like a scheduled run."""
    specs = {**{s.id: s for s in extract_specs(current_app)}, **registry().specs()}
    spec = specs.get(job_id)
    if spec is None:
        raise click.BadParameter(f"no job {job_id!r}; `flask portal jobs list` shows them", param_hint="JOB_ID")
    run = fire(spec, datetime.now(timezone.utc))
    if run is None:
        click.echo(f"Ran {job_id}." if not spec.claim else f"{job_id} is already claimed for this time; not run.")
        return
    click.echo(f"Run {run.id} of {job_id}: {run.status.value}" + (f" ({run.error_code})" if run.error_code else ""))
    if run.status.value == "failed":
        raise SystemExit(1)
