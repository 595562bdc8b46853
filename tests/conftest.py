"""Fixtures: a fresh app per test on SQLite and on PostgreSQL, a client, and a sign-in helper."""
from __future__ import annotations

import os
from datetime import datetime, timezone

import pyotp
import pytest

from portal.testing import databases
from portal.testing.databases import base_config
from tests import factories

BACKENDS = ["sqlite", "postgresql"]


def pytest_addoption(parser):
    parser.addoption(
        "--backend",
        action="append",
        choices=BACKENDS,
        help="run database tests on this backend only (repeatable); default: both",
    )


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--backend") or BACKENDS
        metafunc.parametrize("backend", chosen, scope="session")


@pytest.fixture(autouse=True)
def _clean_portal_env(monkeypatch):
    """Keep the machine's PORTAL_* variables out of tests."""
    for key in list(os.environ):
        if key.startswith("PORTAL_") and not key.startswith("PORTAL_TEST_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def migrated_database(backend, tmp_path_factory):
    """A database migrated to head once per session, with the reference rows the migrations seed."""
    yield from databases.migrated_database(backend, tmp_path_factory)


@pytest.fixture
def database_url(migrated_database, tmp_path):
    """The URL of an empty (reference rows only) database for this test."""
    return databases.fresh_database_url(migrated_database, tmp_path)


@pytest.fixture
def make_app(database_url, tmp_path):
    """Build apps on this test's database with extra configuration."""
    from portal import create_app
    from portal.extensions import db

    apps = []

    def build(**overrides):
        app = create_app(base_config(database_url, **overrides))
        app.instance_path = str(tmp_path / "instance")
        apps.append(app)
        return app

    yield build
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(make_app):
    """The portal app on this test's database, with an app context pushed."""
    app = make_app()
    with app.app_context():
        yield app


@pytest.fixture
def client(app):
    """A test client of the app."""
    return app.test_client()


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
