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
from tests.browser.conftest import check_accessibility, plain, sign_in

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
    page.get_by_label("Surname").fill("byron")
    page.get_by_label("Date of birth").fill("2014-12-10")
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
    assert page.get_by_test_id("status").inner_text() == "identity pending"
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
