"""What school staff read: matrix labels instead of codes, no rule numbers or internal words, role-aware wording."""
from __future__ import annotations

import re
from datetime import date, timedelta

import pytest

from portal import audit
from portal.date_input import parse_parts
from portal.extensions import db
from portal.models import Role, SubscriptionRoute
from portal.models.base import utcnow
from portal.school.messages import action_label
from tests.school import helpers
from tests.school.helpers import counts
from tests.test_retention import world  # noqa: F401  (fixture)

CODES = re.compile(r"\b(student|staff)_(basic|demographics|timetable|assessment|attendance_exclusions)\b")


def _visible_text(html: str) -> str:
    """The page's text as a reader sees it: without tags and attribute values."""
    return re.sub(r"<[^>]+>", " ", html)


def test_run_pages_name_categories_as_the_usage_matrix_does(app, client, make, auth):
    school = make.school()
    admin = make.user(Role.school_admin, school)
    run = helpers.run(helpers.connection(school), categories={
        "student_attendance_exclusions": counts(inserted=5), "staff_basic": counts(updated=2)})
    db.session.commit()
    auth.login(admin)
    for url in (f"/schools/{school.id}/runs", f"/schools/{school.id}/runs/{run.id}", "/runs"):
        text = _visible_text(client.get(url).get_data(as_text=True))
        assert "Student attendance and exclusions" in text, url
        assert "Staff information (basic)" in text, url
        assert not CODES.search(text), f"{url}: {CODES.search(text).group(0)}"


def test_history_speaks_plainly_and_the_provider_approves(app, client, make, auth):
    school = make.school()
    admin = make.user(Role.school_admin, school)
    db.session.flush()
    for action in ("store.records_tombstoned", "store.reconciliation_staged", "store.records_written",
                   "admin.organisations.edited", "something.new_and_unlabelled"):
        audit.record(action, organisation_id=school.id, actor="system")
    # The approval arrives while the admin's request (or poll) is running: it is still the provider's act.
    audit.record("connection.approved", organisation_id=school.id, actor=f"user:{admin.id}", actor_user_id=admin.id)
    db.session.commit()
    auth.login(admin)
    html = client.get(f"/schools/{school.id}/history").get_data(as_text=True)
    text = _visible_text(html)
    for internal in ("tombstoned", "reconciliation", "Store:", "store.", "_", "Something"):
        assert internal not in text, internal
    row = re.search(r'data-action="connection.approved">(.*?)</tr>', html, re.S).group(1)
    assert "Connection approved by the provider" in row and "The provider" in row and admin.name not in row


def test_connections_page_says_the_provider_approved(app, client, make, auth):
    from portal.models import ConnectionState

    school = make.school()
    admin = make.user(Role.school_admin, school)
    conn = helpers.connection(school, state=ConnectionState.approved)
    db.session.flush()
    conn.state_changed_by_id = admin.id  # the admin's poll brought the approval
    db.session.commit()
    auth.login(admin)
    html = client.get(f"/schools/{school.id}/connections").get_data(as_text=True)
    row = re.search(r'data-connector="fake">(.*?)</tr>', html, re.S).group(1)
    assert "by the provider" in row and f"by {admin.name}" not in row


@pytest.mark.parametrize("action", ["store.rows_deleted", "retention.deletion_scheduled", "dsr.received", "extract.held"])
def test_every_audit_action_a_school_sees_has_words(action):
    label = action_label(action)
    assert "_" not in label and "." not in label.rstrip(".") and label[0].isupper()


@pytest.mark.parametrize(("role", "may_revoke"), [
    (Role.school_admin, True), (Role.school_viewer, False), (Role.la_officer, False)])
def test_only_those_who_can_revoke_are_told_they_can(app, client, make, auth, role, may_revoke):
    la = make.local_authority("Northshire")
    school = make.school(la=la, route=SubscriptionRoute.local_authority)
    user = make.user(role, la if role == Role.la_officer else school)
    db.session.commit()
    auth.login(user)
    text = client.get(f"/schools/{school.id}/connections").get_data(as_text=True)
    assert ("You can revoke it at any time" in text) is may_revoke
    assert ("Only the school's admins can authorise or revoke" in text) is (not may_revoke)


