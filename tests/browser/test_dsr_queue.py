"""In Chromium: a school admin finds a pupil, records an access request, verifies identity, downloads the export once."""
from __future__ import annotations

import io
import json
import zipfile
from datetime import date
from pathlib import Path

import pytest
from playwright.sync_api import expect

from portal.connectors import PupilRecord
from portal.extensions import db
from portal.models import Role
from tests import api_support as s
from tests import factories as make
from tests.browser.conftest import check_accessibility, plain, screenshot, sign_in

pytestmark = pytest.mark.browser


def test_school_request_queue_intake_and_single_use_export_download(serve, page):
    server = serve()
    with server.app.app_context():
        school, connection = s.connected_school(make)
        s.write(connection, [PupilRecord(external_id="mis-77", legal_forename="Ada", legal_surname="Byron",
                                         date_of_birth=date(2014, 12, 10), year_group="6")])
        admin = make.user(Role.school_admin, school)
        db.session.commit()
        school, admin = plain(school), plain(admin)
    sign_in(page, server.url, admin)
    page.goto(f"{server.url}/schools/{school.id}/requests")
    expect(page.get_by_test_id("no-requests")).to_be_visible()
    check_accessibility(page)

    page.get_by_role("link", name="Record a request").click()
    # An empty search says so; a search that finds nobody says so too.
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("Enter an MIS id, a UPN, or a surname and date of birth to search.")).to_be_visible()
    page.get_by_label("Surname").fill("byron")
    page.get_by_label("Day").fill("11")
    page.get_by_label("Month").fill("12")
    page.get_by_label("Year").fill("2014")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_test_id("no-matches")).to_be_visible()
    check_accessibility(page)
    # Dates are typed as day, month and year (GOV.UK date input), not picked in the browser's own widget.
    assert page.locator("input[type=date]").count() == 0
    page.get_by_label("Day").fill("10")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_test_id("matches").get_by_text("mis-77")).to_be_visible()
    check_accessibility(page)
    page.get_by_role("link", name="Choose Ada Byron").click()

    # A missing choice is reported on the form, nothing saved.
    page.get_by_role("button", name="Record the request").click()
    expect(page.get_by_text("Choose the type of request.").first).to_be_visible()
    check_accessibility(page)
    page.get_by_label("Access").check()
    page.get_by_label("How it was received").select_option("letter")
    page.get_by_label("Who is asking").select_option("parent_carer")
    page.get_by_label("Relationship to the pupil").fill("mother")
    page.get_by_role("button", name="Record the request").click()
    assert page.get_by_test_id("status").inner_text() == "Identity pending"
    assert page.locator("input[type=date]").count() == 0
    check_accessibility(page)

    page.get_by_label("How identity was checked").select_option("known_to_school")
    page.get_by_role("button", name="Record verification").click()
    page.get_by_role("button", name="Prepare the export").click()
    expect(page.get_by_test_id("export-ready")).to_be_visible()
    check_accessibility(page)
    link = page.get_by_role("link", name="Download the export (zip)")
    href = link.get_attribute("href")
    with page.expect_download() as info:
        link.click()
    archive = zipfile.ZipFile(io.BytesIO(Path(info.value.path()).read_bytes()))
    document = json.loads(archive.read("export.json"))
    assert document["tables"]["mis_pupils"][0]["legal_surname"] == "Byron"

    # Single use: the same link now explains itself instead of serving the file again.
    page.goto(f"{server.url}{href}")
    expect(page.get_by_text("already been used")).to_be_visible()

    page.goto(f"{server.url}/schools/{school.id}/requests")
    queue = page.get_by_test_id("request-queue")
    expect(queue.get_by_text("Access")).to_be_visible()
    check_accessibility(page)


def test_r51_restricting_named_features_and_r49_r52_the_account_page(serve, page):
    server = serve()
    with server.app.app_context():
        from portal.privacy import register

        product = s.product("pupil_tracking", "self_evaluation_early_results", name="Two features")
        school, connection = s.connected_school(make, product)
        s.write(connection, s.pupils(2))
        admin = make.user(Role.school_admin, school)
        req = register.create(user=admin, request_type="restriction", received_on=date.today(), channel="email",
                              requester_kind="parent_carer", subject_type="pupil", school=school, subject_external_id="p1")
        register.verify_identity(req, admin, "known_to_school")
        db.session.commit()
        school, admin, req = plain(school), plain(admin), plain(req, "id")
    sign_in(page, server.url, admin)
    page.goto(f"{server.url}/schools/{school.id}/requests/{req.id}")
    expect(page.get_by_test_id("restrict-features")).to_be_visible()
    check_accessibility(page)
    page.get_by_label("Why").select_option("accuracy_contested")
    page.get_by_label("Pupil tracking").check()
    page.get_by_role("button", name="Restrict processing").click()
    expect(page.get_by_test_id("restricted")).to_have_text(
        "Restricted for Pupil tracking and analysis of assessment data for current students")
    check_accessibility(page)

    page.get_by_role("link", name="My account").click()
    expect(page.get_by_role("heading", name="My account")).to_be_visible()
    check_accessibility(page)
    checkbox = page.get_by_label("Send me news and offers")
    expect(checkbox).not_to_be_checked()
    checkbox.check()
    page.get_by_role("button", name="Save your choice").click()
    expect(page.get_by_text("You will get marketing emails.")).to_be_visible()
    page.get_by_label("Email address").fill("someone-new@example.org")
    page.get_by_role("button", name="Save your details").click()
    expect(page.get_by_test_id("pending-email")).to_contain_text("someone-new@example.org")
    check_accessibility(page)
    screenshot(page, "account")


def test_r48_support_staff_answer_a_users_access_request_and_download_it_once(serve, page):
    server = serve()
    with server.app.app_context():
        from portal.privacy import register

        someone = make.user(Role.school_viewer, make.school(), email="someone@example.org")
        staff = make.user(support=True)
        req = register.create(user=staff, request_type="access", received_on=date.today(), channel="email",
                              requester_kind="user", subject_type="user", subject_user_id=someone.id)
        db.session.commit()
        staff, req = plain(staff), plain(req, "id")
    sign_in(page, server.url, staff)
    page.goto(f"{server.url}/admin/dsr_users/")
    check_accessibility(page)
    page.get_by_role("link", name=f"Request {req.id}").click()
    page.get_by_label("How identity was checked").select_option("signed_in")
    page.get_by_role("button", name="Record verification").click()
    page.get_by_role("button", name="Prepare the export").click()
    expect(page.get_by_test_id("export-ready")).to_be_visible()
    check_accessibility(page)
    screenshot(page, "admin-user-request")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download the export (zip)").click()
    document = json.loads(zipfile.ZipFile(io.BytesIO(Path(info.value.path()).read_bytes())).read("export.json"))
    assert document["account"]["email"] == "someone@example.org"
