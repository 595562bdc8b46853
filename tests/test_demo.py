"""The demo command builds a working demo once (running it again changes nothing); create-user refuses bad input."""
from __future__ import annotations

import re

import pyotp
import pytest
from sqlalchemy import func, select

from portal import demo
from portal.extensions import db
from portal.models import AuditEntry, Membership, Organisation, OrgKind, Role, Subscription, SubscriptionRoute, User


@pytest.fixture
def app(make_app):
    """The fake connector, and a connector whose sandbox declares the demo's three schools."""
    app = make_app(PLUGINS=["tests.plugins.fake_connector", "tests.plugins.demo_schools"],
                   ENABLED_CONNECTORS=["fake", "demoschools"])
    with app.app_context():
        yield app


def run(app, *args: str):
    return app.test_cli_runner().invoke(args=["portal", *args])


def snapshot() -> dict:
    """Every row the demo touches, as comparable values."""
    return {
        "organisations": sorted(db.session.execute(select(Organisation.id, Organisation.name, Organisation.trust_id)).all()),
        "subscriptions": sorted(db.session.execute(select(Subscription.id, Subscription.route, Subscription.school_id)).all()),
        "users": sorted(db.session.execute(select(User.id, User.email, User.password_hash, User.totp_secret)).all()),
        "memberships": sorted(db.session.execute(select(Membership.id, Membership.role, Membership.organisation_id)).all()),
        "audit": db.session.execute(select(func.count()).select_from(AuditEntry)).scalar(),
    }


def test_demo_creates_the_organisations_and_users(app):
    result = run(app, "demo")
    assert result.exit_code == 0, result.output
    las = db.session.execute(select(Organisation).where(Organisation.kind == OrgKind.local_authority)).scalars().all()
    trusts = db.session.execute(select(Organisation).where(Organisation.kind == OrgKind.trust)).scalars().all()
    schools = db.session.execute(select(Organisation).where(Organisation.kind == OrgKind.school)).scalars().all()
    assert len(las) == 1 and len(trusts) == 1 and len(schools) == 3
    assert sum(s.trust_id == trusts[0].id for s in schools) == 2
    via_la = [s for s in schools if s.subscriptions[0].route == SubscriptionRoute.local_authority]
    assert len(via_la) == 1 and via_la[0].subscriptions[0].local_authority_id == las[0].id
    roles = set(db.session.execute(select(Membership.role)).scalars())
    # Every role but a diocese officer: the demo has no diocese (R57 links are approved by a school).
    assert roles == set(Role) - {Role.diocese_officer}
    assert db.session.execute(select(User).where(User.is_support)).scalar_one().totp_enabled
    for email, *_ in demo.USERS:
        assert email in result.output
    # Each school the connectors' sandboxes declare gets an admin and a viewer.
    assert "admin.village@demo.example" in result.output and "viewer.academy@demo.example" in result.output
    assert demo.DEMO_PASSWORD in result.output


def test_running_the_demo_twice_changes_nothing(app):
    assert run(app, "demo").exit_code == 0
    first = snapshot()
    again = run(app, "demo")
    assert again.exit_code == 0
    assert "nothing changed" in again.output
    assert snapshot() == first


def test_printed_sign_in_details_work(app, client):
    output = run(app, "demo").output
    secret = re.search(r"two-factor key for your authenticator app: ([A-Z2-7]+)", output).group(1)
    # Support staff: password, then a code from the printed key.
    resp = client.post("/login", data={"email": "support@demo.example", "password": demo.DEMO_PASSWORD})
    assert resp.headers["Location"] == "/login/totp"
    assert client.post("/login/totp", data={"code": pyotp.TOTP(secret).now()}).status_code == 302
    assert client.get("/admin/").status_code == 200
    client.post("/logout")
    # The LA officer sees only the school subscribed through the LA (R56).
    client.post("/login", data={"email": "la.officer@demo.example", "password": demo.DEMO_PASSWORD})
    home = client.get("/home").data.decode()
    assert "Demo Village School" in home and "Demo Primary School" not in home
    client.post("/logout")
    client.post("/login", data={"email": "trust.admin@demo.example", "password": demo.DEMO_PASSWORD})
    home = client.get("/home").data.decode()
    assert "Demo Primary School" in home and "Demo Academy" in home and "Demo Village School" not in home


def test_sandbox_hook_point_exists(app):
    result = demo.build_demo()
    assert demo.connect_sandbox_schools(result.schools) == []


