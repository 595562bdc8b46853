"""The Celery executor's database side, on SQLite and PostgreSQL: queued claims, the atomic start, broker down."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from portal.errors import StartupError
from portal.extensions import db
from portal.jobs import JobSpec, get_executor
from portal.jobs.claims import BROKER_UNAVAILABLE, REQUESTED, start_queued
from portal.jobs.runner import fire
from portal.models import JobRun, RunStatus
from tests import celery_support as cs

WHEN = datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)
ran: list[int] = []


def _body() -> dict:
    ran.append(1)
    return {"done": 1}


SPEC = JobSpec("test:celery", _body, "cron", {"hour": 3}, kind="test")


def test_the_executor_is_chosen_once_at_start_up(make_app):
    assert get_executor(make_app()).name == "inprocess"
    pytest.importorskip("celery", reason="celery[redis] is not installed (pip install -e '.[celery]')")
    app = make_app(EXECUTOR="celery", CELERY={"broker_url": f"redis://127.0.0.1:{cs.free_port()}/0"})
    assert get_executor(app).name == "celery" and get_executor(app).shared


def test_celery_without_a_broker_url_refuses_to_start(make_app):
    with pytest.raises(StartupError, match="PORTAL_CELERY__broker_url is missing"):
        make_app(EXECUTOR="celery")


@pytest.fixture
def down_app(make_app):
    """A celery-executor app whose broker address answers nothing."""
    pytest.importorskip("celery", reason="celery[redis] is not installed (pip install -e '.[celery]')")
    app = make_app(EXECUTOR="celery", CELERY={"broker_url": f"redis://127.0.0.1:{cs.free_port()}/0"})
    with app.app_context():
        yield app


def test_with_the_broker_down_a_fired_run_waits_queued_with_a_clear_message(down_app):
    ran.clear()
    run = fire(SPEC, WHEN)
    assert ran == []  # not executed here: only claimed and (unsuccessfully) sent
    assert run.status == RunStatus.queued
    assert run.error_code == BROKER_UNAVAILABLE
    assert "could not be reached" in run.error_message
    assert fire(SPEC, WHEN) is None  # a second scheduler process firing the same time
    assert get_executor().recover() == 0
    assert db.session.get(JobRun, run.id).status == RunStatus.queued


def test_a_queued_run_starts_once_however_often_it_is_delivered(down_app):
    run = fire(SPEC, WHEN)
    started = start_queued(run.id, "worker-a")
    assert started is not None and started.status == RunStatus.running
    assert started.error_code is None and started.attempts == 1 and started.claimed_by == "worker-a"
    assert start_queued(run.id, "worker-b") is None
    assert db.session.get(JobRun, run.id).claimed_by == "worker-a"


def test_recover_leaves_queued_rows_it_did_not_queue_alone(down_app):
    # A provider-side revoke waiting for its own retry job (portal.lifecycle) is queued too.
    other = JobRun(job_id="provider_revoke:1", kind="provider_revoke", scheduled_for=WHEN, status=RunStatus.queued,
                   error_code="provider_unavailable", error_message="The provider could not be told yet.")
    db.session.add(other)
    db.session.commit()
    ours = fire(SPEC, WHEN)
    get_executor().recover()
    db.session.expire_all()
    assert db.session.get(JobRun, other.id).error_code == "provider_unavailable"
    assert db.session.get(JobRun, other.id).claimed_at is None
    assert db.session.get(JobRun, ours.id).error_code == BROKER_UNAVAILABLE


def test_run_now_in_celery_mode_queues_the_run_instead_of_running_it_in_the_web_process(down_app, make):
    from sqlalchemy import select

    from tests.conftest import Auth
    from tests.school import helpers

    conn = helpers.connection(make.school())
    staff = make.user(support=True)
    db.session.commit()
    client = down_app.test_client()
    Auth(client).login(staff)
    page = client.post("/admin/operations/run", data={"connection_id": conn.id, "category": "student_basic"},
                       follow_redirects=True).get_data(as_text=True)
    run = db.session.execute(select(JobRun).where(JobRun.connection_id == conn.id)).scalar_one()
    # Claimed for a worker, with what support asked for; nothing ran here.
    assert run.status == RunStatus.queued and run.started_at is None and run.job_id == f"extract:{conn.id}"
    assert run.params[REQUESTED] == {"mode": "full", "categories": ["student_basic"]}
    assert f"queued as run {run.id}" in page and "could not be reached" in page
    assert "finished as run" not in page
