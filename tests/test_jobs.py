"""Jobs: declared as data, each firing claimed once, recorded with a typed error, taken over when its process dies."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, update

from portal.connectors import AuthorisationLost
from portal.errors import StartupError
from portal.extensions import db
from portal.jobs import JobSpec
from portal.jobs.claims import MAX_ATTEMPTS, claim_run, finish, heartbeat, take_over
from portal.jobs.runner import JobFailed, fire
from portal.jobs.scheduler import build_scheduler, fire_job, job_specs, registry
from portal.models import AuditEntry, Connection, ConnectionState, ErrorKind, JobRun, RunStatus
from portal.models.base import utcnow
from tests.plugins.ticking_jobs import ONCE, TICK
from tests.test_plugins import plugin_module  # noqa: F401  (fixture)

AT = datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)
TICKING = {"PLUGINS": ["tests.plugins.fake_connector", "tests.plugins.ticking_jobs"]}


@pytest.fixture
def ticking(make_app):
    """An app whose plugins add the test jobs (test:tick, test:once), with an app context pushed."""
    app = make_app(**TICKING)
    with app.app_context():
        yield app


def audit_count(action: str) -> int:
    return db.session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action))


def lapse(run: JobRun) -> None:
    """Make a running run look like its process died: the lease ran out a minute ago."""
    db.session.execute(
        update(JobRun).where(JobRun.id == run.id).values(lease_expires_at=utcnow() - timedelta(minutes=1))
    )
    db.session.commit()


# ---------------------------------------------------------------- declaration


def test_core_jobs_are_declared_and_nothing_is_started(app):
    # Other default plugins declare jobs of their own; these are the core's.
    assert {"retention:sweep", "jobs:refresh", "jobs:recover"} <= set(job_specs(app))
    assert registry(app).scheduler is None
    sweep = job_specs(app)["retention:sweep"]
    assert (sweep.trigger, dict(sweep.trigger_args)) == ("cron", {"hour": 2, "minute": 0})
    assert not job_specs(app)["jobs:refresh"].claim and not job_specs(app)["jobs:recover"].claim


def test_scheduler_is_built_with_deliberate_defaults_in_london_time(app):
    scheduler = build_scheduler(app)
    assert not scheduler.running
    assert str(scheduler.timezone) == "Europe/London"
    assert scheduler._job_defaults == {"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}
    sweep = scheduler.get_job("retention:sweep")
    # 02:00 London in summer time is 01:00 UTC.
    summer = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)
    assert sweep.trigger.get_next_fire_time(None, summer).astimezone(timezone.utc) == datetime(
        2026, 7, 2, 1, 0, tzinfo=timezone.utc
    )


def test_interval_jobs_fire_at_the_same_times_in_every_process(make_app):
    first, second = make_app(**TICKING), make_app(**TICKING)
    now = datetime.now(timezone.utc)
    times = [build_scheduler(app).get_job(TICK).trigger.get_next_fire_time(None, now) for app in (first, second)]
    assert times[0] == times[1]
    assert times[0].microsecond == 0


@pytest.mark.parametrize(
    ("trigger", "args", "problem"),
    [
        ("interval", {"seconds": 5, "jitter": 2}, "jitter is not allowed"),
        ("cron", {"hour": 25}, "invalid schedule"),
        ("every", {}, "trigger must be one of"),
        ("cron", {"hours": 2}, "invalid schedule"),
    ],
)
def test_bad_job_schedules_stop_start_up(app, trigger, args, problem):
    from portal.jobs.scheduler import JobRegistry

    with pytest.raises(StartupError, match=problem) as err:
        JobRegistry(app, [JobSpec("bad:job", lambda: None, trigger, args)])
    assert "bad:job" in str(err.value)


def test_bad_housekeeping_interval_stops_start_up(make_app):
    with pytest.raises(StartupError, match="PORTAL_JOB_RECOVER_SECONDS is invalid"):
        make_app(JOB_RECOVER_SECONDS=0)


def test_a_connector_with_a_bad_schedule_stops_start_up(make_app, plugin_module):
    name = plugin_module(
        """
        from portal.plugins import hookimpl
        from tests.plugins.fake_connector import FakeConnector

        class Hourly(FakeConnector):
            name = "hourly"
            schedule = {"trigger": "cron", "hour": "26"}

        @hookimpl
        def portal_register_connectors():
            return [Hourly]
        """
    )
    with pytest.raises(StartupError, match="connector 'hourly' has an invalid schedule"):
        make_app(PLUGINS=["tests.plugins.fake_connector", name], ENABLED_CONNECTORS=["fake", "hourly"])


# ---------------------------------------------------------------- claims


def test_a_scheduled_time_is_claimed_once(app):
    run = claim_run("demo:job", AT, kind="test", owner="host-a:1:aa")
    assert run.status == RunStatus.running and run.attempts == 1 and run.claimed_by == "host-a:1:aa"
    lease = (run.lease_expires_at - run.claimed_at).total_seconds()
    assert lease == app.config["JOB_LEASE_SECONDS"]
    assert claim_run("demo:job", AT, kind="test", owner="host-b:2:bb") is None
    # The same instant written in another timezone is the same scheduled time.
    assert claim_run("demo:job", AT.astimezone(timezone(timedelta(hours=1))), kind="test", owner="host-b:2:bb") is None
    later = claim_run("demo:job", AT + timedelta(days=1), kind="test", owner="host-b:2:bb")
    assert later is not None and later.id != run.id
    assert db.session.scalar(select(func.count()).select_from(JobRun)) == 2


def test_claims_refuse_naive_times(app):
    with pytest.raises(ValueError, match="timezone-aware"):
        claim_run("demo:job", AT.replace(tzinfo=None), kind="test", owner="me")


def test_firing_twice_for_one_time_runs_the_body_once(ticking):
    run = fire_job(TICK, AT)
    assert fire_job(TICK, AT) is None
    assert run.status == RunStatus.succeeded
    assert run.stats == {"ticks": 1}
    assert run.finished_at >= run.started_at and run.lease_expires_at is None
    assert audit_count("test.tick") == 1


def test_housekeeping_jobs_run_in_every_process_without_a_run_row(app):
    assert fire_job("jobs:refresh", AT) is None
    assert fire_job("jobs:refresh", AT) is None
    assert db.session.scalar(select(func.count()).select_from(JobRun)) == 0


def test_heartbeat_extends_the_lease_until_the_run_is_cancelled(app):
    run = claim_run("demo:job", AT, kind="test", owner="me")
    lapse(run)
    assert heartbeat(run)
    assert run.lease_expires_at > utcnow() + timedelta(seconds=app.config["JOB_LEASE_SECONDS"] - 60)
    # Cancelled elsewhere (e.g. the school revoked): the lease is not extended and the run stays cancelled.
    db.session.execute(update(JobRun).where(JobRun.id == run.id).values(status=RunStatus.cancelled))
    db.session.commit()
    assert not heartbeat(run)
    assert not finish(run, RunStatus.succeeded)
    assert db.session.get(JobRun, run.id).status == RunStatus.cancelled


def test_a_running_job_keeps_its_lease_alive_while_its_body_works(make_app):
    app = make_app(JOB_HEARTBEAT_SECONDS=1)

    def body(run_id: int) -> dict:
        claimed = db.session.get(JobRun, run_id).heartbeat_at
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            db.session.rollback()  # end the read, so the heartbeat can write and we see it
            run = db.session.get(JobRun, run_id)
            if run.heartbeat_at > claimed:
                return {"lease_extended_to": run.lease_expires_at.isoformat()}
            time.sleep(0.1)
        raise JobFailed("No heartbeat arrived.", code="no_heartbeat")

    with app.app_context():
        run = fire(JobSpec("demo:long", body), AT)
        assert run.status == RunStatus.succeeded, run.error_code
        extended = datetime.fromisoformat(run.stats["lease_extended_to"])
        assert extended > run.claimed_at + timedelta(seconds=app.config["JOB_LEASE_SECONDS"])


def test_finish_refuses_unfinished_statuses(app):
    run = claim_run("demo:job", AT, kind="test", owner="me")
    with pytest.raises(ValueError, match="not a finished status"):
        finish(run, RunStatus.queued)


# ---------------------------------------------------------------- how runs end


def test_an_unexpected_error_is_recorded_without_its_text_or_traceback(app, caplog):
    def body():
        raise ValueError("pupil Jane Example has no UPN")

    run = fire(JobSpec("demo:broken", body), AT)
    assert run.status == RunStatus.failed
    assert (run.error_kind, run.error_code) == (ErrorKind.internal, "unexpected_error")
    assert "Jane" not in run.error_message and "Traceback" not in run.error_message
    assert str(run.id) in caplog.text or "demo:broken" in caplog.text
    assert "Jane" not in caplog.text


def test_typed_failures_keep_their_kind_code_and_message(app):
    def lost():
        raise AuthorisationLost("The school switched off access in its MIS.")

    def refused():
        raise JobFailed("Nothing to do for this school.", code="nothing_to_do", kind=ErrorKind.school_action)

    first = fire(JobSpec("demo:lost", lost), AT)
    second = fire(JobSpec("demo:refused", refused), AT)
    assert (first.status, first.error_kind, first.error_code) == (RunStatus.failed, ErrorKind.school_action, "authorisation_lost")
    assert first.error_message == "The school switched off access in its MIS."
    assert (second.error_kind, second.error_code, second.error_message) == (
        ErrorKind.school_action, "nothing_to_do", "Nothing to do for this school."
    )


def test_a_body_that_finishes_its_own_run_is_left_as_it_said(app):
    def body(run_id: int):
        finish(db.session.get(JobRun, run_id), RunStatus.held, stats={"held": 1})
        return {"ignored": True}

    run = fire(JobSpec("demo:holds", body), AT)
    assert run.status == RunStatus.held
    assert run.stats == {"held": 1}


# ---------------------------------------------------------------- takeover


def test_a_run_left_by_a_dead_process_is_taken_over_and_completes_once(ticking):
    run = claim_run(ONCE, AT, kind="test", owner="dead-host:1:aa")
    fresh = claim_run(ONCE, AT + timedelta(hours=1), kind="test", owner="live-host:2:bb")
    lapse(run)
    fire_job("jobs:recover", utcnow())
    fire_job("jobs:recover", utcnow())
    done = db.session.get(JobRun, run.id)
    assert done.status == RunStatus.succeeded and done.attempts == 2
    assert done.claimed_by not in ("dead-host:1:aa", None)
    assert done.stats == {"recovered": 1}
    assert audit_count("test.once") == 1
    # A run whose process is alive (lease not lapsed) is left alone.
    assert db.session.get(JobRun, fresh.id).status == RunStatus.running
    # The dead process, should it wake up, can no longer write over the run.
    assert not finish(run, RunStatus.failed, owner="dead-host:1:aa")


def test_only_one_process_takes_over_a_lapsed_run(app):
    run = claim_run("demo:job", AT, kind="test", owner="dead")
    lapse(run)
    assert take_over(run.id, "first").claimed_by == "first"
    assert take_over(run.id, "second") is None
    assert db.session.get(JobRun, run.id).attempts == 2


def test_a_run_that_keeps_killing_its_process_is_not_tried_again(app):
    run = claim_run("demo:job", AT, kind="test", owner="dead")
    db.session.execute(update(JobRun).where(JobRun.id == run.id).values(attempts=MAX_ATTEMPTS))
    lapse(run)
    assert take_over(run.id, "next") is None
    failed = db.session.get(JobRun, run.id)
    assert (failed.status, failed.error_kind, failed.error_code) == (RunStatus.failed, ErrorKind.internal, "interrupted")


def test_a_lapsed_run_of_a_job_no_longer_declared_is_closed(app):
    run = claim_run("gone:job", AT, kind="test", owner="dead")
    lapse(run)
    fire_job("jobs:recover", utcnow())
    closed = db.session.get(JobRun, run.id)
    assert (closed.status, closed.error_code) == (RunStatus.failed, "not_declared")


# ---------------------------------------------------------------- extract jobs follow the connections


def connection(make, state: ConnectionState, *, connector: str = "fake", paused: bool = False) -> Connection:
    conn = Connection(school_id=make.school().id, connector=connector, state=state, paused=paused)
    db.session.add(conn)
    db.session.commit()
    return conn


def test_refresh_schedules_one_extract_per_extractable_connection(app, make):
    approved = connection(make, ConnectionState.approved)
    failing = connection(make, ConnectionState.failing)
    connection(make, ConnectionState.approved, paused=True)
    connection(make, ConnectionState.pending)
    connection(make, ConnectionState.approved, connector="wonde")  # installed nowhere / not enabled
    fire_job("jobs:refresh", AT)
    dynamic = registry(app).dynamic
    assert set(dynamic) == {f"extract:{approved.id}", f"extract:{failing.id}"}
    spec = dynamic[f"extract:{approved.id}"]
    assert (spec.kind, spec.connection_id, dict(spec.kwargs)) == ("extract", approved.id, {"connection_id": approved.id})
    # The fake connector's schedule is "cron hour=2": schools spread over the hour by id.
    assert dict(spec.trigger_args) == {"hour": 2, "minute": approved.id % 60}

    approved.state = ConnectionState.revoked
    db.session.commit()
    fire_job("jobs:refresh", AT)
    assert set(registry(app).dynamic) == {f"extract:{failing.id}"}


def test_refresh_adds_and_removes_jobs_in_a_running_scheduler(app, make):
    from portal.jobs.scheduler import start_scheduler, stop_scheduler

    approved = connection(make, ConnectionState.approved)
    # Started explicitly here (tests never start it implicitly) and stopped before the test ends.
    scheduler = start_scheduler(app)
    try:
        fire_job("jobs:refresh", AT)
        job = scheduler.get_job(f"extract:{approved.id}")
        assert job is not None and job.next_run_time.minute == approved.id % 60
        approved.paused = True
        db.session.commit()
        fire_job("jobs:refresh", AT)
        assert scheduler.get_job(f"extract:{approved.id}") is None
    finally:
        stop_scheduler(app)
    assert registry(app).scheduler is None


def test_stopping_the_scheduler_while_a_refresh_adds_jobs_never_deadlocks(app, make, monkeypatch):
    """APScheduler's shutdown(wait=True) held its job-store lock while the refresh job waited for it (issue 15.11)."""
    import threading

    from apscheduler.schedulers.base import STATE_STOPPED

    from portal.jobs import scheduler as scheduling
    from portal.jobs.scheduler import start_scheduler, stop_scheduler

    connection(make, ConnectionState.approved)
    real_add = scheduling._add
    entered = threading.Event()

    def add_once_stopping(scheduler, *args, **kwargs):
        if scheduler.state != STATE_STOPPED:
            # The refresh job, in the running scheduler, is about to add a job: hold it until the stop has begun.
            entered.set()
            for _ in range(500):
                if scheduler.state == STATE_STOPPED:
                    break
                threading.Event().wait(0.01)
        return real_add(scheduler, *args, **kwargs)

    monkeypatch.setattr(scheduling, "_add", add_once_stopping)
    for _ in range(20):
        entered.clear()
        registry(app).dynamic = {}
        start_scheduler(app)  # housekeeping (jobs:refresh) fires at once on start and adds the extract job
        assert entered.wait(30), "the refresh job did not run"
        assert stop_scheduler(app, grace=30) is True
        assert registry(app).scheduler is None


