"""Two-factor enrolment shows a QR code and one-time recovery codes; a recovery code signs in once, instead of a TOTP code."""
from __future__ import annotations

import re

import pyotp
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry, RecoveryCode, Role, User
from tests.factories import PASSWORD

CODE = re.compile(rb"<code>([a-z2-9]{5}-[a-z2-9]{5})</code>")


def _enrol(client, user) -> list[str]:
    """Sign in with the password and set up TOTP at first sign-in; return the recovery codes shown."""
    client.post("/login", data={"email": user.email, "password": PASSWORD})
    page = client.get("/login/totp/setup")
    secret = re.search(rb'data-testid="totp-secret">([A-Z2-7]+)<', page.data).group(1).decode()
    resp = client.post("/login/totp/setup", data={"code": pyotp.TOTP(secret).now()})
    assert resp.status_code == 200
    return [c.decode() for c in CODE.findall(resp.data)]


def _support_without_totp(make):
    user = make.user(support=True)
    user.totp_secret, user.totp_enabled = None, False
    db.session.commit()
    return user


def test_enrolment_page_shows_a_qr_code_of_the_link_beside_the_key(app, client, make):
    user = _support_without_totp(make)
    client.post("/login", data={"email": user.email, "password": PASSWORD})
    page = client.get("/login/totp/setup").data.decode()
    qr = re.search(r'data-testid="totp-qr">(<svg.*?</svg>)', page, re.S)
    assert qr, "no QR code on the enrolment page"
    assert "<title>QR code to scan with an authenticator app</title>" in qr.group(1)
    assert "style=" not in qr.group(1)  # CSP: no inline styles
    db.session.refresh(user)
    assert user.totp_secret in page
    assert "otpauth://totp/" in page


def test_qr_code_decodes_to_the_provisioning_link(app):
    # The SVG is segno's rendering of exactly the link the key belongs to.
    import segno

    from portal.auth.qr import qr_svg

    uri = pyotp.TOTP("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").provisioning_uri(name="a@example.org", issuer_name="MIS connection portal")
    expected = segno.make(uri, error="m").svg_inline(
        scale=5, border=2, dark="#0b0c0c", light="#ffffff", title="QR code to scan with an authenticator app"
    )
    assert str(qr_svg(uri)) == expected
    assert str(qr_svg(uri + "x")) != expected


def test_recovery_codes_are_shown_once_and_stored_hashed(app, client, make):
    user = _support_without_totp(make)
    codes = _enrol(client, user)
    assert len(codes) == 10 and len(set(codes)) == 10
    stored = db.session.execute(select(RecoveryCode.code_hash).where(RecoveryCode.user_id == user.id)).scalars().all()
    assert len(stored) == 10 and all(h.startswith("$argon2") for h in stored)
    assert not any(c.replace("-", "") in h for c in codes for h in stored)
    # Never shown again: the two-factor page only counts them.
    page = client.get("/login/totp/setup").data
    assert b"You have 10 unused recovery codes" in page
    assert not any(c.encode() in page for c in codes)


def test_a_recovery_code_signs_in_instead_of_a_totp_code_once(app, client, make, auth):
    user = _support_without_totp(make)
    codes = _enrol(client, user)
    auth.logout()
    resp = client.post("/login", data={"email": user.email, "password": PASSWORD})
    assert resp.headers["Location"] == "/login/totp"
    assert b"Use a recovery code" in client.get("/login/totp").data
    typed = "  " + codes[3].upper().replace("-", " ") + " "  # people type codes loosely
    resp = client.post("/login/recovery", data={"code": typed})
    assert resp.status_code == 302
    assert b"You have 9 left" in client.get("/home", follow_redirects=True).data
    assert client.get("/admin/").status_code == 200  # a full, second-factor sign-in
    actions = db.session.execute(select(AuditEntry.action)).scalars().all()
    assert "auth.recovery_code_used" in actions
    auth.logout()
    client.post("/login", data={"email": user.email, "password": PASSWORD})
    again = client.post("/login/recovery", data={"code": codes[3]})
    assert again.status_code == 401 and b"used already" in again.data
    assert client.get("/home").status_code == 302
    # Another code still works.
    assert client.post("/login/recovery", data={"code": codes[4]}).status_code == 302


def test_recovery_code_page_needs_the_password_first(app, client, make):
    user = _support_without_totp(make)
    codes = _enrol(client, user)
    fresh = app.test_client()
    resp = fresh.post("/login/recovery", data={"code": codes[0]})
    assert resp.status_code == 302 and resp.headers["Location"] == "/login"
    assert db.session.execute(select(RecoveryCode).where(RecoveryCode.used_at.is_not(None))).first() is None


def test_new_recovery_codes_replace_the_old_ones(app, client, make, auth):
    user = make.user(Role.school_viewer, make.school())
    db.session.commit()
    auth.login(user)
    client.get("/login/totp/setup")
    db.session.refresh(user)
    first = [c.decode() for c in CODE.findall(
        client.post("/login/totp/setup", data={"code": pyotp.TOTP(user.totp_secret).now()}).data
    )]
    second = [c.decode() for c in CODE.findall(client.post("/login/totp/recovery-codes").data)]
    assert len(second) == 10 and not set(first) & set(second)
    auth.logout()
    client.post("/login", data={"email": user.email, "password": PASSWORD})
    assert client.post("/login/recovery", data={"code": first[0]}).status_code == 401
    assert client.post("/login/recovery", data={"code": second[0]}).status_code == 302
    assert db.session.get(User, user.id).totp_enabled
