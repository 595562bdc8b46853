"""R32 across the connection state machine: the clock runs from the revocation until a re-authorisation is approved."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from sqlalchemy import select

from portal import lifecycle
from portal.connectors import AccessStatus
from portal.extensions import db
from portal.models import Connection, ConnectionState, Role
from portal.models.mis import MisPupil
from portal.retention.deadlines import RetentionContext, earliest
from portal.retention.sweep import run_sweep

REVOKED_ON = date(2025, 10, 6)


def _on(monkeypatch, day: date) -> None:
    moment = datetime(day.year, day.month, day.day, 10, tzinfo=timezone.utc)
    for where in ("portal.lifecycle.utcnow", "portal.retention.orders.utcnow"):
        monkeypatch.setattr(where, lambda: moment)


def _r32(conn: Connection, as_of: date = date(2026, 1, 1)) -> date | None:
    due, _ = earliest([d for d in RetentionContext.load(as_of).school_dues(conn.school_id, conn.id) if d.rule_id == "R32"])
    return due.deadline if due else None


@pytest.fixture
def revoked(app, make, monkeypatch):
    """An approved fake-MIS connection holding one pupil, with an admin who accepted the terms; revoke(how) revokes it."""
    school = make.school()
    admin = make.user(Role.school_admin, school)
    lifecycle.accept_terms(school, admin, lifecycle.current_terms_version())
    conn = Connection(school_id=school.id, connector="fake", state=ConnectionState.approved, provider_school_id=f"fake-{school.urn}")
    db.session.add(conn)
    db.session.flush()
    db.session.add(MisPupil(school_id=school.id, connection_id=conn.id, category="student_basic", external_id="P1",
                            content_hash="0" * 64, legal_surname="Example"))
    db.session.commit()

    def revoke(how: str = "school") -> Connection:
        _on(monkeypatch, REVOKED_ON)
        if how == "school":
            lifecycle.revoke(conn, admin)
        else:
            lifecycle.mark_revoked_by_provider(conn, "revoked")
        _on(monkeypatch, date(2025, 11, 3))
        return conn

    revoke.admin = admin
    return revoke


def _request(conn, admin):
    return lifecycle.request_access(conn, admin, {"name": "Head", "email": "head@school.example"})


# Each path: the steps after the revocation, the state it ends in, and whether R32 still runs.
PATHS = {
    "asked again, waiting for the provider": (["request"], ConnectionState.pending, True),
    "asked again, declined": (["request", "decline"], ConnectionState.declined, True),
    "asked twice, declined then pending": (["request", "decline", "request"], ConnectionState.pending, True),
    "asked again, request not delivered": (["requested"], ConnectionState.requested, True),
    "asked again, approved": (["request", "approve"], ConnectionState.approved, False),
    "approved, then failing": (["request", "approve", "failing"], ConnectionState.failing, False),
}


@pytest.mark.parametrize("how", ["school", "provider"])
@pytest.mark.parametrize("path", list(PATHS))
def test_r32_clock_runs_until_a_reauthorisation_is_approved(revoked, path, how):
    conn = revoked(how)
    assert _r32(conn) == date(2026, 4, 6)
    steps, state, running = PATHS[path]
    for step in steps:
        if step == "request":
            _request(conn, revoked.admin)  # the fake provider answers "pending"
        elif step == "requested":
            lifecycle._set_state(conn, ConnectionState.requested, revoked.admin, "connection.requested")
            db.session.commit()
        elif step == "decline":
            lifecycle.mark_declined(conn, "provider")
        elif step == "approve":
            lifecycle.apply_access_status(conn, AccessStatus("approved", conn.provider_school_id))
        elif step == "failing":
            lifecycle.mark_failing(conn, error_code="timeout")
    assert conn.state == state
    assert _r32(conn) == (date(2026, 4, 6) if running else None)


def test_r32_declined_reauthorisation_data_is_gone_after_the_deadline_sweep(revoked, make):
    conn = revoked("school")
    _request(conn, revoked.admin)
    lifecycle.mark_declined(conn, "provider")
    due_on = min(d.due_on for d in RetentionContext.load(date(2026, 1, 1)).school_dues(conn.school_id, conn.id))
    assert due_on <= date(2026, 4, 6)
    run = run_sweep(as_of=due_on)
    assert run.status.value == "succeeded", run.error_message
    assert db.session.execute(select(MisPupil.id).where(MisPupil.connection_id == conn.id)).first() is None


def test_r32_a_second_revocation_after_reapproval_starts_a_new_clock(revoked, monkeypatch):
    conn = revoked("school")
    _request(conn, revoked.admin)
    lifecycle.apply_access_status(conn, AccessStatus("approved", conn.provider_school_id))
    assert _r32(conn) is None
    _on(monkeypatch, date(2026, 5, 1))
    lifecycle.revoke(conn, revoked.admin)
    assert _r32(conn, date(2026, 6, 1)) == date(2026, 11, 1)