def test_a_job_still_running_after_the_grace_period_does_not_hold_the_stop(app):
    import threading

    from portal.jobs.scheduler import start_scheduler, stop_scheduler

    started, release = threading.Event(), threading.Event()

    def long_job():
        started.set()
        release.wait(60)

    scheduler = start_scheduler(app)
    try:
        # An interval job (not a one-off date job, which APScheduler removes after it ran, racing the stop).
        scheduler.add_job(long_job, "interval", hours=1, next_run_time=datetime.now(timezone.utc), id="test:long")
        assert started.wait(30)
        before = time.monotonic()
        assert stop_scheduler(app, grace=0.5) is False  # stopped, with the job left to the process's end
        assert time.monotonic() - before < 10
        assert registry(app).scheduler is None
    finally:
        release.set()


def test_the_retention_job_runs_the_sweep_in_the_claimed_run(app):
    run = fire_job("retention:sweep", AT)
    assert run.job_id == "retention:sweep" and run.kind == "retention"
    assert run.status == RunStatus.succeeded, (run.error_code, run.error_message)
    assert db.session.scalar(select(func.count()).select_from(JobRun)) == 1


def test_an_extract_job_runs_the_engine_in_the_claimed_run(app, make):
    conn = connection(make, ConnectionState.approved)
    fire_job("jobs:refresh", AT)
    run = fire_job(f"extract:{conn.id}", AT)
    assert run.job_id == f"extract:{conn.id}" and run.connection_id == conn.id and run.kind == "extract"
    # The engine itself ran and decided: no product is authorised to use this school's data yet.
    assert (run.status, run.error_kind, run.error_code) == (RunStatus.failed, ErrorKind.school_action, "nothing_authorised")
    assert run.finished_at is not None
    assert db.session.scalar(select(func.count()).select_from(JobRun)) == 1


# ---------------------------------------------------------------- commands


def test_jobs_commands_list_and_run_a_job(ticking):
    runner = ticking.test_cli_runner()
    listed = runner.invoke(args=["portal", "jobs", "list"])
    assert listed.exit_code == 0, listed.output
    assert "retention:sweep\tcron(hour=2, minute=0)" in listed.output
    assert "jobs:refresh\tinterval(seconds=300)  [every process]" in listed.output
    ran = runner.invoke(args=["portal", "jobs", "run", TICK])
    assert ran.exit_code == 0, ran.output
    assert "succeeded" in ran.output
    assert audit_count("test.tick") == 1
    missing = runner.invoke(args=["portal", "jobs", "run", "nope:job"])
    assert missing.exit_code == 2 and "no job 'nope:job'" in missing.output
