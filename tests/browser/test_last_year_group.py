"""R30 in a real browser: the Deletion page asks for the school's last year group until an admin confirms it."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from portal.extensions import db
from portal.models import Role
from portal.models.retention import SchoolRetentionSetting
from tests import factories as make
from tests.browser.conftest import check_accessibility, plain, sign_in

pytestmark = pytest.mark.browser


def test_r30_school_admin_confirms_the_last_year_group_on_the_deletion_page(serve, page):
    server = serve()
    with server.app.app_context():
        school = make.school("Ridgeway School", phase="Secondary")
        school.statutory_high_age = 18  # GIAS: 11-18, the sixth form recorded apart from the phase
        admin = make.user(Role.school_admin, school)
        viewer = make.user(Role.school_viewer, school)
        db.session.commit()
        school, admin, viewer = plain(school), plain(admin), plain(viewer)

    sign_in(page, server.url, viewer)
    page.goto(f"{server.url}/schools/{school.id}/retention")
    expect(page.get_by_test_id("last-year-group-needed")).to_be_visible()
    assert page.get_by_test_id("last-year-group-form").count() == 0  # a viewer cannot confirm
    page.context.clear_cookies()

    sign_in(page, server.url, admin)
    page.goto(f"{server.url}/schools/{school.id}/retention")
    expect(page.get_by_test_id("last-year-group-needed")).to_be_visible()
    expect(page.get_by_test_id("last-year-group-suggestion")).to_contain_text("Year 13")
    select = page.get_by_role("combobox", name="Your school's last year group")
    expect(select).to_have_value("13")  # pre-filled from the GIAS age range, not from "Secondary"
    check_accessibility(page)

    # Nothing chosen: a clear error, nothing saved.
    select.select_option("")
    page.get_by_role("button", name="Confirm last year group").click()
    expect(page.get_by_role("alert").get_by_text("Choose your school's last year group.")).to_be_visible()
    check_accessibility(page)
    with server.app.app_context():
        assert db.session.get(SchoolRetentionSetting, school.id) is None

    page.get_by_role("combobox", name="Your school's last year group").select_option("13")
    page.get_by_role("button", name="Confirm last year group").click()
    expect(page.get_by_test_id("last-year-group-confirmed")).to_contain_text("Year 13")
    assert page.get_by_test_id("last-year-group-needed").count() == 0
    check_accessibility(page)
    with server.app.app_context():
        setting = db.session.get(SchoolRetentionSetting, school.id)
        assert setting.last_year_group == 13 and setting.confirmed_by_id == admin.id


def test_r59_school_admin_confirms_a_users_staff_record_on_the_users_tab(serve, page):
    from portal.models import Connection, ConnectionState, Membership
    from portal.models.mis import MisStaff

    server = serve()
    with server.app.app_context():
        school = make.school("Brookside Primary")
        admin = make.user(Role.school_admin, school)
        teacher = make.user(Role.school_viewer, school, email="j.teacher@brookside.example")
        conn = Connection(school_id=school.id, connector="fake", state=ConnectionState.approved)
        db.session.add(conn)
        db.session.flush()
        db.session.add(MisStaff(school_id=school.id, connection_id=conn.id, category="staff_basic", external_id="ST9",
                                content_hash="0" * 64, forename="Jo", surname="Teacher", email="J.Teacher@brookside.example",
                                currently_employed=True))
        db.session.commit()
        membership_id = db.session.execute(
            db.select(Membership.id).where(Membership.user_id == teacher.id)).scalar_one()
        school, admin, teacher = plain(school), plain(admin), plain(teacher)
    sign_in(page, server.url, admin)
    page.goto(f"{server.url}/schools/{school.id}/users")
    cell = page.get_by_test_id(f"staff-link-{membership_id}")
    check_accessibility(page)
    cell.get_by_role("button", name=f"Confirm {teacher.name} is Jo Teacher in the MIS").click()
    expect(page.get_by_text(f"{teacher.name} is matched to their staff record")).to_be_visible()
    expect(page.get_by_test_id(f"staff-link-{membership_id}")).to_have_text("Matched")
    check_accessibility(page)
    with server.app.app_context():
        assert db.session.get(Membership, membership_id).staff_external_id == "ST9"
