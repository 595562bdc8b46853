"""Two-factor enrolment in Chromium: the QR code beside the key, recovery codes shown once, a recovery code signs in."""
from __future__ import annotations

import re

import pyotp
import pytest
from playwright.sync_api import expect

from portal.extensions import db
from tests import factories as make
from tests.browser.conftest import check_accessibility, plain, screenshot

pytestmark = pytest.mark.browser


def test_support_staff_enrol_with_the_qr_code_and_later_sign_in_with_a_recovery_code(serve, page):
    server = serve()
    with server.app.app_context():
        user = make.user(support=True)
        user.totp_secret, user.totp_enabled = None, False
        db.session.commit()
        user = plain(user)
    page.goto(f"{server.url}/login")
    page.get_by_label("Email address").fill(user.email)
    page.get_by_label("Password").fill(make.PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/login/totp/setup")
    qr = page.get_by_test_id("totp-qr").locator("svg")
    expect(qr).to_be_visible()
    box = qr.bounding_box()
    assert box["width"] >= 120 and box["height"] >= 120, "the QR code is too small to scan"
    secret = page.get_by_test_id("totp-secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    check_accessibility(page)
    screenshot(page, "totp-setup")
    page.get_by_label("6-digit code from your authenticator app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on two-factor sign-in").click()
    expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    codes = [c.strip() for c in page.get_by_test_id("recovery-codes").locator("code").all_inner_texts()]
    assert len(codes) == 10 and all(re.fullmatch(r"[a-z2-9]{5}-[a-z2-9]{5}", c) for c in codes)
    check_accessibility(page)
    screenshot(page, "recovery-codes")
    page.get_by_role("link", name="I have saved my codes – continue").click()
    # Never shown again.
    page.get_by_role("link", name="Two-factor sign-in").click()
    expect(page.get_by_test_id("codes-left")).to_contain_text("10 unused recovery codes")
    assert codes[0] not in page.content()
    page.get_by_role("button", name="Sign out").click()

    # The phone is lost: sign in with a recovery code.
    page.get_by_label("Email address").fill(user.email)
    page.get_by_label("Password").fill(make.PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/login/totp")
    page.get_by_role("link", name="Lost your phone? Use a recovery code").click()
    page.get_by_label("Recovery code").fill(codes[0])
    check_accessibility(page)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_text("You have 9 left")).to_be_visible()
    expect(page.get_by_role("link", name="Support admin")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()

    # The same code does not work twice.
    page.get_by_label("Email address").fill(user.email)
    page.get_by_label("Password").fill(make.PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/login/totp")
    page.goto(f"{server.url}/login/recovery")
    page.get_by_label("Recovery code").fill(codes[0])
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_text("That recovery code is not right, or it has been used already.").first).to_be_visible()
    assert page.get_by_role("link", name="Support admin").count() == 0
