"""Sign-in: passwords, rate limits, server-side sessions, CSRF, password reset and TOTP, through the real forms."""
from __future__ import annotations

import email
import re
from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import func, select, update

from portal.extensions import db
from portal.models import AuditEntry, PasswordResetToken, Role, User
from portal.models.base import utcnow
from tests.conftest import Auth, fresh_totp_code
from tests.factories import PASSWORD

GENERIC = b"The email address or password is not right"
NEW_PASSWORD = "a brand new passphrase 42"


def audit_actions() -> list[str]:
    return list(db.session.execute(select(AuditEntry.action).order_by(AuditEntry.id)).scalars())


def csrf_token(html: bytes) -> str:
    match = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1).decode()


def sent_mail(app) -> list[email.message.EmailMessage]:
    from portal.mail import outbox_dir

    folder = outbox_dir()
    if not folder.exists():
        return []
    return [email.message_from_bytes(p.read_bytes()) for p in sorted(folder.glob("*.eml"))]


def reset_link(message) -> str:
    body = message.get_payload(decode=True).decode()
    return re.search(r"https?://[^/\s]+(/password/reset/\S+)", body).group(1)


def signed_in(client) -> bool:
    resp = client.get("/home")
    return resp.status_code == 200


# ------------------------------------------------------------------ password sign-in


def test_sign_in_and_out(app, client, make, auth):
    user = make.user(Role.school_viewer, make.school())
    db.session.commit()
    resp = auth.login(user)
    assert resp.status_code == 302 and resp.headers["Location"] == "/home"
    assert signed_in(client)
    assert auth.logout().status_code == 302
    assert not signed_in(client)
    assert audit_actions()[-2:] == ["auth.login", "auth.logout"]


@pytest.mark.parametrize("email_given", ["wrong-password", "unknown"])
def test_failed_sign_in_is_generic_and_audited(app, client, make, email_given):
    user = make.user(Role.school_admin, make.school())
    db.session.commit()
    address = user.email if email_given == "wrong-password" else "nobody@example.org"
    resp = client.post("/login", data={"email": address, "password": "not the password at all"})
    assert resp.status_code == 401
    assert GENERIC in resp.data
    assert not signed_in(client)
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "auth.login_failed")).scalar_one()
    assert entry.target_id == (str(user.id) if email_given == "wrong-password" else None)
    assert "@" not in str(entry.details)  # ids only, never the address typed


def test_inactive_user_cannot_sign_in(app, client, make, auth):
    user = make.user(Role.school_admin, make.school())
    user.active = False
    db.session.commit()
    resp = auth.login(user)
    assert resp.status_code == 401 and GENERIC in resp.data


def test_empty_sign_in_form_says_what_is_missing(app, client):
    before = audit_actions()
    resp = client.post("/login", data={"email": "", "password": ""})
    assert resp.status_code == 400
    assert b"Enter your email address." in resp.data and b"Enter your password." in resp.data
    assert audit_actions() == before


def test_next_is_followed_only_within_the_site(app, client, make, auth):
    school = make.school()
    user = make.user(Role.school_admin, school)
    db.session.commit()
    resp = client.post(f"/login?next=/schools/{school.id}", data={"email": user.email, "password": PASSWORD})
    assert resp.headers["Location"] == f"/schools/{school.id}"
    auth.logout()
    for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        resp = client.post("/login", query_string={"next": evil}, data={"email": user.email, "password": PASSWORD})
        assert resp.headers["Location"] == "/home"
        auth.logout()


def test_password_is_stored_as_argon2_hash(app, make):
    user = make.user(Role.school_admin, make.school())
    assert user.password_hash.startswith("$argon2")
    assert PASSWORD not in user.password_hash


# ------------------------------------------------------------------ sessions


def test_session_is_rotated_at_sign_in(app, client, make, auth):
    user = make.user(Role.school_admin, make.school())
    db.session.commit()
    with client.session_transaction() as sess:
        sess["planted"] = "by an attacker before sign-in"
    auth.login(user)
    first_token = db.session.get(User, user.id).session_token
    with client.session_transaction() as sess:
        assert "planted" not in sess
    auth.logout()
    auth.login(user)
    assert db.session.get(User, user.id).session_token not in (None, first_token)


