"""Extract runs on real Celery workers with a real Redis broker, against the Wonde sandbox over HTTP (PostgreSQL).

PostgreSQL only: several worker processes sharing one database is the PostgreSQL deployment.
The test process plays the scheduler: it fires runs through portal.jobs.runner.fire (which, with
EXECUTOR "celery", only claims and enqueues) and calls the housekeeping tick executors.recover().
"""
from __future__ import annotations

import os
from collections import Counter

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.jobs import executors
from portal.jobs.builtin import extract_spec
from portal.jobs.runner import fire
from portal.models import JobRun, RunStatus
from portal.models.base import utcnow
from portal.retention.calendar import london_date
from portal.sandbox import synthetic
from portal.testing.conformance import Kit, Served
from tests import celery_support as cs

pytestmark = pytest.mark.slow

# Scheduled runs in the exactly-once test: the issue asks 200 (PORTAL_TEST_CELERY_RUNS=200); the
# default keeps the suite inside its time budget on a shared 2-core machine.
RUNS = int(os.environ.get("PORTAL_TEST_CELERY_RUNS", "40"))


class _Served(Served):
    def __init__(self, sandbox) -> None:
        self.sandbox = sandbox

    def synthetic_key(self, provider_id: str) -> str | None:
        return self.sandbox.synthetic_key(str(provider_id))

    def inject(self, fault: str, *, times: int = 1, skip: int = 0) -> None:
        raise NotImplementedError

    def request_count(self) -> int:
        return len(self.sandbox.requests())


@pytest.fixture
def world(backend, database_url, make_app, tmp_path):
    """Redis, a timed Wonde sandbox and a way to build the portal app and its workers, all torn down after."""
    if backend != "postgresql":
        pytest.skip("several worker processes share a database only on PostgreSQL")
    cs.require_services()
    redis = cs.RedisServer(tmp_path / "redis.log").start()
    started: list[cs.Worker] = []
    sandboxes = []

    class World:
        def serve(self, schools):
            sandbox = cs.timed_sandbox_class()(schools).start()
            sandboxes.append(sandbox)
            self.sandbox = sandbox
            self.settings = {**sandbox.settings, **cs.FAST}
            return sandbox

        def app(self, **extra):
            return make_app(
                PLUGINS=["portal_wonde.plugin"], ENABLED_CONNECTORS=["wonde"], CONNECTORS={"wonde": self.settings},
                EXECUTOR="celery", CELERY={"broker_url": redis.url}, JOB_LEASE_SECONDS=4, JOB_HEARTBEAT_SECONDS=1,
                JOB_REQUEUE_SECONDS=30, **extra,
            )

        def workers(self, count: int = 2, **extra):
            env = cs.worker_env(database_url, redis.url, self.settings, tmp_path / "instance", **extra)
            new = [cs.Worker(f"w{len(started) + i}", env, tmp_path / f"worker{len(started) + i}.log") for i in range(count)]
            started.extend(new)
            for worker in new:
                worker.wait_ready()
            return new

    w = World()
    w.redis = redis
    yield w
    for worker in started:
        worker.kill()  # the test is over: no need to wait for a warm shutdown
    for worker in started:
        # Shown by pytest only when the test failed.
        print(f"--- {worker.name} log (tail) ---\n{worker.output()[-3000:]}")
    redis.stop()
    for sandbox in sandboxes:
        sandbox.stop()


def _runs() -> list[JobRun]:
    db.session.expire_all()
    rows = list(db.session.scalars(select(JobRun).where(JobRun.kind == "extract").order_by(JobRun.id)))
    db.session.rollback()
    return rows


def _all_finished(expected: int):
    def check() -> bool:
        runs = _runs()
        check.seen = Counter(r.status.value for r in runs)
        return len(runs) == expected and all(r.status not in (RunStatus.queued, RunStatus.running) for r in runs)
    check.seen = Counter()
    check.describe = lambda: f"run statuses {dict(check.seen)}"
    return check


def _spec(connection_id: int):
    from portal_wonde.connector import WondeConnector

    return extract_spec(connection_id, WondeConnector)


def _assert_store(world, schools, connection_ids) -> None:
    served = _Served(world.sandbox)
    for school, connection_id in zip(schools, connection_ids):
        # Each school's first import is this test's run: staff already past R39 were never imported.
        Kit(None, school, served, None, connection_id, first_import_on=london_date(utcnow())).assert_store_matches()


