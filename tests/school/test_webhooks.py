"""Wonde events route: verified, idempotent by event id, never acting on an unmatched school, confirmed with the sandbox."""
from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import AuditEntry, Connection, ConnectionState, Role, WebhookEvent
from portal.sandbox.synthetic import generate_school
from portal.webhooks.verify import sign
from portal_wonde.sandbox import WondeSandbox

SECRET = "a-long-random-secret-in-the-url"


@pytest.fixture
def sandbox():
    school = generate_school(7, pupils=20, days=3, phase="primary", urn="654321", la_code="202", establishment_number="2001")
    with WondeSandbox([school], state="pending") as running:
        yield running


@pytest.fixture
def wonde_app(make_app, sandbox):
    app = make_app(
        PLUGINS=["tests.plugins.fake_connector", "portal_wonde.plugin"],
        ENABLED_CONNECTORS=["fake", "wonde"],
        CONNECTORS={"wonde": {**sandbox.settings, "webhook_secret": SECRET}},
    )
    with app.app_context():
        yield app


def _school(make):
    school = make.school()
    school.urn = "654321"
    db.session.flush()
    return school


def _pending(school, sandbox, provider_id=True):
    conn = Connection(
        school_id=school.id, connector="wonde", state=ConnectionState.pending,
        provider_school_id=sandbox.school_id() if provider_id else None,
    )
    db.session.add(conn)
    db.session.commit()
    return conn


def _event(sandbox, kind="schoolApproved", **extra):
    return {"payload_type": kind, "school_id": sandbox.school_id(), "school_name": "Synthetic", "school_urn": "654321",
            "school_la_code": "202", "school_establishment_number": "2001", **extra}


def _post(client, payload, secret=SECRET, headers=None):
    return client.post(f"/webhooks/wonde/{secret}", data=json.dumps(payload), content_type="application/json", headers=headers or {})


def test_wrong_secret_is_refused_with_a_stable_code_and_changes_nothing(wonde_app, make, sandbox):
    conn = _pending(_school(make), sandbox)
    sandbox.set_state(sandbox.school_id(), "approved")
    resp = _post(wonde_app.test_client(), _event(sandbox), secret="guess")
    assert resp.status_code == 404 and resp.json["error"]["code"] == "unknown_webhook"
    db.session.refresh(conn)
    assert conn.state == ConnectionState.pending


def test_approval_confirmed_with_the_provider_moves_the_connection_and_is_audited(wonde_app, make, sandbox):
    conn = _pending(_school(make), sandbox)
    sandbox.set_state(sandbox.school_id(), "approved")
    resp = _post(wonde_app.test_client(), _event(sandbox, school_token="t" * 40))
    assert resp.status_code == 200 and resp.json["state"] == "approved"
    db.session.refresh(conn)
    assert conn.state == ConnectionState.approved
    assert json.loads(conn.settings_encrypted)["school_token"] == "t" * 40
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "connection.approved")).scalar_one()
    assert entry.actor == "provider" and "t" * 40 not in json.dumps(entry.details)


def test_forged_approval_the_provider_does_not_confirm_changes_nothing(wonde_app, make, sandbox):
    conn = _pending(_school(make), sandbox)  # the sandbox still says "pending"
    resp = _post(wonde_app.test_client(), _event(sandbox))
    assert resp.status_code == 202 and resp.json["status"] == "unconfirmed"
    db.session.refresh(conn)
    assert conn.state == ConnectionState.pending
    assert db.session.scalar(select(func.count()).select_from(WebhookEvent)) == 0


def test_same_event_twice_is_processed_once(wonde_app, make, sandbox):
    conn = _pending(_school(make), sandbox)
    sandbox.set_state(sandbox.school_id(), "approved")
    client = wonde_app.test_client()
    headers = {"X-Event-Id": "evt-1"}
    assert _post(client, _event(sandbox), headers=headers).json["status"] == "processed"
    # The school revokes and Wonde re-delivers the old approval: it must not re-approve.
    sandbox.set_state(sandbox.school_id(), "revoked")
    _post(client, _event(sandbox, "accessRevoked", revoke_reason="x"), headers={"X-Event-Id": "evt-2"})
    again = _post(client, _event(sandbox), headers=headers)
    assert again.json["status"] == "duplicate"
    db.session.refresh(conn)
    assert conn.state == ConnectionState.revoked
    assert db.session.scalar(select(func.count()).select_from(WebhookEvent)) == 2


