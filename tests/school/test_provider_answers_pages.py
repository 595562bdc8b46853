"""What a school sees of provider answers: the run page lists them; the Deletion page names a withdrawn category's order."""
from __future__ import annotations

from datetime import date

from portal.extensions import db
from portal.models import DeletionOrder, Role
from tests.school import helpers
from tests.school.helpers import counts


def test_run_page_lists_what_the_provider_answered_instead_of_data(app, client, make, auth):
    school = make.school()
    admin = make.user(Role.school_admin, school)
    conn = helpers.connection(school)
    run = helpers.run(conn, categories={"student_basic": counts(inserted=10)})
    message = "Wonde: your school has not approved 'exclusions' for this portal."
    run.stats = {**run.stats, "outcomes": [{"category": "student_attendance_exclusions", "code": "permission_missing",
                                            "message": message, "withheld": True, "confirmed": True,
                                            "endpoint": "exclusions", "fields": []}]}
    plain = helpers.run(conn, categories={"student_basic": counts(inserted=10)})
    db.session.commit()
    auth.login(admin)
    page = client.get(f"/schools/{school.id}/runs/{run.id}").get_data(as_text=True)
    assert 'data-testid="run-outcomes"' in page and 'data-code="permission_missing"' in page
    assert "your school has not approved &#39;exclusions&#39;" in page or message in page
    assert "Some data was not read in this run" in page
    assert 'data-testid="run-outcomes"' not in client.get(f"/schools/{school.id}/runs/{plain.id}").get_data(as_text=True)


def test_run_page_does_not_say_data_was_missed_when_everything_was_read(app, client, make, auth):
    school = make.school()
    admin = make.user(Role.school_admin, school)
    run = helpers.run(helpers.connection(school), categories={"student_basic": counts(inserted=10)})
    run.stats = {**run.stats, "outcomes": [{"category": "student_basic", "code": "changes_restarted",
                                            "message": "The provider sent this data in full; a full run follows.", "withheld": False, "confirmed": False,
                                            "endpoint": "Students", "fields": []}]}
    db.session.commit()
    auth.login(admin)
    page = client.get(f"/schools/{school.id}/runs/{run.id}").get_data(as_text=True)
    assert 'data-code="changes_restarted"' in page and "a full run follows" in page
    assert "Some data was not read" not in page


def test_deletion_page_names_data_the_provider_no_longer_shares(app, client, make, auth):
    school = make.school()
    admin = make.user(Role.school_admin, school)
    conn = helpers.connection(school)
    order = DeletionOrder(school_id=school.id, connection_id=conn.id, categories=["student_assessment"],
                          reason="permission_withdrawn", rule_id="R31-grant", trigger_on=date(2026, 12, 7),
                          due_on=date(2027, 6, 7))
    db.session.add(order)
    db.session.commit()
    auth.login(admin)
    page = client.get(f"/schools/{school.id}/retention").get_data(as_text=True)
    assert f'data-order="{order.id}"' in page
    assert "Data the provider no longer shares: student_assessment" in page and "due 7 June 2027" in page
