"""Support staff's retention views: periods shortened but never lengthened past the seeds, legal holds (R40), preview."""
from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry
from portal.models.base import utcnow
from portal.models.retention import LegalHold, RetentionRule
from tests.test_admin import count, post_form, staff  # noqa: F401  (the signed-in support fixture)
from tests.test_retention import world  # noqa: F401  (fixture)


def _rule(rule_id: str) -> RetentionRule:
    db.session.expire_all()
    return db.session.get(RetentionRule, rule_id)


def test_support_may_shorten_a_seeded_period_and_it_is_audited(staff, client):
    resp = post_form(client, "/admin/retention_rules/edit/?id=R29", {"title": "Leavers", "period": "3", "source": "DPO"})
    assert resp.status_code == 302
    assert _rule("R29").period == 3
    actions = db.session.execute(select(AuditEntry.action, AuditEntry.target_id)).all()
    assert ("retention.rule_changed", "R29") in actions


def test_lengthening_a_period_past_the_seeds_deadline_is_refused_with_a_clear_message(staff, client):
    resp = post_form(client, "/admin/retention_rules/edit/?id=R29", {"title": "Leavers", "period": "7", "source": ""})
    assert b"cannot be longer than 6 months" in resp.data or b"cannot be longer than 6 months" in client.get("/admin/retention_rules/").data
    assert _rule("R29").period == 6


def test_the_unit_of_a_seeded_rule_cannot_be_changed(staff, client):
    page = client.get("/admin/retention_rules/edit/?id=R27")
    assert page.status_code == 200 and b'name="period_unit"' not in page.data and b'name="period"' in page.data


def test_a_legal_hold_on_one_pupil_needs_a_reason_a_future_review_date_and_dpo_approval(staff, client, world):
    conn = world.school()
    pupil = world.pupil(conn)
    db.session.commit()
    review = (date.today() + timedelta(days=90)).isoformat()
    base = {"school_id": str(conn.school_id), "record_table": "mis_pupils", "record_id": str(pupil.id), "review_on": review}

    refused = post_form(client, "/admin/legal_holds/new/", {**base, "reason": "   "})
    assert b"Enter the reason" in refused.data or b"This field is required" in refused.data
    refused = post_form(client, "/admin/legal_holds/new/", {**base, "reason": "Claim", "review_on": "2020-01-01"})
    assert b"review date in the future" in refused.data
    elsewhere = world.school()
    db.session.commit()
    refused = post_form(client, "/admin/legal_holds/new/", {**base, "school_id": str(elsewhere.school_id), "reason": "Claim"})
    assert b"No such record at that school" in refused.data
    assert count(LegalHold) == 0

    made = post_form(client, "/admin/legal_holds/new/", {**base, "reason": "Employment tribunal"})
    assert made.status_code == 302
    hold = db.session.execute(select(LegalHold)).scalar_one()
    assert hold.dpo_approved_at is None and not hold.is_active(date.today())
    page = client.get("/admin/legal_holds/")
    from tests.test_admin import token_of

    client.post("/admin/legal_holds/action/", data={"action": "approve", "rowid": [str(hold.id)], "csrf_token": token_of(page.data)})
    db.session.expire_all()
    hold = db.session.get(LegalHold, hold.id)
    assert hold.dpo_approved_by_id == staff.id and hold.is_active(date.today())
    actions = [a for (a,) in db.session.execute(select(AuditEntry.action))]
    assert "retention.hold_created" in actions and "retention.hold_approved" in actions


def test_a_hold_on_a_whole_school_cannot_be_created(staff, client, world):
    conn = world.school()
    db.session.commit()
    review = (date.today() + timedelta(days=90)).isoformat()
    refused = post_form(client, "/admin/legal_holds/new/", {
        "school_id": str(conn.school_id), "record_table": "organisations", "record_id": str(conn.school_id),
        "reason": "Claim", "review_on": review})
    assert count(LegalHold) == 0
    assert refused.status_code == 200


def test_the_preview_page_lists_what_is_due_by_rule_and_category(staff, client, world):
    conn = world.school()
    world.pupil(conn, year="3", extracted=date(2025, 1, 10), leaving=date(2025, 7, 22))
    db.session.commit()
    page = client.get("/admin/retention-preview/?as_of=2025-12-20")
    assert page.status_code == 200
    assert b'data-rule="R29" data-category="student_basic" data-count="1"' in page.data
    bad = client.get("/admin/retention-preview/?as_of=20-12-2025")
    assert b"YYYY-MM-DD" in bad.data


def test_the_school_page_shows_the_next_deletion_date_per_category(app, client, auth, make, world):
    from portal.models import Role

    conn = world.school()
    world.pupil(conn, year="3", extracted=date(2025, 1, 10), leaving=utcnow().date() - timedelta(days=170))
    admin = make.user(Role.school_admin, conn.school)
    db.session.commit()
    auth.login(admin)
    page = client.get(f"/schools/{conn.school_id}/retention")
    assert page.status_code == 200
    assert b'data-rule="R29" data-category="student_basic" data-count="1"' in page.data
    assert b"Nothing has been deleted yet" in page.data


def test_r26_without_a_calendar_the_preview_warns_support_staff(make_app, make):
    from tests.conftest import Auth

    app = make_app(RETENTION_BANK_HOLIDAYS=False)
    with app.app_context():
        user = make.user(support=True)
        db.session.commit()
        client = app.test_client()
        Auth(client).login(user)
        page = client.get("/admin/retention-preview/")
        assert page.status_code == 200 and b'data-testid="no-calendar"' in page.data
