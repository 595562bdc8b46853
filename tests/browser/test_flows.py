"""End-to-end in Chromium: authorise Wonde, approval, extract, history, revoke; held removal; trust and LA views; axe on every page."""
from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect
import requests
from sqlalchemy import select

from portal.extensions import db
from portal.models import Connection, ConnectionState, Feature, JobRun, Product, Role, RunStatus, SubscriptionRoute
from portal.sandbox.synthetic import generate_school
from portal_wonde.sandbox import WondeSandbox
from tests import factories as make
from tests.browser.conftest import check_accessibility, plain, screenshot, sign_in

pytestmark = pytest.mark.browser

SECRET = "browser-test-webhook-secret"
URN = "765432"


@pytest.fixture
def sandbox():
    school = generate_school(11, pupils=40, days=5, phase="secondary", urn=URN, la_code="203", establishment_number="4002")
    with WondeSandbox([school], state="none") as running:
        yield running


@pytest.fixture
def wonde_server(serve, sandbox):
    return serve(
        PLUGINS=["tests.plugins.fake_connector", "portal_wonde.plugin"],
        ENABLED_CONNECTORS=["wonde"],
        CONNECTORS={"wonde": {**sandbox.settings, "webhook_secret": SECRET}},
    )


def _school_with_product(urn: str = URN):
    school = make.school("Northgate Academy")
    school.urn = urn
    admin = make.user(Role.school_admin, school)
    product = Product(name="Progress insights", purpose="Pupil progress and attendance analysis")
    product.features.extend([db.session.get(Feature, "pupil_tracking"), db.session.get(Feature, "user_provisioning")])
    db.session.add(product)
    db.session.flush()
    from portal.api.authorisations import authorise_product

    authorise_product(school, product, admin)
    db.session.commit()
    return plain(school), plain(admin)


def _wonde_posts_webhook(server, sandbox, kind: str) -> requests.Response:
    """Play Wonde: after the school acts in Wonde's portal, Wonde posts the event to the registered URL."""
    payload = {"payload_type": kind, "school_id": sandbox.school_id(), "school_name": "x", "school_urn": URN,
               "school_la_code": "203", "school_establishment_number": "4002", "school_token": "f" * 40}
    return requests.post(f"{server.url}/webhooks/wonde/{SECRET}", data=json.dumps(payload),
                         headers={"Content-Type": "application/json"}, timeout=30)