def test_a_one_school_user_lands_on_their_school(app, client, make, auth):
    school = make.school("Brook Primary")
    viewer = make.user(Role.school_viewer, school)
    trust = make.trust()
    make.school("Trust School", trust=trust)
    trust_admin = make.user(Role.trust_admin, trust)
    db.session.commit()
    auth.login(viewer, follow=False)
    home = client.get("/home").get_data(as_text=True)
    assert 'data-testid="connections"' in home and "Brook Primary" in home
    assert 'data-testid="school-list"' not in home
    auth.logout()
    auth.login(trust_admin)
    # A trust (or LA) sees its list even with one school: the list is its overview.
    assert 'data-testid="school-list"' in client.get("/home").get_data(as_text=True)


@pytest.mark.parametrize(("left_days_ago", "overdue"), [(400, True), (170, False)])
def test_deletion_page_flags_overdue_deletions_and_shows_no_rule_numbers(
    app, client, make, auth, world, left_days_ago, overdue  # noqa: F811
):
    conn = world.school()
    # Left 400 days ago: the leaver rule's deadline has passed, so the next sweep is late; 170 days: on time.
    world.pupil(conn, year="3", extracted=date(2024, 1, 10), leaving=utcnow().date() - timedelta(days=left_days_ago))
    admin = make.user(Role.school_admin, conn.school)
    db.session.commit()
    auth.login(admin)
    html = client.get(f"/schools/{conn.school_id}/retention").get_data(as_text=True)
    assert 'data-rule="R29"' in html
    assert ('data-testid="overdue"' in html and "days past the deadline" in html) is overdue
    assert ("Overdue" in html) is overdue
    assert not re.search(r"\(R\d+(, R\d+)*\)", _visible_text(html))


@pytest.mark.parametrize(("parts", "expected"), [
    (("27", "3", "2026"), date(2026, 3, 27)), ((" 1 ", "01", "2025"), date(2025, 1, 1)), (("", "", ""), None)])
def test_date_input_reads_day_month_and_year(parts, expected):
    assert parse_parts("Date received", *parts) == expected


@pytest.mark.parametrize(("parts", "message"), [
    (("27", "", "2026"), "Date received must include a month"),
    (("", "", "2026"), "Date received must include a day and a month"),
    (("31", "2", "2026"), "Date received must be a real date"),
    (("1", "2", "26"), "Date received must be a real date"),
    (("x", "2", "2026"), "Date received must be a real date"),
])
def test_date_input_says_what_is_wrong(parts, message):
    with pytest.raises(ValueError, match=message):
        parse_parts("Date received", *parts)


def test_request_pages_use_day_month_year_boxes_and_an_empty_search_says_so(app, client, make, auth):
    school = make.school()
    admin = make.user(Role.school_admin, school)
    db.session.commit()
    auth.login(admin)
    find = client.get(f"/schools/{school.id}/requests/find?external_id=&upn=&surname=").get_data(as_text=True)
    assert "Enter an MIS id, a UPN, or a surname and date of birth to search." in find
    assert 'type="date"' not in find and 'name="date_of_birth-day"' in find
    assert "never shown to products" not in find
    none = client.get(f"/schools/{school.id}/requests/find", query_string={
        "surname": "Nobody", "date_of_birth-day": "1", "date_of_birth-month": "2", "date_of_birth-year": "2015"})
    assert "No pupil matches" in none.get_data(as_text=True)
    bad = client.get(f"/schools/{school.id}/requests/find", query_string={
        "surname": "Nobody", "date_of_birth-day": "31", "date_of_birth-month": "2", "date_of_birth-year": "2015"})
    assert "Date of birth must be a real date" in bad.get_data(as_text=True)
    new = client.get(f"/schools/{school.id}/requests/new").get_data(as_text=True)
    assert 'type="date"' not in new and 'name="received_on-year"' in new
    posted = client.post(f"/schools/{school.id}/requests/new", data={
        "request_type": "access", "received_on-day": "5", "received_on-month": "", "received_on-year": "2026",
        "channel": "email", "requester_kind": "parent_carer", "subject_external_id": "x"})
    assert posted.status_code == 400 and "Date received must include a month" in posted.get_data(as_text=True)