def test_copied_cookie_stops_working_after_logout(app, client, make, auth):
    user = make.user(Role.school_admin, make.school())
    db.session.commit()
    auth.login(user)
    copied = client.get_cookie("session").value
    auth.logout()
    client.set_cookie("session", copied)
    resp = client.get("/home")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login")


def test_two_browsers_each_see_their_own_user(app, make):
    mine, theirs = make.school("Mine"), make.school("Theirs")
    me, them = make.user(Role.school_admin, mine), make.user(Role.school_admin, theirs)
    db.session.commit()
    my_browser, their_browser = app.test_client(), app.test_client()
    Auth(my_browser).login(me)
    Auth(their_browser).login(them)
    assert mine.name.encode() in my_browser.get("/home").data
    page = their_browser.get("/home").data
    assert theirs.name.encode() in page and mine.name.encode() not in page


def test_deactivated_user_is_signed_out_at_once(app, client, make, auth):
    user = make.user(Role.school_admin, make.school())
    db.session.commit()
    auth.login(user)
    user.active = False
    db.session.commit()
    assert not signed_in(client)


def test_session_cookie_is_secure_httponly_samesite(make_app):
    app = make_app(SESSION_COOKIE_SECURE=True)
    with app.app_context():
        from tests import factories

        user = factories.user(Role.school_admin, factories.school())
        db.session.commit()
        resp = app.test_client().post("/login", data={"email": user.email, "password": PASSWORD})
    cookie = resp.headers["Set-Cookie"]
    assert "session=" in cookie and "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_production_defaults_are_secure():
    from portal import config

    assert config.SESSION_COOKIE_SECURE and config.SESSION_COOKIE_HTTPONLY and config.SESSION_COOKIE_SAMESITE == "Lax"
    assert config.REMEMBER_COOKIE_SECURE and config.REMEMBER_COOKIE_HTTPONLY
    assert config.WTF_CSRF_ENABLED and config.RATELIMIT_ENABLED


# ------------------------------------------------------------------ rate limits


def _limited_app(make_app, **limits):
    app = make_app(RATELIMIT_ENABLED=True, **limits)
    ctx = app.app_context()
    ctx.push()
    return app, ctx


# Per account from one address, and never a lockout from another: tests/test_sign_in_throttle.py.


def test_sign_in_is_limited_per_address_and_success_does_not_count(make_app):
    app, ctx = _limited_app(make_app, LOGIN_RATE_LIMIT_ACCOUNT="100 per hour", LOGIN_RATE_LIMIT_ADDRESS="3 per hour")
    try:
        from tests import factories

        user = factories.user(Role.school_admin, factories.school())
        db.session.commit()
        client = app.test_client()
        auth = Auth(client)
        client.post("/login", data={"email": "guess0@example.org", "password": "wrong guess 123"})
        for _ in range(4):  # successful sign-ins never use up the allowance
            assert auth.login(user).status_code == 302
            auth.logout()
        for n in (1, 2):
            client.post("/login", data={"email": f"guess{n}@example.org", "password": "wrong guess 123"})
        assert auth.login(user).status_code == 429
        other_address = client.post(
            "/login", data={"email": user.email, "password": PASSWORD}, environ_base={"REMOTE_ADDR": "10.1.2.3"}
        )
        assert other_address.status_code == 302
    finally:
        ctx.pop()


# ------------------------------------------------------------------ CSRF


