"""Alert emails carry no pupil data (R65); support operations: failing first, run now, pause, held removals."""
from __future__ import annotations

import re

from sqlalchemy import select

from portal import alerts, lifecycle, mail
from portal.extensions import db
from portal.models import AuditEntry, ConnectionState, ErrorKind, JobRun, Role, RunStatus
from tests.school import helpers


def _emails():
    return [p.read_text() for p in sorted(mail.outbox_dir().glob("*.eml"))] if mail.outbox_dir().exists() else []


def test_r65_school_action_and_held_alerts_name_no_pupil(app, make):
    school = make.school()
    make.user(Role.school_admin, school, email="head@school.example")
    conn = helpers.connection(school)
    failed = helpers.run(conn, RunStatus.failed, error=(ErrorKind.school_action, "scope_missing", "Allow the attendance scope in the MIS."))
    held = helpers.run(conn, RunStatus.held, categories={"student_basic": helpers.counts(unchanged=10)})
    held.stats = {**held.stats, "hold": {"pupils_removed": 40, "pupils_live": 100}}
    db.session.commit()
    alerts.extract_finished(failed)
    alerts.extract_finished(held)
    sent = _emails()
    assert len(sent) == 2
    assert "Action needed" in sent[0] and "Allow the attendance scope" in sent[0]
    assert "held" in sent[1] and "40 records" in sent[1]
    for text in sent:
        assert "head@school.example" in text and "no pupil data" in text
        # The fake connector's pupils are "Pupil1 Example"; no record data may leak into mail.
        assert not re.search(r"Pupil\d|date_of_birth|upn", text, re.I)


def test_temporary_failures_send_no_email(app, make):
    school = make.school()
    make.user(Role.school_admin, school)
    run = helpers.run(helpers.connection(school), RunStatus.failed, error=(ErrorKind.temporary, "rate_limited", "Busy."))
    db.session.commit()
    alerts.extract_finished(run)
    assert _emails() == []


def test_approval_email_goes_to_school_and_trust_admins(app, make):
    trust = make.trust()
    school = make.school(trust=trust)
    make.user(Role.school_admin, school, email="a@school.example")
    make.user(Role.trust_admin, trust, email="t@trust.example")
    make.user(Role.school_viewer, school, email="viewer@school.example")
    conn = helpers.connection(school, ConnectionState.pending)
    db.session.commit()
    lifecycle.mark_approved(conn, "provider")
    [text] = _emails()
    assert "a@school.example" in text and "t@trust.example" in text and "viewer@" not in text


def test_provider_revoke_that_cannot_be_delivered_is_retried(app, make):
    school = make.school()
    admin = make.user(Role.school_admin, school)
    conn = helpers.connection(school)
    # The fake connector cannot fail a revoke; a connector that is not enabled makes delivery fail.
    conn.connector = "missing"
    db.session.commit()
    lifecycle.revoke(conn, admin)
    assert conn.state == ConnectionState.revoked
    queued = db.session.execute(select(JobRun).where(JobRun.kind == lifecycle.PROVIDER_REVOKE_KIND)).scalar_one()
    assert queued.status == RunStatus.queued
    conn.connector = "fake"
    db.session.commit()
    assert lifecycle.retry_provider_revokes() == 1
    db.session.refresh(queued)
    assert queued.status == RunStatus.succeeded


def _support(make, auth):
    staff = make.user(support=True)
    db.session.commit()
    auth.login(staff)
    return staff


def test_operations_lists_failing_connections_first_and_searches(app, client, make, auth):
    healthy = make.school("Healthy")
    broken = make.school("Broken")
    helpers.connection(healthy)
    helpers.connection(broken, ConnectionState.failing)
    db.session.commit()
    _support(make, auth)
    page = client.get("/admin/operations/").get_data(as_text=True)
    assert page.index(broken.name) < page.index(healthy.name)
    found = client.get(f"/admin/operations/?q={healthy.urn}").get_data(as_text=True)
    assert healthy.name in found and broken.name not in found


def test_operations_pause_and_resume_are_audited(app, client, make, auth):
    school = make.school()
    conn = helpers.connection(school)
    db.session.commit()
    staff = _support(make, auth)
    client.post("/admin/operations/pause", data={"connection_id": conn.id, "paused": "1"})
    db.session.refresh(conn)
    assert conn.paused and not conn.can_extract
    client.post("/admin/operations/pause", data={"connection_id": conn.id, "paused": "0"})
    db.session.refresh(conn)
    assert not conn.paused
    actions = db.session.execute(select(AuditEntry.action).where(AuditEntry.actor_user_id == staff.id)).scalars().all()
    assert "connection.paused" in actions and "connection.resumed" in actions


def test_operations_run_now_runs_an_extract(app, client, make, auth):
    school = make.school()
    conn = helpers.connection(school)
    db.session.commit()
    _support(make, auth)
    resp = client.post("/admin/operations/run", data={"connection_id": conn.id}, follow_redirects=True)
    assert resp.status_code == 200
    run = db.session.execute(select(JobRun).where(JobRun.connection_id == conn.id)).scalar_one()
    assert run.job_id == f"extract:{conn.id}"
    assert "finished as run" in resp.get_data(as_text=True)


def test_operations_bad_input_changes_nothing(app, client, make, auth):
    school = make.school()
    conn = helpers.connection(school, ConnectionState.revoked)
    db.session.commit()
    _support(make, auth)
    page = client.post("/admin/operations/run", data={"connection_id": conn.id, "category": "nonsense"}, follow_redirects=True).get_data(as_text=True)
    assert "Choose one of the six categories" in page
    page = client.post("/admin/operations/run", data={"connection_id": conn.id}, follow_redirects=True).get_data(as_text=True)
    assert "no extract can run" in page
    page = client.post("/admin/operations/hold", data={"run_id": "x", "decision": "approve"}, follow_redirects=True).get_data(as_text=True)
    assert "Choose approve or reject" in page
    page = client.post("/admin/operations/hold", data={"run_id": "99999", "decision": "approve"}, follow_redirects=True).get_data(as_text=True)
    assert "is not held for review" in page
    assert db.session.execute(select(JobRun)).first() is None


def test_school_users_cannot_reach_operations(app, client, make, auth):
    school = make.school()
    admin = make.user(Role.school_admin, school)
    db.session.commit()
    auth.login(admin)
    assert client.get("/admin/operations/").status_code == 404
