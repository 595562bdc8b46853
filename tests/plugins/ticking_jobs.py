"""A test plugin with two jobs whose bodies leave one audit entry per run: one every second, one never fired."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Flask

from portal import audit
from portal.jobs import JobSpec
from portal.plugins import hookimpl

TICK = "test:tick"
# Never fired by its trigger: runs only when a test leaves a run of it for recovery.
ONCE = "test:once"


def tick(run_id: int) -> dict:
    """Record this run; the runner commits it together with the run's success."""
    audit.record("test.tick", target_type="job_run", target_id=run_id, details={"run_id": run_id})
    return {"ticks": 1}


def once(run_id: int) -> dict:
    """Record this run of the job a test left for recovery."""
    audit.record("test.once", target_type="job_run", target_id=run_id, details={"run_id": run_id})
    return {"recovered": 1}


@hookimpl
def portal_register_jobs(app: Flask) -> list[JobSpec]:
    return [
        JobSpec(TICK, tick, "interval", {"seconds": 1}, kind="test"),
        JobSpec(ONCE, once, "date", {"run_date": datetime(2099, 1, 1, tzinfo=timezone.utc)}, kind="test"),
    ]
