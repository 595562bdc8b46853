"""The Wonde events route: verify, de-duplicate by event id, match the school, confirm, then move the connection."""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from portal import audit, lifecycle
from portal.connectors import ConnectorError
from portal.extensions import db
from portal.models import Connection, ConnectionState, Organisation, OrgKind, WebhookEvent
from portal.webhooks.verify import VerificationFailed, check_secret, check_signature

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

CONNECTOR = "wonde"
EVENTS = {"schoolApproved", "accessRevoked", "accessDeclined", "schoolMigration", "writeback"}
MAX_BODY = 64 * 1024


def _error(status: int, code: str, message: str):
    return jsonify({"error": {"code": code, "message": message}}), status


def _event_id(payload: dict[str, Any], body: bytes) -> str:
    given = request.headers.get("X-Event-Id") or request.headers.get("X-Wonde-Event-Id")
    if given:
        return given.strip()[:128]
    # Wonde sends no event id: a redelivery carries the same body, so its digest is the id.
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _match(payload: dict[str, Any]) -> Connection | None:
    """Find the connection the event is about; never act on a school id we cannot tie to one connection."""
    school_id = str(payload.get("school_id") or "").strip()
    if not school_id:
        return None
    conn = db.session.execute(
        select(Connection).where(Connection.connector == CONNECTOR, Connection.provider_school_id == school_id)
    ).scalar()
    if conn is not None:
        return conn
    # Before the provider's id is stored, match on the URN, and only a connection that asked for access.
    urn = str(payload.get("school_urn") or "").strip()
    if not urn:
        return None
    conn = db.session.execute(
        select(Connection)
        .join(Organisation, Connection.school_id == Organisation.id)
        .where(
            Connection.connector == CONNECTOR,
            Connection.provider_school_id.is_(None),
            Organisation.kind == OrgKind.school,
            Organisation.urn == urn,
            Connection.state.in_([ConnectionState.requested, ConnectionState.pending]),
        )
    ).scalar()
    return conn


def _confirmed_approved(conn: Connection, school_id: str) -> bool:
    """Ask the provider itself: the payload is untrusted (specs/wonde.md §15)."""
    previous = conn.provider_school_id
    conn.provider_school_id = school_id
    try:
        status = lifecycle.connector_instance(conn).access_status(conn)
    except (ConnectorError, lifecycle.LifecycleError):
        conn.provider_school_id = previous
        return False
    ok = status.state == "approved" and str(status.provider_school_id or school_id) == school_id
    if not ok:
        conn.provider_school_id = previous
    return ok


def _confirmed_ended(conn: Connection, school_id: str) -> bool:
    """Ask the provider whether access really ended (the payload is untrusted); a failed check is not a yes."""
    if conn.provider_school_id and str(conn.provider_school_id) != school_id:
        return False
    try:
        status = lifecycle.connector_instance(conn).access_status(conn)
    except (ConnectorError, lifecycle.LifecycleError):
        return False
    return status.state in ("revoked", "declined", "not_connected")


@bp.route("/wonde/<secret>", methods=["POST"])
def wonde(secret: str):
    settings = current_app.config.get("CONNECTORS", {}).get(CONNECTOR, {}) or {}
    body = request.get_data(cache=True)
    try:
        check_secret(settings.get("webhook_secret"), secret)
        if settings.get("webhook_signing_key"):
            check_signature(
                settings["webhook_signing_key"],
                request.headers.get("X-Webhook-Timestamp"),
                request.headers.get("X-Webhook-Signature"),
                body,
                int(current_app.config.get("WEBHOOK_TOLERANCE_SECONDS", 300)),
            )
    except VerificationFailed as exc:
        return _error(exc.status, exc.code, exc.message)
    if len(body) > MAX_BODY:
        return _error(413, "too_large", "The event body is too large.")
    try:
        payload = json.loads(body)
    except ValueError:
        return _error(400, "invalid_json", "The body is not valid JSON.")
    if not isinstance(payload, dict) or payload.get("payload_type") not in EVENTS:
        return _error(400, "unknown_event", f"payload_type must be one of {', '.join(sorted(EVENTS))}.")
    kind = payload["payload_type"]
    event_id = _event_id(payload, body)
    if db.session.execute(
        select(WebhookEvent.id).where(WebhookEvent.connector == CONNECTOR, WebhookEvent.event_id == event_id)
    ).first():
        return jsonify({"status": "duplicate", "event_id": event_id})
    if kind == "writeback":
        return _done(event_id, kind, None, "ignored")
    conn = _match(payload)
    if conn is None:
        # Nothing is changed for a school we cannot match; the id is not stored, so a later retry can match.
        audit.record("webhook.unmatched", details={"connector": CONNECTOR, "payload_type": kind}, actor="provider")
        db.session.commit()
        log.warning("wonde webhook %s for an unknown school", kind)
        return _error(404, "unknown_school", "No connection matches this school.")
    return _apply(conn, kind, payload, event_id)


def _apply(conn: Connection, kind: str, payload: dict[str, Any], event_id: str):
    school_id = str(payload.get("school_id"))
    if kind == "schoolApproved":
        if not _confirmed_approved(conn, school_id):
            db.session.rollback()
            # Not recorded as processed: the provider's retry (or the access poll) will try again.
            return jsonify({"status": "unconfirmed", "state": conn.state.value}), 202
        token = payload.get("school_token")
        try:
            lifecycle.mark_approved(conn, "provider", settings={"school_token": token} if token else None)
        except lifecycle.LifecycleError as exc:
            db.session.rollback()
            return _done(event_id, kind, conn, exc.code)
    elif kind == "accessRevoked":
        # Confirmed, never inferred (R5): a revocation schedules a deletion, so Wonde itself must say so.
        if not _confirmed_ended(conn, school_id):
            db.session.rollback()
            return jsonify({"status": "unconfirmed", "state": conn.state.value}), 202
        lifecycle.mark_revoked_by_provider(conn, "revoked_at_provider")
    elif kind == "accessDeclined":
        lifecycle.mark_declined(conn, "provider")
    elif kind == "schoolMigration":
        audit.record(
            "connection.migration", organisation_id=conn.school_id, target=conn, actor="provider",
            details={"connector": CONNECTOR, "completed": bool(payload.get("completed_at"))},
        )
        db.session.commit()
    return _done(event_id, kind, conn, "processed")


def _done(event_id: str, kind: str, conn: Connection | None, outcome: str):
    db.session.add(
        WebhookEvent(connector=CONNECTOR, event_id=event_id, payload_type=kind, connection_id=conn.id if conn else None, outcome=outcome)
    )
    try:
        db.session.commit()
    except IntegrityError:
        # The same event arrived twice at once; the other request recorded it.
        db.session.rollback()
        return jsonify({"status": "duplicate", "event_id": event_id})
    return jsonify({"status": outcome, "event_id": event_id, "state": conn.state.value if conn else None})
