"""R59 through a real provider sandbox: a matched user whose MIS staff record stops showing them employed loses access in that run."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.extract import run_extract
from portal.mail import outbox_dir
from portal.models import AuditEntry, Connection, Membership, Role, RunStatus
from portal.sandbox import synthetic
from tests.conftest import Auth


@pytest.fixture
def staffed_school(serve_school, make):
    """A synthetic school served by an installed connector's sandbox, extracted once; a teacher T with a portal login at it and elsewhere."""
    school = synthetic.generate_school(21, pupils=30, days=5, phase="primary")
    with serve_school(school, EXTRACT_BATCH_SIZE=200) as served:
        app, org = served.app, served.org
        conn = db.session.get(Connection, served.connection_id)
        run = run_extract(conn.id, mode="full")
        assert run.status == RunStatus.succeeded, run.error_message
        key, member = next((k, m) for k, m in school.staff.items() if "Teacher" in m.roles)
        admin = make.user(Role.school_admin, org)
        teacher = make.user(Role.school_viewer, org, email=member.email.upper())  # emails match whatever the case
        elsewhere = make.school("Another School")
        db.session.add(Membership(user_id=teacher.id, organisation_id=elsewhere.id, role=Role.school_viewer))
        db.session.commit()
        yield school, Auth(app.test_client()), org, conn, key, admin, teacher, elsewhere


def _confirm_match(client, auth, org, admin, teacher) -> Membership:
    auth.login(admin)
    page = client.get(f"/schools/{org.id}/users").get_data(as_text=True)
    membership = db.session.execute(select(Membership).where(
        Membership.user_id == teacher.id, Membership.organisation_id == org.id)).scalar_one()
    assert f"Confirm {teacher.name} is" in page
    resp = client.post(f"/schools/{org.id}/users/{membership.id}/staff-link")
    assert resp.status_code == 302
    db.session.refresh(membership)
    assert membership.staff_external_id is not None
    auth.logout()
    return membership


@pytest.mark.parametrize("how", ["not_employed", "missing_from_full_extract"])
def test_r59_a_staff_leaver_loses_access_to_that_school_only_and_admins_are_told(staffed_school, how):
    school, auth, org, conn, key, admin, teacher, elsewhere = staffed_school
    client = auth.client
    membership = _confirm_match(client, auth, org, admin, teacher)
    auth.login(teacher)
    assert client.get(f"/schools/{org.id}/connections").status_code == 200
    auth.logout()

    at = datetime.now(timezone.utc) + timedelta(seconds=1)
    if how == "not_employed":
        school.update_staff(key, at, currently_employed=False)
        run = run_extract(conn.id, mode="incremental")
    else:
        school.staff.pop(key)  # gone from the MIS without a deletion entry: only a full extract can tell
        run = run_extract(conn.id, mode="full")
    assert run.status == RunStatus.succeeded, run.error_message
    db.session.refresh(membership)
    assert membership.suspended_at is not None and membership.suspended_reason == "staff_left"
    assert membership.removed_at is None

    auth.login(teacher)
    assert client.get(f"/schools/{org.id}/connections").status_code == 404
    assert client.get(f"/schools/{elsewhere.id}/connections").status_code == 200  # other memberships still work
    auth.logout()
    mails = [p.read_text(errors="replace") for p in outbox_dir().glob("*.eml")]
    told = [m for m in mails if "lost access" in m]
    assert len(told) == 1 and admin.email in told[0]
    assert teacher.email.lower() not in told[0].lower() and teacher.name not in told[0]  # R65: no names in the alert
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "membership.suspended_staff_left")).scalar_one()
    assert entry.details["run_id"] == run.id


def test_r59_unmatched_users_and_current_staff_keep_access(staffed_school):
    school, auth, org, conn, key, admin, teacher, elsewhere = staffed_school
    # Not matched: the MIS showing them as not employed changes nothing (no confirmed link, no evidence about this user).
    school.update_staff(key, datetime.now(timezone.utc) + timedelta(seconds=1), currently_employed=False)
    assert run_extract(conn.id, mode="incremental").status == RunStatus.succeeded
    membership = db.session.execute(select(Membership).where(
        Membership.user_id == teacher.id, Membership.organisation_id == org.id)).scalar_one()
    assert membership.suspended_at is None
    # A matched member of staff still employed keeps access after a full extract.
    other_key, other = next((k, m) for k, m in school.staff.items() if k != key and m.currently_employed)
    from tests import factories as make
    colleague = make.user(Role.school_viewer, org, email=other.email)
    db.session.commit()
    matched = _confirm_match(auth.client, auth, org, admin, colleague)
    assert run_extract(conn.id, mode="full").status == RunStatus.succeeded
    db.session.refresh(matched)
    assert matched.suspended_at is None


def _hold_with_pupils_removed(school, conn):
    """A full run that loses 4 of 30 pupils (over the 10 % mass-removal threshold): held for support's review."""
    at = datetime.now(timezone.utc) + timedelta(seconds=1)
    for key in list(school.pupils)[:4]:
        school.delete_pupil(key, at)
    run = run_extract(conn.id, mode="full")
    assert run.status == RunStatus.held, run.error_message
    return run


def test_r59_staff_gone_from_a_held_full_extract_lose_access_when_support_approves_it(staffed_school, make):
    from portal.extract import approve_held_run

    school, auth, org, conn, key, admin, teacher, elsewhere = staffed_school
    membership = _confirm_match(auth.client, auth, org, admin, teacher)
    school.staff.pop(key)  # gone from the MIS without a deletion entry, in the same run as the pupils
    held = _hold_with_pupils_removed(school, conn)
    db.session.refresh(membership)
    # The removal waits with the run: one ambiguous answer (a provider glitch can drop rows) suspends no one.
    assert membership.suspended_at is None
    support = make.user(support=True)
    db.session.commit()
    assert approve_held_run(held.id, support).status == RunStatus.succeeded
    db.session.refresh(membership)
    assert (membership.suspended_at is not None, membership.suspended_reason) == (True, "staff_left")
    auth.login(teacher)
    assert auth.client.get(f"/schools/{org.id}/connections").status_code == 404
    auth.logout()
    told = [m for m in (p.read_text(errors="replace") for p in outbox_dir().glob("*.eml")) if "lost access" in m]
    assert len(told) == 1 and admin.email in told[0]


def test_r59_a_staff_leaver_loses_access_in_a_run_that_completes_while_another_is_held(staffed_school):
    school, auth, org, conn, key, admin, teacher, elsewhere = staffed_school
    membership = _confirm_match(auth.client, auth, org, admin, teacher)
    _hold_with_pupils_removed(school, conn)
    # The next night's run finishes under the hold; its staff record saying they left is a fact, not a removal.
    school.update_staff(key, datetime.now(timezone.utc) + timedelta(seconds=2), currently_employed=False)
    run = run_extract(conn.id, mode="incremental")
    assert run.status == RunStatus.succeeded and run.stats["hold_pending"]["run_id"], run.error_message
    db.session.refresh(membership)
    assert (membership.suspended_at is not None, membership.suspended_reason) == (True, "staff_left")
    told = [m for m in (p.read_text(errors="replace") for p in outbox_dir().glob("*.eml")) if "lost access" in m]
    assert len(told) == 1 and admin.email in told[0]