def test_scheduled_runs_on_two_workers_run_exactly_once_and_fill_the_store(world):
    schools = synthetic.generate_schools(RUNS, 31, pupils=3, days=1)
    world.serve(schools)
    app = world.app()
    with app.app_context():
        ids = cs.add_connections(schools)
        world.workers(2)
        at = cs.now()
        queued = []
        for connection_id in ids:
            # Fired by two "scheduler processes": the claim keeps one.
            first = fire(_spec(connection_id), at)
            assert fire(_spec(connection_id), at) is None
            # Queued for the workers, never run here; a fast worker may already have picked it up.
            assert first.status in (RunStatus.queued, RunStatus.running, RunStatus.succeeded)
            assert first.claimed_by is None or f":{os.getpid()}:" not in first.claimed_by
            queued.append(first.id)
            if connection_id % 2:
                # The same message delivered twice must still run once.
                assert executors.enqueue(first.id)
        assert len(queued) == RUNS
        cs.wait_for(_all_finished(RUNS), f"{RUNS} runs to finish")
        runs = _runs()
        assert Counter(r.status for r in runs) == {RunStatus.succeeded: RUNS}, [r.error_message for r in runs][:3]
        assert {r.attempts for r in runs} == {1}
        assert {r.id for r in runs} == set(queued)
        _assert_store(world, schools, ids)


def test_a_worker_killed_mid_extract_is_resumed_by_the_other_from_its_checkpoint(world):
    schools = [synthetic.generate_school(7, pupils=40, days=15, phase="secondary", sixth_form=False)]
    sandbox = world.serve(schools)
    # Slow pages, so the run is surely mid-extract when its worker dies.
    sandbox.add_fault(match="/attendance", delay=0.4, times=None)
    app = world.app(EXTRACT_BATCH_SIZE=50)
    with app.app_context():
        [connection_id] = cs.add_connections(schools)
        first, second = world.workers(2, EXTRACT_BATCH_SIZE=50)
        run = fire(_spec(connection_id), cs.now())

        def checkpointed() -> bool:
            row = db.session.get(JobRun, run.id)
            db.session.refresh(row)
            done = row.status == RunStatus.running and bool((row.stats or {}).get("pages")) and "attendance" in str(row.stats.get("checkpoint"))
            db.session.rollback()
            return done

        cs.wait_for(checkpointed, "the run to commit attendance pages")
        owner_pid = int(db.session.get(JobRun, run.id).claimed_by.split(":")[1])
        db.session.rollback()
        victim = first if first.owns(owner_pid) else second
        assert victim.owns(owner_pid)
        victim.kill()
        sandbox.clear_faults()
        cs.wait_for(_all_finished(1), "the run to finish on the other worker", tick=executors.recover)
        [done] = _runs()
        assert done.status == RunStatus.succeeded, done.error_message
        assert done.attempts == 2
        assert int(done.claimed_by.split(":")[1]) != owner_pid
        _assert_store(world, schools, [connection_id])


def test_runs_wait_queued_while_the_broker_is_down_then_complete_once(world):
    schools = synthetic.generate_schools(6, 41, pupils=4, days=1)
    world.serve(schools)
    app = world.app()
    with app.app_context():
        ids = cs.add_connections(schools)
        world.workers(2)
        at = cs.now()
        before = [fire(_spec(cid), at) for cid in ids[:3]]
        world.redis.stop()
        during = [fire(_spec(cid), at) for cid in ids[3:]]
        for run in during:
            assert run.status == RunStatus.queued
            assert run.error_code == executors.BROKER_UNAVAILABLE
            assert "could not be reached" in run.error_message
        assert executors.recover() == 0  # still down: nothing sent, nothing lost
        assert {r.status for r in _runs() if r.id in {x.id for x in during}} == {RunStatus.queued}
        world.redis.start()
        cs.wait_for(_all_finished(6), "the queued runs to complete", every=0.5, tick=executors.recover)
        runs = _runs()
        assert {r.id for r in runs} == {r.id for r in before + during}
        assert Counter(r.status for r in runs) == {RunStatus.succeeded: 6}
        assert {r.attempts for r in runs} == {1}
        assert not any(r.error_code for r in runs)
        _assert_store(world, schools, ids)