# ------------------------------------------------------------------ create-user


def test_create_support_user(app, client):
    result = run(app, "create-user", "--email", "Ops@Example.org", "--name", "Ops", "--support",
                 "--password", "a long enough passphrase")
    assert result.exit_code == 0, result.output
    assert "TOTP is set up at first sign-in" in result.output
    user = db.session.execute(select(User)).scalar_one()
    assert user.is_support and user.email == "Ops@example.org"
    resp = client.post("/login", data={"email": "ops@example.org", "password": "a long enough passphrase"})
    assert resp.headers["Location"] == "/login/totp/setup"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--email", "not-an-address", "--password", "a long enough passphrase"], "enter a valid email address"),
        (["--email", "ops@example.org", "--password", "short"], "Password must be at least 12 characters long."),
        (["--email", "ops@example.org", "--password", " padded passphrase "], "must not start or end with a space"),
    ],
)
def test_create_user_refuses_bad_input(app, args, message):
    result = run(app, "create-user", "--name", "Ops", "--support", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert db.session.execute(select(func.count()).select_from(User)).scalar() == 0
    assert db.session.execute(select(func.count()).select_from(AuditEntry)).scalar() == 0


def test_create_user_refuses_a_duplicate_email(app):
    args = ["--name", "Ops", "--password", "a long enough passphrase"]
    assert run(app, "create-user", "--email", "ops@example.org", *args).exit_code == 0
    again = run(app, "create-user", "--email", "OPS@example.org", *args)
    assert again.exit_code == 1 and "already exists" in again.output
    assert db.session.execute(select(func.count()).select_from(User)).scalar() == 1


def test_demo_starts_the_connector_sandboxes_itself_when_no_base_url_is_set(make_app):
    """A fresh clone has no provider configured: the demo serves its schools from the packages' sandboxes."""
    import requests

    from portal.models import Connection, ConnectionState

    app = make_app(
        PLUGINS=["portal_wonde.plugin", "portal_groupcall.plugin"], ENABLED_CONNECTORS=["wonde", "groupcall"], CONNECTORS={}
    )
    seen: dict[str, str] = {}
    original = demo.connect_sandbox_schools

    def spy(schools):
        # While the demo loads, each connector is pointed at a local sandbox that answers.
        for name in ("wonde", "groupcall"):
            seen[name] = app.config["CONNECTORS"][name]["base_url"]
            assert requests.get(seen[name], timeout=5).status_code < 500
        return original(schools)

    demo.connect_sandbox_schools = spy
    try:
        result = app.test_cli_runner().invoke(args=["portal", "demo", "--no-extract"])
    finally:
        demo.connect_sandbox_schools = original
    assert result.exit_code == 0, result.output
    assert "Started the sandbox providers for the demo load (groupcall, wonde)" in result.output
    assert all(url.startswith("http://127.0.0.1:") for url in seen.values())
    with app.app_context():
        states = db.session.execute(select(Connection.connector, Connection.state)).all()
    assert sorted(states) == [
        ("groupcall", ConnectionState.approved), ("wonde", ConnectionState.approved), ("wonde", ConnectionState.approved)
    ]
    # Stopped after, and the deployment's (empty) settings are back.
    assert "base_url" not in (app.config["CONNECTORS"].get("wonde") or {})
    for url in seen.values():
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=2)


def test_demo_uses_a_configured_provider_and_starts_no_sandbox(make_app):
    app = make_app(
        PLUGINS=["portal_wonde.plugin"], ENABLED_CONNECTORS=["wonde"],
        CONNECTORS={"wonde": {"base_url": "http://127.0.0.1:9/v1.0", "allow_insecure_http": True}},
    )
    result = app.test_cli_runner().invoke(args=["portal", "demo", "--no-extract"])
    assert "Started the sandbox providers" not in result.output
    assert app.config["CONNECTORS"]["wonde"]["base_url"] == "http://127.0.0.1:9/v1.0"


def test_demo_refuses_in_one_line_when_a_connector_has_neither_base_url_nor_sandbox(make_app, monkeypatch):
    from tests.plugins.fake_connector import FakeConnector

    monkeypatch.setattr(FakeConnector, "demo_connections", staticmethod(lambda schools: []))
    result = run(make_app(), "demo")
    assert result.exit_code != 0
    message = result.output.strip().splitlines()[-1]
    assert "the fake connector has no sandbox for the demo" in message and "PORTAL_CONNECTORS__fake__base_url" in message