def test_forms_without_csrf_token_are_refused_and_change_nothing(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        from tests import factories

        user = factories.user(Role.school_admin, factories.school())
        db.session.commit()
        client = app.test_client()
        before = audit_actions()
        resp = client.post("/login", data={"email": user.email, "password": PASSWORD})
        assert resp.status_code == 400 and b"The form expired or was sent from elsewhere" in resp.data
        assert not signed_in(client)
        client.post("/password/reset", data={"email": user.email})
        assert sent_mail(app) == []
        assert audit_actions() == before
        # With the token from the page, the same sign-in works; without it, sign-out is refused.
        token = csrf_token(client.get("/login").data)
        assert client.post("/login", data={"email": user.email, "password": PASSWORD, "csrf_token": token}).status_code == 302
        assert client.post("/logout").status_code == 400
        assert signed_in(client)


# ------------------------------------------------------------------ password reset


def _request_reset(client, user) -> str:
    resp = client.post("/password/reset", data={"email": user.email})
    assert resp.status_code == 302
    messages = sent_mail(None)
    assert messages, "no reset email was written to instance/mail/"
    assert messages[-1]["To"] == user.email
    return reset_link(messages[-1])


def test_password_reset_link_works_once(app, client, make, auth):
    user = make.user(Role.school_admin, make.school())
    db.session.commit()
    link = _request_reset(client, user)
    assert client.get(link).status_code == 200
    resp = client.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert resp.status_code == 302
    assert auth.login(user).status_code == 401  # the old password no longer works
    assert auth.login(user, password=NEW_PASSWORD).status_code == 302
    auth.logout()
    again = client.post(link, data={"password": "yet another passphrase", "confirm": "yet another passphrase"})
    assert again.status_code == 400 and b"no longer works" in again.data
    assert auth.login(user, password=NEW_PASSWORD).status_code == 302
    assert "auth.password_reset" in audit_actions()


def test_password_reset_link_expires(app, client, make, auth):
    user = make.user(Role.school_admin, make.school())
    db.session.commit()
    link = _request_reset(client, user)
    # An hour passes: the stored expiry is now behind us.
    db.session.execute(update(PasswordResetToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    resp = client.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert resp.status_code == 400 and b"no longer works" in resp.data
    assert auth.login(user).status_code == 302  # the password did not change


def test_reset_for_unknown_address_looks_the_same_and_sends_nothing(app, client, make):
    resp = client.post("/password/reset", data={"email": "nobody@example.org"}, follow_redirects=True)
    assert b"If that address belongs to an account" in resp.data
    assert sent_mail(app) == []


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"password": "short", "confirm": "short"}, b"Password must be at least 12 characters long."),
        ({"password": NEW_PASSWORD, "confirm": NEW_PASSWORD + "x"}, b"The passwords do not match."),
        ({"password": "", "confirm": ""}, b"Enter a new password."),
    ],
)
def test_bad_new_password_is_explained_and_changes_nothing(app, client, make, auth, form, message):
    user = make.user(Role.school_admin, make.school())
    db.session.commit()
    link = _request_reset(client, user)
    resp = client.post(link, data=form)
    assert resp.status_code == 400 and message in resp.data
    assert auth.login(user).status_code == 302  # old password still works
    auth.logout()
    assert client.get(link).status_code == 200  # and the link is still usable


def test_bad_reset_request_address_is_explained(app, client):
    resp = client.post("/password/reset", data={"email": "not-an-address"})
    assert resp.status_code == 400 and b"Enter a valid email address." in resp.data
    assert sent_mail(app) == []


# ------------------------------------------------------------------ TOTP


def test_support_staff_enrol_totp_at_first_sign_in(app, client, make):
    user = make.user(support=True)
    user.totp_secret, user.totp_enabled = None, False
    db.session.commit()
    resp = client.post("/login", data={"email": user.email, "password": PASSWORD})
    assert resp.headers["Location"] == "/login/totp/setup"
    assert not signed_in(client)  # the password alone is not enough
    page = client.get("/login/totp/setup")
    secret = re.search(rb'data-testid="totp-secret">([A-Z2-7]+)<', page.data).group(1).decode()
    bad = client.post("/login/totp/setup", data={"code": "000000" if pyotp.TOTP(secret).now() != "000000" else "111111"})
    assert bad.status_code == 400 and b"That code is not right" in bad.data
    assert not db.session.get(User, user.id).totp_enabled
    resp = client.post("/login/totp/setup", data={"code": pyotp.TOTP(secret).now()})
    assert resp.status_code == 200 and b"Save your recovery codes" in resp.data  # shown once, then continue
    assert signed_in(client)
    assert client.get("/admin/").status_code == 200
    assert db.session.get(User, user.id).totp_enabled
    assert "auth.totp_enabled" in audit_actions()


