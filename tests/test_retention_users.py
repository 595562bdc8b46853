"""User data (R37, R38): access ends with the subscription or the removal, data goes 7 years later, the audit trail keeps its facts (R9)."""
from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select, update

from portal import audit, scope
from portal.extensions import db
from portal.models import AuditEntry, AuditUserKey, Membership, Role, User
from portal.models.retention import RetentionProof
from portal.retention.preview import preview
from portal.retention.sweep import run_sweep
from tests.conftest import Auth
from tests.test_retention import at, exists, zero_window_app  # noqa: F401  (fixtures)


def entries_naming(user_id: int) -> list[AuditEntry]:
    """Entries whose actor, target or details still hold the user's id."""
    uid = str(user_id)
    out = []
    for e in db.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars():
        if e.actor_user_id == user_id or e.actor == f"user:{uid}" or (e.target_type == "users" and e.target_id == uid) \
                or any(str(e.details.get(k)) == uid for k in audit.USER_DETAIL_KEYS):
            out.append(e)
    return out


def usage(user: User, school) -> None:
    """What a user leaves in the trail: a sign-in (no organisation) and actions at the school, as actor and in details."""
    audit.record("auth.login", target=user, actor=f"user:{user.id}", actor_user_id=user.id)
    audit.record("connection.authorised", organisation_id=school.id, target=school, actor=f"user:{user.id}",
                 actor_user_id=user.id, details={"connector": "fake"})
    audit.record("dsr.refused", organisation_id=school.id, target=school, details={"by": user.id})


def verify_ok(app) -> None:
    result = app.test_cli_runner().invoke(args=["portal", "audit", "verify"])
    assert result.exit_code == 0, result.output


def test_r37_login_refused_from_the_day_after_the_subscription_ends(app, make, auth):
    ended = make.school(ends_on=date(2025, 3, 31))
    user = make.user(Role.school_admin, ended)
    db.session.commit()
    assert scope.may_sign_in(user, date(2025, 3, 31))
    assert not scope.may_sign_in(user, date(2025, 4, 1))
    # Today is long after 2025-03-31: the real sign-in form refuses, saying why.
    resp = auth.login(user)
    assert resp.status_code == 401
    assert "the subscription of your organisation has ended" in resp.get_data(as_text=True)
    assert db.session.execute(select(AuditEntry.action).order_by(AuditEntry.id.desc()).limit(1)).scalar() == "auth.login_refused"


def test_r37_a_user_with_another_live_membership_keeps_that_one_only(app, make, client, auth):
    ended = make.school(ends_on=date(2025, 3, 31))
    live = make.school()
    user = make.user(Role.school_admin, ended)
    db.session.add(Membership(user_id=user.id, organisation_id=live.id, role=Role.school_viewer))
    db.session.commit()
    assert auth.login(user).status_code == 302
    assert client.get(f"/schools/{live.id}").status_code == 200
    assert client.get(f"/schools/{ended.id}").status_code == 404
    assert scope.school_ids(user) == [live.id]


def test_r37_user_data_present_after_the_sweep_of_2032_03_30_and_gone_after_2032_03_31(zero_window_app, make):
    app = zero_window_app
    school = make.school(ends_on=date(2025, 3, 31))
    user = make.user(Role.school_admin, school)
    other = make.user(Role.school_viewer, make.school())
    usage(user, school)
    usage(other, school)
    db.session.commit()
    user_id = user.id
    actions_before = list(db.session.execute(select(AuditEntry.action).order_by(AuditEntry.id)).scalars())
    named = len(entries_naming(user_id))

    lines = [l for l in preview(date(2032, 3, 1), 30) if l.rule_id == "R37"]
    assert [(l.school_id, l.category, l.count, l.due_on, l.trigger_on) for l in lines] == [
        (school.id, "user_data", 1, date(2032, 3, 31), date(2025, 3, 31))]

    run_sweep(as_of=date(2032, 3, 30))
    assert exists(User, user_id)
    run = run_sweep(as_of=date(2032, 3, 31))
    assert run.status.value == "succeeded"
    assert not exists(User, user_id)
    assert db.session.execute(select(func.count()).select_from(Membership).where(Membership.user_id == user_id)).scalar() == 0
    [proof] = db.session.execute(select(RetentionProof).where(RetentionProof.rule_id == "R37")).scalars().all()
    assert (proof.school_id, proof.deadline, proof.counts) == (school.id, date(2032, 3, 31), {"user_data": 1})

    # The facts stay, in order; the user reference is a placeholder nobody can turn back into the id.
    actions_after = list(db.session.execute(select(AuditEntry.action).order_by(AuditEntry.id)).scalars())
    assert actions_after[:len(actions_before)] == actions_before
    assert entries_naming(user_id) == []
    placeholders = db.session.execute(select(AuditEntry).where(AuditEntry.actor_ref.is_not(None))).scalars().all()
    assert len(placeholders) == 2 and all(e.actor.startswith("user:" + audit.PLACEHOLDER) for e in placeholders)
    refused = db.session.execute(select(AuditEntry).where(AuditEntry.action == "dsr.refused")).scalars().all()
    assert sorted(str(e.details["by"]).startswith(audit.PLACEHOLDER) for e in refused) == [False, True]
    assert db.session.execute(select(func.count()).select_from(AuditUserKey).where(AuditUserKey.user_id == user_id)).scalar() == 0
    assert named == 3
    # The other user's references are untouched, and the whole chain still verifies.
    assert len(entries_naming(other.id)) == 3
    verify_ok(app)


