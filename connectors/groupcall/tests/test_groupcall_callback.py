"""The authorisation callback route: shared secret, validation against Groupcall, and the connection's state."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text

from portal.extensions import db
from portal.models import AuditEntry, Connection, ConnectionState
from portal.testing.conformance import add_synthetic_school

KEY = "callback-key-for-tests"


@pytest.fixture
def org(gc_app, school):
    org = add_synthetic_school(school)
    db.session.commit()
    return org


def make_connection(org, state):
    connection = Connection(school_id=org.id, connector="groupcall", state=state)
    db.session.add(connection)
    db.session.commit()
    return connection


def post(gc_app, form, key=KEY):
    return gc_app.test_client().post(f"/connectors/groupcall/authorised?key={key}", data=form)


def reload(connection):
    db.session.expire_all()
    return db.session.get(Connection, connection.id)


def test_callback_approves_the_requested_connection_and_stores_the_secret_encrypted(gc_app, sandbox, school, org):
    connection = make_connection(org, ConnectionState.pending)
    secret = sandbox.authorise(school.dfe_number)
    resp = post(gc_app, sandbox.callback_form(school.dfe_number))
    assert resp.status_code == 200 and resp.json["status"] == "approved"
    connection = reload(connection)
    assert connection.state == ConnectionState.approved and connection.provider_school_id == school.dfe_number
    assert json.loads(connection.settings_encrypted)["school_secret"] == secret
    raw = db.session.execute(text("SELECT settings_encrypted FROM connections WHERE id = :i"), {"i": connection.id}).scalar()
    assert secret not in raw
    actions = db.session.execute(select(AuditEntry.action).where(AuditEntry.organisation_id == org.id)).scalars().all()
    assert "connection.approved" in actions
    assert not any(secret in json.dumps(e.details or {}) for e in db.session.execute(select(AuditEntry)).scalars())


def test_a_wrong_key_is_refused_and_changes_nothing(gc_app, sandbox, school, org):
    connection = make_connection(org, ConnectionState.pending)
    resp = post(gc_app, sandbox.callback_form(school.dfe_number), key="guess")
    assert resp.status_code == 403 and resp.json["error"]["code"] == "bad_key"
    assert reload(connection).state == ConnectionState.pending and reload(connection).settings_encrypted is None


def test_a_callback_with_missing_fields_says_what_is_wrong(gc_app, sandbox, school, org):
    resp = post(gc_app, {"schoolId": "12"})
    assert resp.status_code == 400
    assert "schoolSecret" in resp.json["error"]["message"] and "7-digit" in resp.json["error"]["message"]


@pytest.mark.parametrize("state", [ConnectionState.pending, ConnectionState.approved])
def test_a_secret_groupcall_refuses_changes_nothing_and_is_audited(gc_app, sandbox, school, org, state):
    connection = make_connection(org, state)
    form = {**sandbox.callback_form(school.dfe_number), "schoolSecret": "forged-secret-value"}
    resp = post(gc_app, form)
    assert resp.status_code == 422 and resp.json["error"]["code"] == "secret_not_valid"
    # Neither approved nor revoked: a forged or foreign secret proves nothing about the connection.
    assert reload(connection).state == state and reload(connection).settings_encrypted is None
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "groupcall.callback_refused")).scalar_one()
    assert entry.target_id == str(connection.id) or entry.target_id == connection.id
    assert "forged-secret-value" not in json.dumps(entry.details)


def test_a_school_that_did_not_ask_in_the_portal_is_not_connected(gc_app, sandbox, school, org):
    connection = make_connection(org, ConnectionState.not_connected)
    resp = post(gc_app, sandbox.callback_form(school.dfe_number))
    assert resp.status_code == 409 and resp.json["error"]["code"] == "not_requested"
    assert reload(connection).state == ConnectionState.not_connected and reload(connection).settings_encrypted is None


def test_an_unknown_school_is_a_clear_error(gc_app, sandbox, school):
    resp = post(gc_app, {**sandbox.callback_form(school.dfe_number), "schoolId": "9999999"})
    assert resp.status_code == 404 and resp.json["error"]["code"] == "unknown_school"


def test_r5_a_replayed_older_callback_changes_nothing(gc_app, sandbox, school, org):
    connection = make_connection(org, ConnectionState.pending)
    older = sandbox.callback_form(school.dfe_number)
    post(gc_app, older)
    assert reload(connection).state == ConnectionState.approved
    # The school authorises again (a new secret); the older genuine callback is then replayed.
    sandbox.authorise(school.dfe_number)
    newer = sandbox.callback_form(school.dfe_number)
    assert post(gc_app, newer).status_code == 200
    resp = post(gc_app, older)
    assert resp.status_code == 422
    connection = reload(connection)
    assert connection.state == ConnectionState.approved
    assert json.loads(connection.settings_encrypted)["school_secret"] == newer["schoolSecret"]


def test_a_paused_callback_for_a_school_that_never_asked_stores_nothing(gc_app, sandbox, school, org):
    sandbox.pause(school.dfe_number)
    resp = post(gc_app, sandbox.callback_form(school.dfe_number))
    assert resp.status_code == 409 and resp.json["error"]["code"] == "not_requested"
    assert db.session.execute(select(Connection).where(Connection.school_id == org.id)).first() is None


def test_a_callback_after_revocation_at_groupcall_does_not_revoke(gc_app, sandbox, school, org):
    connection = make_connection(org, ConnectionState.pending)
    form = sandbox.callback_form(school.dfe_number)
    post(gc_app, form)
    sandbox.revoke(school.dfe_number)
    # Only a validated callback or a confirmed provider check changes state: the next run confirms it.
    assert post(gc_app, form).json.get("unchanged") is True
    assert reload(connection).state == ConnectionState.approved


def test_the_route_is_mounted_only_with_the_connector(make_app):
    app = make_app(ENABLED_CONNECTORS=[])
    assert "groupcall_callback" not in app.blueprints


def test_another_schools_genuine_secret_changes_nothing(gc_app, sandbox, school, org):
    connection = make_connection(org, ConnectionState.approved)
    other = sandbox.add_school("9999001", name="Another School")
    form = {**sandbox.callback_form(school.dfe_number), "schoolSecret": other.secret}
    resp = post(gc_app, form)
    assert resp.status_code == 422 and resp.json["error"]["code"] == "secret_not_valid"
    connection = reload(connection)
    assert connection.state == ConnectionState.approved and connection.settings_encrypted is None
