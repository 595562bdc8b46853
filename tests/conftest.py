"""Fixtures of the portal's own tests: test-data factories and a sign-in helper.

The app, client and database fixtures (SQLite and PostgreSQL) come from the portal's pytest plugin,
portal.testing.plugin (entry point ``pytest11``), which connector packages' tests use too.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pyotp
import pytest

from tests import factories


@pytest.fixture
def make():
    """The test-data factories (schools, trusts, LAs, users)."""
    return factories


def fresh_totp_code(user) -> str:
    """Return a code the portal will accept now: codes are single-use, so skip steps already used."""
    from portal.extensions import db

    db.session.refresh(user)
    totp = pyotp.TOTP(user.totp_secret)
    step = int(totp.timecode(datetime.now(timezone.utc)))
    if user.totp_last_step is not None and user.totp_last_step >= step:
        step = user.totp_last_step + 1  # the next step is inside the accepted clock drift
    return totp.generate_otp(step)


class Auth:
    """Signs users in and out through the real forms."""

    def __init__(self, client):
        self.client = client

    def login(self, user, password: str = factories.PASSWORD, follow: bool = False):
        resp = self.client.post("/login", data={"email": user.email, "password": password})
        if user.needs_totp and resp.status_code == 302 and "/login/totp" in resp.headers["Location"]:
            code = fresh_totp_code(user)
            resp = self.client.post("/login/totp", data={"code": code})
        if follow and resp.status_code == 302:
            return self.client.get(resp.headers["Location"])
        return resp

    def logout(self):
        return self.client.post("/logout")


@pytest.fixture
def auth(client):
    """Sign-in helper bound to the test client."""
    return Auth(client)
