"""The support back office in a real browser: every admin form creates and edits a record (strict CSP, see conftest)."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import Connection, Membership, Organisation, Product, User
from portal.models.retention import DfeAgreement, LegalHold, RetentionRule
from tests.browser.conftest import plain, sign_in
from tests.test_retention import World

pytestmark = pytest.mark.browser

SAVED = "Record was successfully"


@pytest.fixture
def back_office(serve, make):
    """A live portal with a signed-in-able support user, a school with a pupil, and records to edit."""
    server = serve()
    with server.app.app_context():
        world = World(make)
        conn = world.school()
        pupil = world.pupil(conn)
        trust = make.trust("Browser Test Trust")
        staff = make.user(support=True)
        teacher = make.user()
        db.session.commit()
        ids = {"school": conn.school_id, "pupil": pupil.id, "connection": conn.id, "trust": trust.id, "teacher": teacher.id}
        staff = plain(staff)
    return server, staff, ids


def _submit(page, expect: str = SAVED) -> None:
    """Send the form with its Save button as a person would, and require flask-admin's success message."""
    page.locator("h1").click()  # closes an open date picker, as clicking away does
    page.locator("form.admin-form input[type=submit][value=Save], form input[type=submit][value=Save]").first.click()
    page.wait_for_load_state()
    body = page.locator("body").inner_text()
    assert "expired or was sent from elsewhere" not in body, body[:500]
    assert expect in body, f"{page.url}: {body[:800]}"


def _count(app, model, *where) -> int:
    with app.app_context():
        return db.session.execute(select(func.count()).select_from(model).where(*where)).scalar()


def _pick(page, field: str, label: str) -> None:
    """Choose an option of a select (select2 hides the real one; its value is what the form sends)."""
    page.locator(f"select[name={field}]").select_option(label=label, force=True)


