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


class SchedulerProcess:
    """`flask portal scheduler` in a process of its own, its output going to a file the test can read."""

    def __init__(self, url: str, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
        env[DATABASE_ENV] = url
        env[OVERRIDES_ENV] = json.dumps({"PLUGINS": ["tests.plugins.fake_connector", "tests.plugins.ticking_jobs"]})
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "tests.scheduler_app:build()", "portal", "scheduler"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text()

    def fired(self) -> bool:
        """Whether this process has fired the ticking job (claimed or skipped) at least once."""
        return f"job {TICK} at" in self.output()

    def stop(self) -> int:
        """Send SIGTERM and return the exit code once the process has shut down."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def wait_for(condition, what: str) -> None:
    """Poll the database until ``condition()`` holds, failing after DEADLINE_SECONDS."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_two_processes_run_each_scheduled_time_once_and_recover_a_dead_run(pg_url, make_app, tmp_path):
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

        procs = [SchedulerProcess(pg_url, tmp_path / "first.log"), SchedulerProcess(pg_url, tmp_path / "second.log")]
        try:
            # Both processes are up and firing, then enough ticks ran while they competed.
            wait_for(lambda: all(p.fired() for p in procs), "both processes to fire")
            firsts = count(JobRun.job_id == TICK)
            wait_for(
                lambda: count(JobRun.job_id == TICK, JobRun.status == RunStatus.succeeded) >= firsts + TICKS_WANTED
                and count(JobRun.id == dead_id, JobRun.status == RunStatus.succeeded) == 1,
                f"{TICKS_WANTED} more ticks and the recovered run",
            )
        finally:
            codes = [p.stop() for p in procs]
        outputs = [p.output() for p in procs]
        for code, output in zip(codes, outputs):
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