def test_r37_login_identity_stays_until_the_latest_membership_deadline(zero_window_app, make):
    app = zero_window_app
    ended = make.school(ends_on=date(2025, 3, 31))
    later = make.school(ends_on=date(2026, 8, 31))
    user = make.user(Role.school_admin, ended)
    db.session.add(Membership(user_id=user.id, organisation_id=later.id, role=Role.school_viewer))
    usage(user, ended)
    usage(user, later)
    db.session.commit()
    user_id = user.id
    run_sweep(as_of=date(2032, 3, 31))
    # The first membership's usage is a placeholder; the login and the other membership's usage stay.
    assert exists(User, user_id)
    assert [m.organisation_id for m in db.session.get(User, user_id).memberships] == [later.id]
    assert {e.organisation_id for e in entries_naming(user_id)} == {None, later.id}
    verify_ok(app)
    run_sweep(as_of=date(2033, 8, 30))
    assert exists(User, user_id)
    run_sweep(as_of=date(2033, 8, 31))
    assert not exists(User, user_id)
    assert entries_naming(user_id) == []
    verify_ok(app)


def test_r38_a_removed_user_loses_that_organisation_at_once_and_the_data_goes_after_the_sweep_of_2031_02_28(
        zero_window_app, make):
    app = zero_window_app
    client = app.test_client()
    auth = Auth(client)
    school = make.school()
    admin = make.user(Role.school_admin, school)
    user = make.user(Role.school_viewer, school)
    db.session.commit()
    assert auth.login(user).status_code == 302
    assert client.get(f"/schools/{school.id}").status_code == 200
    membership = db.session.execute(select(Membership).where(Membership.user_id == user.id)).scalar_one()
    # A viewer may not remove anyone; the school admin does it on the school's users page.
    assert client.post(f"/schools/{school.id}/users/{membership.id}/remove").status_code == 404
    admin_client = app.test_client()
    Auth(admin_client).login(admin)
    page = admin_client.get(f"/schools/{school.id}/users").get_data(as_text=True)
    assert f"Remove {user.name}" in page and f"Remove {admin.name}" not in page
    resp = admin_client.post(f"/schools/{school.id}/users/{membership.id}/remove", follow_redirects=True)
    assert resp.status_code == 200 and "no longer has access" in resp.get_data(as_text=True)
    # The removed user's next request for that organisation's pages is refused (same session).
    assert client.get(f"/schools/{school.id}").status_code == 404
    db.session.expire_all()
    removal = db.session.execute(select(AuditEntry).where(AuditEntry.action == "membership.removed")).scalar_one()
    assert (removal.actor_user_id, removal.organisation_id, removal.details) == (admin.id, school.id, {"user_id": user.id})
    # The clock starts on the day of removal: date it 2024-02-29, as in R38's test.
    membership.removed_at = at(date(2024, 2, 29))
    db.session.commit()
    membership_id, user_id = membership.id, user.id
    run_sweep(as_of=date(2031, 2, 27))
    assert exists(User, user_id) and exists(Membership, membership_id)
    run_sweep(as_of=date(2031, 2, 28))
    assert not exists(Membership, membership_id) and not exists(User, user_id)
    [proof] = db.session.execute(select(RetentionProof).where(RetentionProof.rule_id == "R38")).scalars().all()
    assert (proof.trigger_on, proof.deadline) == (date(2024, 2, 29), date(2031, 2, 28))
    # The admin who removed them is still named; the removed user's id in that entry is a placeholder.
    removal = db.session.get(AuditEntry, removal.id)
    assert removal.actor_user_id == admin.id and str(removal.details["user_id"]).startswith(audit.PLACEHOLDER)
    assert exists(User, admin.id)
    verify_ok(app)


def test_r9_the_application_cannot_change_or_delete_audit_entries(app, make):
    school = make.school()
    user = make.user(Role.school_admin, school)
    usage(user, school)
    db.session.commit()
    entry = db.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars().first()
    entry.details = {"changed": True}
    with pytest.raises(audit.AuditRewriteRefused):
        db.session.flush()
    db.session.rollback()
    with pytest.raises(audit.AuditRewriteRefused):
        db.session.execute(update(AuditEntry).values(action="changed"))
    db.session.rollback()
    with pytest.raises(audit.AuditRewriteRefused):
        db.session.delete(db.session.get(AuditEntry, entry.id))
        db.session.flush()
    db.session.rollback()
    # The one allowed rewrite: the user reference (R37), here for an erasure request.
    assert audit.pseudonymise_user(user.id) == 3
    db.session.commit()
    assert entries_naming(user.id) == []
    assert audit.verify().ok


def test_r37_changing_the_user_named_in_an_entry_breaks_the_chain(app, make):
    school = make.school()
    a = make.user(Role.school_admin, school)
    b = make.user(Role.school_admin, school)
    usage(a, school)
    db.session.commit()
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "connection.authorised")).scalar_one()
    from sqlalchemy import text

    # Straight SQL, as someone with database access would do it: the pseudonym no longer matches the id.
    db.session.execute(text("UPDATE audit_entries SET actor_user_id = :b WHERE id = :id"), {"b": b.id, "id": entry.id})
    db.session.commit()
    db.session.expire_all()
    result = audit.verify()
    assert not result.ok and result.broken_id == entry.id