def test_school_admin_authorises_wonde_extract_shows_in_history_and_revoke_stops_the_next_run(wonde_server, sandbox, page):
    from portal.extract import run_extract

    base = wonde_server.url
    with wonde_server.app.app_context():
        school, admin = _school_with_product()
        school_id = school.id
    sign_in(page, base, admin)
    # An admin of one school lands on that school's connections, not on a one-row list.
    expect(page.get_by_test_id("connections")).to_be_visible()
    assert page.get_by_test_id("school-list").count() == 0
    page.get_by_role("link", name="Connections").click()
    page.wait_for_url(f"**/schools/{school_id}/connections")
    check_accessibility(page)
    screenshot(page, "connections-not-connected")

    # Terms (R2): refused without the tick, accepted with it.
    page.get_by_role("link", name="Read and accept the terms").click()
    page.get_by_role("button", name="Accept terms").click()
    expect(page.get_by_role("alert").get_by_text("Tick the box to accept the terms.")).to_be_visible()
    check_accessibility(page)
    screenshot(page, "terms-error")
    page.get_by_label("I accept these terms on behalf of the school").check()
    page.get_by_role("button", name="Accept terms").click()
    expect(page.get_by_test_id("terms-status").get_by_text("accepted")).to_be_visible()

    # Authorise: bad input shows what is wrong, then the request goes to the sandbox.
    page.get_by_role("link", name="Authorise Wonde").click()
    check_accessibility(page)
    page.get_by_label("Email address of the school contact").fill("not an email")
    page.get_by_role("button", name="Request access").click()
    expect(page.get_by_role("alert").get_by_text("Enter an email address in the correct format")).to_be_visible()
    check_accessibility(page)
    screenshot(page, "authorise-error")
    page.get_by_label("Email address of the school contact").fill("data.manager@northgate.example")
    page.get_by_role("button", name="Request access").click()
    row = page.locator('tr[data-connector="wonde"]')
    expect(row.get_by_text("Pending approval")).to_be_visible()
    screenshot(page, "connections-pending")
    assert sandbox.states[sandbox.school_id()] == "pending"

    # The school approves in Wonde's portal; Wonde posts schoolApproved; the portal confirms it with the sandbox.
    requests.post(f"{sandbox.url.rsplit('/v1.0', 1)[0]}/__sandbox/schools/{sandbox.school_id()}/approve", timeout=30)
    assert _wonde_posts_webhook(wonde_server, sandbox, "schoolApproved").json()["state"] == "approved"
    page.reload()
    expect(row.get_by_text("Approved")).to_be_visible()

    # An extract runs (as the scheduler would) and appears in the history with counts.
    with wonde_server.app.app_context():
        conn = db.session.execute(select(Connection).where(Connection.school_id == school_id)).scalar_one()
        conn_id = conn.id
        run = run_extract(conn_id, mode="full")
        assert run.status == RunStatus.succeeded, (run.error_code, run.error_message)
        run_id, pupils = run.id, run.stats["categories"]["student_basic"]["inserted"]
    page.get_by_role("link", name="Run history").click()
    runs_row = page.locator(f'tr[data-run-id="{run_id}"]')
    expect(runs_row.get_by_text("Succeeded")).to_be_visible()
    assert pupils >= 40
    check_accessibility(page)
    screenshot(page, "run-history")
    runs_row.get_by_role("link", name=f"Run {run_id}").click()
    assert page.locator('tr[data-category="student_basic"] td').first.inner_text() == str(pupils)
    check_accessibility(page)
    screenshot(page, "run-detail")

    page.get_by_role("link", name="Who uses our data").click()
    expect(page.get_by_text("Progress insights").first).to_be_visible()
    expect(page.locator('tr[data-category="student_basic"]').get_by_text("As of")).to_be_visible()
    check_accessibility(page)
    screenshot(page, "data-use")
    page.get_by_role("link", name="Printable data-use statement").click()
    check_accessibility(page)
    screenshot(page, "data-use-statement")
    page.go_back()

    # Revoke (R4, R6): the confirmation says what stops; bad input changes nothing; then it stops at once.
    page.get_by_role("link", name="Connections").click()
    page.get_by_role("link", name="Revoke Wonde").click()
    expect(page.get_by_test_id("stopping-features").get_by_text("Pupil tracking", exact=False)).to_be_visible()
    expect(page.get_by_test_id("deletion-date")).to_be_visible()
    check_accessibility(page)
    screenshot(page, "revoke-confirmation")
    page.get_by_role("button", name="Revoke connection").click()
    expect(page.get_by_role("alert").get_by_text("Tick the box to confirm")).to_be_visible()
    check_accessibility(page)
    with wonde_server.app.app_context():
        assert db.session.get(Connection, conn_id).state == ConnectionState.approved
    page.get_by_label("Delete it on the date shown above").check()
    page.get_by_label("I understand that no more data will be extracted").check()
    page.get_by_role("button", name="Revoke connection").click()
    expect(page.locator('tr[data-connector="wonde"]').get_by_text("Revoked")).to_be_visible()
    assert sandbox.states[sandbox.school_id()] == "revoked"

    sandbox.clear_log()
    with wonde_server.app.app_context():
        stopped = run_extract(conn_id, mode="auto")
        assert stopped.status == RunStatus.cancelled
    assert sandbox.requests("/students") == []
    page.get_by_role("link", name="History", exact=True).click()
    expect(page.locator('tr[data-action="connection.revoked"]').get_by_text(admin.name)).to_be_visible()
    check_accessibility(page)
    screenshot(page, "history")


def test_held_mass_removal_is_approved_by_support_staff(serve, sandbox, page):
    from portal.extract import run_extract

    server = serve(
        PLUGINS=["tests.plugins.fake_connector", "portal_wonde.plugin"],
        ENABLED_CONNECTORS=["wonde"],
        CONNECTORS={"wonde": sandbox.settings},
    )
    sandbox.set_state(sandbox.school_id(), "approved")
    with server.app.app_context():
        school, _admin = _school_with_product()
        conn = Connection(school_id=school.id, connector="wonde", state=ConnectionState.approved,
                          provider_school_id=sandbox.school_id())
        db.session.add(conn)
        staff = make.user(support=True)
        db.session.commit()
        staff = plain(staff)
        assert run_extract(conn.id, mode="full").status == RunStatus.succeeded
        sandbox.mutate(0, deleted=20)
        held = run_extract(conn.id, mode="full")
        assert held.status == RunStatus.held
        held_id = held.id
    sign_in(page, server.url, staff)
    page.goto(f"{server.url}/admin/operations/")
    held_row = page.locator(f'[data-testid="held-runs"] tr[data-run-id="{held_id}"]')
    expect(held_row).to_be_visible()
    check_accessibility(page)
    screenshot(page, "admin-operations")
    held_row.get_by_role("button", name="Approve removal").click()
    expect(page.get_by_text(f"Held run {held_id} approved")).to_be_visible()
    with server.app.app_context():
        run = db.session.get(JobRun, held_id)
        assert run.status == RunStatus.succeeded
        assert run.stats["categories"]["student_basic"]["tombstoned"] == 20