def test_unknown_school_is_refused_and_no_connection_changes(wonde_app, make, sandbox):
    conn = _pending(_school(make), sandbox)
    payload = _event(sandbox, "accessRevoked")
    payload.update(school_id="A999", school_urn="999999")
    resp = _post(wonde_app.test_client(), payload)
    assert resp.status_code == 404 and resp.json["error"]["code"] == "unknown_school"
    db.session.refresh(conn)
    assert conn.state == ConnectionState.pending


def test_r5_revocation_event_revokes_and_tells_the_school_admins(wonde_app, make, sandbox):
    from portal import mail

    school = _school(make)
    make.user(Role.school_admin, school, email="admin@school.example")
    conn = _pending(school, sandbox)
    conn.state = ConnectionState.approved
    db.session.commit()
    sandbox.set_state(sandbox.school_id(), "revoked")
    resp = _post(wonde_app.test_client(), _event(sandbox, "accessRevoked", revoke_reason="No longer needed"))
    assert resp.status_code == 200
    db.session.refresh(conn)
    assert conn.state == ConnectionState.revoked and not conn.can_extract
    [message] = list(mail.outbox_dir().glob("*.eml"))
    text = message.read_text()
    assert "admin@school.example" in text and "switched off" in text


def test_approval_matches_by_urn_before_the_provider_id_is_known(wonde_app, make, sandbox):
    conn = _pending(_school(make), sandbox, provider_id=False)
    sandbox.set_state(sandbox.school_id(), "approved")
    resp = _post(wonde_app.test_client(), _event(sandbox))
    assert resp.status_code == 200
    db.session.refresh(conn)
    assert conn.state == ConnectionState.approved and conn.provider_school_id == sandbox.school_id()


def test_bad_payloads_get_json_errors(wonde_app, make, sandbox):
    client = wonde_app.test_client()
    resp = client.post(f"/webhooks/wonde/{SECRET}", data="{not json", content_type="application/json")
    assert resp.status_code == 400 and resp.json["error"]["code"] == "invalid_json"
    resp = _post(client, {"payload_type": "somethingElse"})
    assert resp.status_code == 400 and resp.json["error"]["code"] == "unknown_event"


def test_signed_webhooks_need_a_fresh_matching_signature(make_app, make, sandbox):
    app = make_app(
        PLUGINS=["tests.plugins.fake_connector", "portal_wonde.plugin"],
        ENABLED_CONNECTORS=["fake", "wonde"],
        CONNECTORS={"wonde": {**sandbox.settings, "webhook_secret": SECRET, "webhook_signing_key": "k"}},
    )
    with app.app_context():
        conn = _pending(_school(make), sandbox)
        sandbox.set_state(sandbox.school_id(), "approved")
        client = app.test_client()
        body = json.dumps(_event(sandbox)).encode()
        now = str(int(time.time()))
        stale = str(int(time.time()) - 3600)
        assert _post(client, _event(sandbox)).json["error"]["code"] == "signature_missing"
        resp = client.post(f"/webhooks/wonde/{SECRET}", data=body, content_type="application/json",
                           headers={"X-Webhook-Timestamp": stale, "X-Webhook-Signature": sign("k", stale, body)})
        assert resp.json["error"]["code"] == "stale_timestamp"
        resp = client.post(f"/webhooks/wonde/{SECRET}", data=body, content_type="application/json",
                           headers={"X-Webhook-Timestamp": now, "X-Webhook-Signature": sign("wrong", now, body)})
        assert resp.json["error"]["code"] == "bad_signature"
        db.session.refresh(conn)
        assert conn.state == ConnectionState.pending
        resp = client.post(f"/webhooks/wonde/{SECRET}", data=body, content_type="application/json",
                           headers={"X-Webhook-Timestamp": now, "X-Webhook-Signature": sign("k", now, body)})
        assert resp.status_code == 200
        db.session.refresh(conn)
        assert conn.state == ConnectionState.approved


def test_r5_a_revocation_event_wonde_does_not_confirm_changes_nothing(wonde_app, make, sandbox):
    """Confirmed, never inferred: the school is still approved at Wonde, so nothing is revoked or scheduled."""
    from portal.models import DeletionOrder

    conn = _pending(_school(make), sandbox)
    conn.state = ConnectionState.approved
    db.session.commit()
    sandbox.set_state(sandbox.school_id(), "approved")
    resp = _post(wonde_app.test_client(), _event(sandbox, "accessRevoked", revoke_reason="forged"))
    assert resp.status_code == 202 and resp.json["status"] == "unconfirmed"
    db.session.refresh(conn)
    assert conn.state == ConnectionState.approved
    assert db.session.scalar(select(func.count()).select_from(DeletionOrder)) == 0

