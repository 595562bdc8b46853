"""In Chromium: a school admin grants support access (R58) and approves then ends a link (R57); support staff keep the
sub-processor register (R66) and open a breach record and record its notices (R69). Every form is submitted here."""
from __future__ import annotations

from datetime import date

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from portal.extensions import db
from portal.models import Breach, BreachNotice, Organisation, OrgKind, Role, SchoolLink, SubProcessor, SupportGrant
from tests import api_support as s
from tests import factories as make
from tests.browser.conftest import check_accessibility, plain, sign_in

pytestmark = pytest.mark.browser


def test_r57_r58_school_admin_grants_support_access_and_approves_then_ends_a_link(serve, page):
    server = serve()
    with server.app.app_context():
        product = s.product("self_evaluation_early_results")
        school, connection = s.connected_school(make, product)
        s.write(connection, s.pupils(2, prefix="b"))
        admin = make.user(Role.school_admin, school)
        support = make.user(support=True, email="helpdesk@operator.example")
        support.confidentiality_agreed_on = date(2025, 9, 1)
        diocese = Organisation(kind=OrgKind.diocese, name="Diocese of Browserton")
        db.session.add(diocese)
        db.session.flush()
        officer = make.user(Role.diocese_officer, diocese)
        db.session.commit()
        school, admin, officer = plain(school), plain(admin), plain(officer)

    sign_in(page, server.url, admin)
    page.goto(f"{server.url}/schools/{school.id}/support-access")
    form = page.get_by_test_id("grant-form")
    form.get_by_label("Support staff email address").fill("helpdesk@operator.example")
    form.get_by_label("For how many hours").fill("30")
    form.get_by_label("Support ticket reference").fill("TICKET-7")
    form.get_by_label("Why support staff need to see pupil data").fill("Check a missing year group")
    form.get_by_role("button", name="Grant support access").click()
    expect(page.get_by_role("alert")).to_contain_text("between 1 and 24 hours")
    with server.app.app_context():
        assert db.session.execute(select(SupportGrant)).first() is None
    page.get_by_label("For how many hours").fill("2")
    page.get_by_role("button", name="Grant support access").click()
    expect(page.get_by_test_id("grants")).to_contain_text("TICKET-7")
    expect(page.get_by_test_id("grants")).to_contain_text("Active")
    check_accessibility(page)
    page.get_by_role("button", name="End now").click()
    expect(page.get_by_test_id("grants")).to_contain_text("Ended")
    with server.app.app_context():
        assert db.session.execute(select(SupportGrant.ended_at)).scalar_one() is not None

    page.goto(f"{server.url}/schools/{school.id}/links/new")
    page.get_by_role("button", name="Approve the link").click()
    expect(page.get_by_role("alert")).to_be_visible()
    page.get_by_label("Organisation").select_option(label="Diocese of Browserton (diocese)")
    page.get_by_label("Feature it may use").select_option(value="self_evaluation_early_results")
    page.get_by_label("Service agreement reference").fill("SLA-99")
    check_accessibility(page)
    page.get_by_role("button", name="Approve the link").click()
    expect(page.get_by_test_id("links")).to_contain_text("Diocese of Browserton")
    check_accessibility(page)

    page.context.clear_cookies()
    sign_in(page, server.url, officer)
    page.goto(f"{server.url}/schools/{school.id}/pupils")
    expect(page.get_by_test_id("pupils")).to_contain_text("Pupil0")

    page.context.clear_cookies()
    sign_in(page, server.url, admin)
    page.goto(f"{server.url}/schools/{school.id}/data-use")
    page.get_by_role("button", name="End link with Diocese of Browserton").click()
    expect(page.get_by_test_id("no-links")).to_be_visible()
    with server.app.app_context():
        assert db.session.execute(select(SchoolLink.ended_at)).scalar_one() is not None

    page.context.clear_cookies()
    sign_in(page, server.url, officer)
    page.goto(f"{server.url}/schools/{school.id}/pupils")
    expect(page.get_by_text("Page not found")).to_be_visible()


def test_r66_r69_support_keeps_the_register_and_records_a_breach_with_its_notices(serve, page):
    server = serve()
    with server.app.app_context():
        staff = plain(make.user(support=True))
        db.session.commit()
    sign_in(page, server.url, staff)

    page.goto(f"{server.url}/admin/sub-processors/")
    form = page.get_by_test_id("sub-processor-form")
    form.get_by_label("Name").fill("CRM Inc")
    form.get_by_label("Purpose").fill("Customer management")
    form.get_by_label("Country (two-letter code, GB for the UK)").fill("US")
    form.get_by_label("Personal data it receives").fill("User names and emails")
    form.get_by_label("UK transfer mechanism").select_option("privacy_shield")
    form.get_by_role("button", name="Add to the register").click()
    expect(page.get_by_role("alert")).to_contain_text("Privacy Shield")
    page.get_by_label("UK transfer mechanism").select_option("uk_us_data_bridge")
    page.get_by_role("button", name="Add to the register").click()
    expect(page.get_by_test_id("register")).to_contain_text("CRM Inc")
    with server.app.app_context():
        assert db.session.execute(select(SubProcessor.mechanism)).scalar_one().value == "uk_us_data_bridge"
    page.goto(f"{server.url}/privacy/sub-processors")
    expect(page.get_by_test_id("sub-processors")).to_contain_text("UK–US data bridge")
    page.goto(f"{server.url}/admin/sub-processors/")
    page.get_by_role("button", name="Remove CRM Inc").click()
    expect(page.get_by_text("The register is empty.")).to_be_visible()

    page.goto(f"{server.url}/admin/breaches/")
    form = page.get_by_test_id("breach-form")
    form.get_by_label("When the operator became aware (UK time)").fill("2025-05-02T16:00")
    form.get_by_label("What happened (no personal data)").fill("A support laptop was lost")
    form.get_by_role("button", name="Open the breach record").click()
    expect(page.get_by_test_id("deadline")).to_contain_text("5 May 2025")
    expect(page.get_by_test_id("deadline")).to_contain_text("16:00")
    notice = page.get_by_test_id("notice-form")
    notice.get_by_label("The ICO").check()
    notice.get_by_label("Reference (ICO case number, or how individuals were told)").fill("ICO-2025-001")
    notice.get_by_role("button", name="Record the notice").click()
    expect(page.get_by_test_id("notices")).to_contain_text("ICO-2025-001")
    page.get_by_label("Status").select_option("confirmed")
    page.get_by_role("button", name="Change status").click()
    expect(page.get_by_test_id("status")).to_have_text("Confirmed")
    with server.app.app_context():
        breach = db.session.execute(select(Breach)).scalar_one()
        assert breach.aware_at.isoformat() == "2025-05-02T15:00:00+00:00"
        assert [n.reference for n in db.session.execute(select(BreachNotice)).scalars()] == ["ICO-2025-001"]