def test_trust_admin_sees_two_schools_and_not_a_third(serve, page):
    server = serve()
    with server.app.app_context():
        trust = make.trust("Riverside Learning Trust")
        first, second = make.school("Riverside Primary", trust=trust), make.school("Riverside High", trust=trust)
        other = make.school("Elsewhere School")
        admin = make.user(Role.trust_admin, trust)
        db.session.commit()
        first, second, other, admin = plain(first), plain(second), plain(other), plain(admin)
    sign_in(page, server.url, admin)
    listing = page.get_by_test_id("school-list")
    expect(listing.get_by_text(first.name)).to_be_visible()
    expect(listing.get_by_text(second.name)).to_be_visible()
    assert listing.get_by_text(other.name).count() == 0
    check_accessibility(page)
    screenshot(page, "home-trust")
    page.goto(f"{server.url}/schools/{other.id}/connections")
    expect(page.get_by_text("Page not found")).to_be_visible()
    page.goto(f"{server.url}/runs")
    check_accessibility(page)


def test_la_officer_sees_only_schools_subscribed_through_the_la(serve, page):
    server = serve()
    with server.app.app_context():
        la = make.local_authority("Northshire")
        via_la = make.school("Brook Primary", la=la, route=SubscriptionRoute.local_authority)
        direct = make.school("Meadow Primary", la=la, route=SubscriptionRoute.direct)
        officer = make.user(Role.la_officer, la)
        db.session.commit()
        via_la, direct, officer = plain(via_la), plain(direct), plain(officer)
    sign_in(page, server.url, officer)
    listing = page.get_by_test_id("school-list")
    expect(listing.get_by_text(via_la.name)).to_be_visible()
    assert listing.get_by_text(direct.name).count() == 0
    check_accessibility(page)
    screenshot(page, "home-la")
    listing.get_by_role("link", name=via_la.name).click()
    page.wait_for_url(f"**/schools/{via_la.id}/connections")  # count() below must read the school's page, not the list
    assert page.get_by_role("link", name="Authorise Fake MIS").count() == 0
    check_accessibility(page)


def test_school_admin_authorises_and_ends_a_product_on_the_products_tab(serve, page):
    server = serve()
    with server.app.app_context():
        school = make.school("Hillside Primary")
        admin = make.user(Role.school_admin, school)
        product = Product(name="Attendance insight", purpose="Student attendance reporting and analysis")
        product.features.append(db.session.get(Feature, "attendance_reporting"))
        db.session.add(product)
        db.session.commit()
        school, admin = plain(school), plain(admin)
    sign_in(page, server.url, admin)
    page.goto(f"{server.url}/schools/{school.id}/products")
    expect(page.get_by_test_id("no-connection")).to_be_visible()
    check_accessibility(page)

    # Authorise (R3): the confirmation lists what it reads; without the tick nothing happens.
    page.get_by_role("link", name="Authorise Attendance insight").click()
    page.get_by_role("button", name="Authorise product").click()
    expect(page.get_by_role("alert").get_by_text("Tick the box to confirm you authorise this product.")).to_be_visible()
    check_accessibility(page)
    page.get_by_label("I authorise this product to read").check()
    page.get_by_role("button", name="Authorise product").click()
    expect(page.get_by_text("Attendance insight is authorised")).to_be_visible()
    check_accessibility(page)
    screenshot(page, "products")

    # End (R4, R6, R7): the confirmation says what stops and asks what to delete.
    page.get_by_role("link", name="End authorisation of Attendance insight").click()
    expect(page.get_by_test_id("stopping-features").get_by_text("Student attendance reporting")).to_be_visible()
    page.get_by_role("button", name="End authorisation").click()
    expect(page.get_by_role("alert").get_by_text("Choose what should happen")).to_be_visible()
    check_accessibility(page)
    screenshot(page, "product-end-confirmation")
    page.get_by_label("Delete it at the next daily deletion run").check()
    page.get_by_label("I understand that this product will no longer get").check()
    page.get_by_role("button", name="End authorisation").click()
    expect(page.get_by_text("Attendance insight no longer has access")).to_be_visible()
    expect(page.get_by_role("link", name="Authorise Attendance insight")).to_be_visible()