def test_the_provider_concurrency_limit_holds_across_workers(world):
    schools = synthetic.generate_schools(4, 51, pupils=6, days=2)
    sandbox = world.serve(schools)
    sandbox.add_fault(match="/students", delay=0.2, times=None)
    limits = {"wonde": 1}
    app = world.app(PROVIDER_CONCURRENCY=limits)
    with app.app_context():
        ids = cs.add_connections(schools)
        world.workers(2, PROVIDER_CONCURRENCY=limits)
        at = cs.now()
        for cid in ids:
            fire(_spec(cid), at)
        cs.wait_for(_all_finished(4), "the runs to finish")
        assert {r.status for r in _runs()} == {RunStatus.succeeded}
        # The sandbox's request log: each school's requests form one span, and no two spans overlap.
        spans: dict[str, list[float]] = {}
        for path, began, ended in sandbox.timings:
            parts = path.split("/")
            if len(parts) > 4 and parts[2] == "schools":
                span = spans.setdefault(parts[3], [began, ended])
                span[0], span[1] = min(span[0], began), max(span[1], ended)
        assert len(spans) == 4
        ordered = sorted(spans.values())
        for earlier, later in zip(ordered, ordered[1:]):
            assert earlier[1] <= later[0], "two schools were extracted from Wonde at the same time"


def test_the_provider_request_rate_limit_holds_across_workers(world):
    import bisect

    schools = synthetic.generate_schools(6, 61, pupils=6, days=2)
    sandbox = world.serve(schools)
    rate = 8
    limits = {"wonde": rate}
    app = world.app(PROVIDER_REQUESTS_PER_SECOND=limits)
    with app.app_context():
        ids = cs.add_connections(schools)
        first, second = world.workers(2, PROVIDER_REQUESTS_PER_SECOND=limits)
        at = cs.now()
        for cid in ids:
            fire(_spec(cid), at)
        cs.wait_for(_all_finished(6), "the runs to finish")
        runs = _runs()
        assert {r.status for r in runs} == {RunStatus.succeeded}
        # Both worker processes (machines, in a deployment) sent requests, at the same time.
        pids = {int(r.claimed_by.split(":")[1]) for r in runs}
        assert any(first.owns(p) for p in pids) and any(second.owns(p) for p in pids)
        spans = [(r.started_at, r.finished_at, first.owns(int(r.claimed_by.split(":")[1]))) for r in runs]
        assert any(a[0] < b[1] and b[0] < a[1] and a[2] != b[2] for a in spans for b in spans)
        # The sandbox's request log: in any 3-second window at most rate × 3 requests, plus the
        # bucket's burst of one and two for requests delayed on their way in (the sandbox stamps a
        # request when it reads it, which a loaded machine can bunch). Unlimited, the same runs
        # send about 60 requests a second.
        starts = sorted(began for _, began, _ in sandbox.timings)
        window = 3.0
        assert len(starts) > rate * window * 1.5  # enough requests for the limit to matter
        busiest = max(bisect.bisect_left(starts, t + window) - i for i, t in enumerate(starts))
        assert busiest <= rate * window + 3, f"{busiest} requests reached Wonde within {window} s (limit {rate}/s)"


def test_run_now_from_the_support_page_is_run_by_a_worker(world):
    from portal.models import User
    from tests.conftest import Auth
    from tests.factories import user

    schools = synthetic.generate_schools(1, 71, pupils=3, days=1)
    world.serve(schools)
    app = world.app()
    with app.app_context():
        [cid] = cs.add_connections(schools)
        staff = user(support=True)
        db.session.commit()
        world.workers(1)
        client = app.test_client()
        Auth(client).login(db.session.get(User, staff.id))
        page = client.post("/admin/operations/run", data={"connection_id": cid, "category": "student_basic"},
                           follow_redirects=True).get_data(as_text=True)
        assert "queued as run" in page and "a worker will run it" in page
        cs.wait_for(_all_finished(1), "the queued run to finish")
        [run] = _runs()
        assert run.status == RunStatus.succeeded, run.error_message
        assert run.params["mode"] == "full" and run.params["categories"] == ["student_basic"]
        assert run.claimed_by.split(":")[1] != str(os.getpid())  # a worker ran it, not this (web) process