def test_totp_secret_is_not_put_in_the_cookie(app, client, make):
    user = make.user(support=True)
    user.totp_secret, user.totp_enabled = None, False
    db.session.commit()
    client.post("/login", data={"email": user.email, "password": PASSWORD})
    client.get("/login/totp/setup")
    from flask.sessions import SecureCookieSessionInterface

    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    session_data = serializer.loads(client.get_cookie("session").value)
    assert db.session.get(User, user.id).totp_secret not in str(session_data)


def test_totp_code_cannot_be_used_twice(app, client, make, auth):
    user = make.user(support=True)
    db.session.commit()
    code = fresh_totp_code(user)
    client.post("/login", data={"email": user.email, "password": PASSWORD})
    assert client.post("/login/totp", data={"code": code}).status_code == 302
    auth.logout()
    client.post("/login", data={"email": user.email, "password": PASSWORD})
    replay = client.post("/login/totp", data={"code": code})
    assert replay.status_code == 401 and b"used already" in replay.data
    assert not signed_in(client)


def test_bad_totp_code_format_is_explained(app, client, make):
    user = make.user(support=True)
    db.session.commit()
    client.post("/login", data={"email": user.email, "password": PASSWORD})
    resp = client.post("/login/totp", data={"code": "12ab"})
    assert resp.status_code == 400 and b"The code is 6 digits" in resp.data
    assert db.session.get(User, user.id).totp_last_step is None
    assert not signed_in(client)


def test_totp_page_without_password_step_sends_to_sign_in(app, client):
    resp = client.post("/login/totp", data={"code": "123456"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/login"


def test_anyone_can_turn_on_totp(app, client, make, auth):
    user = make.user(Role.school_viewer, make.school())
    db.session.commit()
    auth.login(user)
    page = client.get("/login/totp/setup")
    assert page.status_code == 200
    db.session.refresh(user)
    resp = client.post("/login/totp/setup", data={"code": pyotp.TOTP(user.totp_secret).now()})
    assert resp.status_code == 200 and b"Save your recovery codes" in resp.data
    auth.logout()
    # From now on the password alone is not enough.
    resp = client.post("/login", data={"email": user.email, "password": PASSWORD})
    assert resp.headers["Location"] == "/login/totp"
    assert not signed_in(client)
    assert client.post("/login/totp", data={"code": fresh_totp_code(user)}).status_code == 302
    assert signed_in(client)
    assert b"Two-factor sign-in is on" in client.get("/login/totp/setup").data


def test_reset_does_not_bypass_totp(app, client, make, auth):
    user = make.user(support=True)
    db.session.commit()
    link = _request_reset(client, user)
    client.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    resp = client.post("/login", data={"email": user.email, "password": NEW_PASSWORD})
    assert resp.headers["Location"] == "/login/totp"
    assert not signed_in(client)


def test_users_are_found_by_email_whatever_the_case(app, client, make):
    user = make.user(Role.school_admin, make.school())
    db.session.commit()
    resp = client.post("/login", data={"email": user.email.upper(), "password": PASSWORD})
    assert resp.status_code == 302
    assert db.session.execute(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "auth.login")).scalar() == 1


def test_r63_school_admins_must_enrol_a_second_factor_and_viewers_need_not(make_app, make):
    from portal.extensions import db
    from portal.models import Role

    app = make_app(TOTP_REQUIRED_ROLES=["school_admin", "trust_admin", "la_officer"])
    with app.app_context():
        school = make.school()
        admin = make.user(Role.school_admin, school)
        viewer = make.user(Role.school_viewer, school)
        db.session.commit()
        emails = admin.email, viewer.email
    client = app.test_client()
    resp = client.post("/login", data={"email": emails[0], "password": make.PASSWORD})
    assert resp.status_code == 302 and "/login/totp/setup" in resp.headers["Location"]
    assert client.get("/home").status_code == 302  # not signed in until the second factor is set up
    other = app.test_client()
    resp = other.post("/login", data={"email": emails[1], "password": make.PASSWORD})
    assert resp.status_code == 302 and "/login/totp" not in resp.headers["Location"]
    assert other.get("/home").status_code == 200