def test_support_creates_and_edits_a_record_in_every_admin_view_through_the_real_forms(back_office, page):
    server, staff, ids = back_office
    app, base = server.app, server.url
    sign_in(page, base, staff)

    # Organisations
    page.goto(f"{base}/admin/organisations/new/")
    _pick(page, "kind", "trust")
    page.get_by_label("Name").fill("Made In Browser Trust")
    _submit(page)
    made = _count(app, Organisation, Organisation.name == "Made In Browser Trust")
    assert made == 1
    page.goto(f"{base}/admin/organisations/edit/?id={ids['trust']}")
    page.get_by_label("Name").fill("Renamed Browser Trust")
    _submit(page)
    assert _count(app, Organisation, Organisation.name == "Renamed Browser Trust") == 1
    # A school's GIAS statutory high age (it pre-fills the last year group R30 starts from): out of range is refused.
    page.goto(f"{base}/admin/organisations/edit/?id={ids['school']}")
    age = page.get_by_label("Statutory high age (GIAS)")
    age.fill("30")
    page.locator("form input[type=submit][value=Save]").first.click()
    # The browser refuses to send it (the field carries the validator's range) and says why beside the field.
    assert age.evaluate("e => e.validity.rangeOverflow") and age.evaluate("e => e.validationMessage")
    with app.app_context():
        assert db.session.get(Organisation, ids["school"]).statutory_high_age is None
    age.fill("18")
    _submit(page)
    with app.app_context():
        assert db.session.get(Organisation, ids["school"]).statutory_high_age == 18

    # Users
    page.goto(f"{base}/admin/users/new/")
    page.get_by_label("Name").fill("Browser Made")
    page.get_by_label("Email").fill("browser.made@example.org")
    _submit(page)
    assert _count(app, User, User.email == "browser.made@example.org") == 1
    page.goto(f"{base}/admin/users/edit/?id={ids['teacher']}")
    page.get_by_label("Name").fill("Renamed Teacher")
    _submit(page)
    assert _count(app, User, User.name == "Renamed Teacher") == 1

    # A list action through the "With selected" menu (static/admin.js), confirmed in the browser's dialog
    page.goto(f"{base}/admin/users/")
    page.locator(f"input.action-checkbox[value='{ids['teacher']}']").check()
    page.get_by_role("button", name="With selected").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Send password reset link").click()
    page.wait_for_load_state()
    assert "Password reset link sent to 1 active user(s)." in page.locator("main").inner_text()

    # Memberships
    page.goto(f"{base}/admin/memberships/new/")
    with app.app_context():
        teacher_email = db.session.get(User, ids["teacher"]).email
        school_name = db.session.get(Organisation, ids["school"]).name
    _pick(page, "user", teacher_email)
    _pick(page, "organisation", school_name)
    _pick(page, "role", "School viewer")
    _submit(page)
    with app.app_context():
        membership = db.session.execute(select(Membership).where(Membership.user_id == ids["teacher"])).scalar_one()
        membership_id = membership.id
    page.goto(f"{base}/admin/memberships/edit/?id={membership_id}")
    _pick(page, "role", "School admin")
    _submit(page)
    with app.app_context():
        assert db.session.get(Membership, membership_id).role.name == "school_admin"

    # Connections: staff pause and resume extracts (state changes go through the lifecycle, not this form)
    page.goto(f"{base}/admin/connections/edit/?id={ids['connection']}")
    page.get_by_label("Paused").check()
    _submit(page)
    with app.app_context():
        assert db.session.get(Connection, ids["connection"]).paused is True

    # Products
    page.goto(f"{base}/admin/products/new/")
    page.get_by_label("Name").fill("Browser Product")
    page.get_by_label("Purpose").fill("Reports attendance to the school's governors.")
    page.locator("select[name=features]").select_option(index=0, force=True)
    _submit(page)
    with app.app_context():
        product_id = db.session.execute(select(Product.id).where(Product.name == "Browser Product")).scalar_one()
    page.goto(f"{base}/admin/products/edit/?id={product_id}")
    page.get_by_label("Name").fill("Browser Product Renamed")
    _submit(page)
    assert _count(app, Product, Product.name == "Browser Product Renamed") == 1

    # Retention rules: a deployment adds a rule of its own, and support shortens a seeded period
    page.goto(f"{base}/admin/retention_rules/new/")
    page.locator("input[name=id]").fill("X1")
    page.locator("input[name=title]").fill("Local archive")
    page.locator("select[name=covers]").select_option("staff", force=True)
    page.locator("select[name=clock]").select_option("left", force=True)
    page.locator("input[name=period]").fill("3")
    page.locator("select[name=period_unit]").select_option(index=0, force=True)
    page.locator("select[name=timing]").select_option("asap", force=True)
    page.locator("select[name=action]").select_option(index=0, force=True)
    _submit(page)
    assert _count(app, RetentionRule, RetentionRule.id == "X1") == 1
    page.goto(f"{base}/admin/retention_rules/edit/?id=R29")
    page.locator("input[name=period]").fill("5")
    _submit(page)
    with app.app_context():
        assert db.session.get(RetentionRule, "R29").period == 5

    # Legal holds (R40)
    review = (date.today() + timedelta(days=60)).isoformat()
    page.goto(f"{base}/admin/legal_holds/new/")
    page.locator("input[name=school_id]").fill(str(ids["school"]))
    _pick(page, "record_table", "Pupil")
    page.locator("input[name=record_id]").fill(str(ids["pupil"]))
    page.locator("[name=reason]").fill("Employment tribunal")
    page.locator("input[name=review_on]").fill(review)
    _submit(page)
    with app.app_context():
        hold_id = db.session.execute(select(LegalHold.id)).scalar_one()
    page.goto(f"{base}/admin/legal_holds/edit/?id={hold_id}")
    page.locator("[name=reason]").fill("Employment tribunal, second claim")
    _submit(page)
    with app.app_context():
        assert db.session.get(LegalHold, hold_id).reason == "Employment tribunal, second claim"

    # The DfE agreement (R28)
    page.goto(f"{base}/admin/dfe_agreement/new/")
    page.locator("input[name=reference]").fill("DFE-2026-001")
    page.locator("input[name=ends_on]").fill((date.today() + timedelta(days=400)).isoformat())
    _submit(page)
    with app.app_context():
        agreement_id = db.session.execute(select(DfeAgreement.id)).scalar_one()
    page.goto(f"{base}/admin/dfe_agreement/edit/?id={agreement_id}")
    page.locator("input[name=reference]").fill("DFE-2026-002")
    _submit(page)
    assert _count(app, DfeAgreement, DfeAgreement.reference == "DFE-2026-002") == 1

    # The purpose-built forms: an API credential for the product, and a data-subject request about a user
    page.goto(f"{base}/admin/issue_credential/")
    page.get_by_label("Product").select_option(label="Browser Product Renamed")
    page.get_by_label("Label (who holds it)").fill("Browser Product operations")
    page.get_by_label("Valid for (days)").fill("30")
    page.get_by_role("button", name="Issue").click()
    assert page.get_by_test_id("token").inner_text().strip()
    page.goto(f"{base}/admin/dsr_intake/")
    page.get_by_label("Type").select_option(index=1)
    page.get_by_label("Received (YYYY-MM-DD)").fill(date.today().isoformat())
    page.get_by_label("Channel").select_option(index=1)
    page.get_by_label("Who is asking").select_option(index=1)
    page.get_by_label("About", exact=True).select_option("user")
    page.get_by_label("User id or email address (a request about a portal user)").fill(str(ids["teacher"]))
    page.get_by_role("button", name="Record").click()
    # expect() waits for the answer page; is_visible() alone read the form page before it arrived
    expect(page.get_by_test_id("done")).to_be_visible()

