"""Two real scheduler processes on one PostgreSQL database run every firing exactly once.

PostgreSQL only: several processes (or machines) sharing one database is the PostgreSQL
deployment; SQLite is one process on one machine, where the same claims are tested in
test_jobs.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.plugins.ticking_jobs import ONCE, TICK
from tests.scheduler_app import DATABASE_ENV, OVERRIDES_ENV

ROOT = Path(__file__).resolve().parent.parent
TICKS_WANTED = 10
DEADLINE_SECONDS = 90


@pytest.fixture
def pg_url(backend, database_url):
    """This test's PostgreSQL database (the test is skipped on SQLite)."""
    if backend != "postgresql":
        pytest.skip("several scheduler processes share a database only on PostgreSQL")
    return database_url


def start_scheduler_process(url: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    env[DATABASE_ENV] = url
    env[OVERRIDES_ENV] = json.dumps({"PLUGINS": ["tests.plugins.fake_connector", "tests.plugins.ticking_jobs"]})
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "tests.scheduler_app:build()", "portal", "scheduler"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, what: str) -> None:
    """Poll the database until ``condition()`` holds, failing after DEADLINE_SECONDS."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def stop(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results.append((proc.returncode, out + err))
    return results


@pytest.mark.slow
def test_two_processes_run_each_scheduled_time_once_and_recover_a_dead_run(pg_url, make_app):
    from portal import audit
    from portal.extensions import db
    from portal.models import AuditEntry, JobRun, RunStatus
    from portal.models.base import utcnow

    app = make_app(PLUGINS=["tests.plugins.fake_connector", "tests.plugins.ticking_jobs"])
    with app.app_context():
        # A run whose process died: still "running", lease lapsed. Exactly one process takes it over.
        dead = JobRun(
            job_id=ONCE, kind="test", scheduled_for=utcnow() - timedelta(hours=1), status=RunStatus.running,
            claimed_by="dead-host:1:000000", claimed_at=utcnow() - timedelta(hours=1),
            lease_expires_at=utcnow() - timedelta(minutes=5), attempts=1, params={}, stats={},
        )
        db.session.add(dead)
        db.session.commit()
        dead_id = dead.id

        def count(*where) -> int:
            db.session.rollback()  # see other processes' commits
            return db.session.scalar(select(func.count()).select_from(JobRun).where(*where))

        procs = [start_scheduler_process(pg_url), start_scheduler_process(pg_url)]
        try:
            wait_for(
                lambda: count(JobRun.job_id == TICK, JobRun.status == RunStatus.succeeded) >= TICKS_WANTED
                and count(JobRun.id == dead_id, JobRun.status == RunStatus.succeeded) == 1,
                f"{TICKS_WANTED} ticks and the recovered run",
            )
        finally:
            results = stop(procs)
        for code, output in results:
            assert code == 0, output[-3000:]
            assert "Scheduler stopped." in output

        db.session.rollback()
        runs = db.session.scalars(select(JobRun).where(JobRun.job_id == TICK)).all()
        assert {run.status for run in runs} == {RunStatus.succeeded}
        times = Counter(run.scheduled_for for run in runs)
        assert times.most_common(1)[0][1] == 1, "a scheduled time ran twice"
        # Each scheduled time is a whole second, the same in both processes.
        assert all(t.microsecond == 0 for t in times)
        ticks = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "test.tick")).all()
        assert len(ticks) == len(times) >= TICKS_WANTED
        assert sorted(int(t.target_id) for t in ticks) == sorted(run.id for run in runs)

        # Both processes were firing the same times: some firings were won, some skipped as claimed.
        outputs = [output for _, output in results]
        assert all(f"job {TICK} at" in output for output in outputs)
        assert sum(output.count("already claimed by another process") for output in outputs) >= 1
        owners = {run.claimed_by for run in runs}
        assert 1 <= len(owners) <= 2

        recovered = db.session.get(JobRun, dead_id)
        assert recovered.status == RunStatus.succeeded
        assert recovered.attempts == 2
        assert recovered.claimed_by != "dead-host:1:000000"
        assert recovered.stats == {"recovered": 1}
        assert db.session.scalar(select(func.count()).where(AuditEntry.action == "test.once")) == 1
        assert count(JobRun.status == RunStatus.running) == 0
        assert audit.verify().ok
