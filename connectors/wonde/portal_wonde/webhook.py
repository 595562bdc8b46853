"""The Wonde events route (/webhooks/wonde/<secret>): verify, de-duplicate by event id, match the school, confirm, then move the connection."""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from portal.connectors import ConnectorError
from portal.plugins import api
from portal.plugins.api import Connection, VerificationFailed, check_secret, check_signature

log = logging.getLogger(__name__)

# Mounted by create_app as WondeConnector.blueprint, CSRF-exempt: the URL secret (and signature) replace it.
bp = Blueprint("wonde_webhooks", __name__, url_prefix="/webhooks")

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
    conn = api.connection_by_provider_id(CONNECTOR, school_id)
    if conn is not None:
        return conn
    # Before the provider's id is stored, match on the URN, and only a connection that asked for access.
    urn = str(payload.get("school_urn") or "").strip()
    return api.requested_connection_by_urn(CONNECTOR, urn) if urn else None


def _confirmed_approved(conn: Connection, school_id: str) -> bool:
    """Ask the provider itself: the payload is untrusted (specs/wonde.md §15)."""
    previous = conn.provider_school_id
    conn.provider_school_id = school_id
    try:
        status = api.connector_instance(conn).access_status(conn)
    except (ConnectorError, api.LifecycleError):
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
        status = api.connector_instance(conn).access_status(conn)
    except (ConnectorError, api.LifecycleError):
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
    if api.event_seen(CONNECTOR, event_id):
        return jsonify({"status": "duplicate", "event_id": event_id})
    if kind == "writeback":
        return _done(event_id, kind, None, "ignored")
    conn = _match(payload)
    if conn is None:
        # Nothing is changed for a school we cannot match; the id is not stored, so a later retry can match.
        api.audit_event("webhook.unmatched", details={"connector": CONNECTOR, "payload_type": kind}, actor="provider")
        api.commit()
        log.warning("wonde webhook %s for an unknown school", kind)
        return _error(404, "unknown_school", "No connection matches this school.")
    return _apply(conn, kind, payload, event_id)


def _apply(conn: Connection, kind: str, payload: dict[str, Any], event_id: str):
    school_id = str(payload.get("school_id"))
    if kind == "schoolApproved":
        if not _confirmed_approved(conn, school_id):
            api.rollback()
            # Not recorded as processed: the provider's retry (or the access poll) will try again.
            return jsonify({"status": "unconfirmed", "state": conn.state.value}), 202
        token = payload.get("school_token")
        try:
            api.mark_approved(conn, "provider", settings={"school_token": token} if token else None)
        except api.LifecycleError as exc:
            api.rollback()
            return _done(event_id, kind, conn, exc.code)
    elif kind == "accessRevoked":
        # Confirmed, never inferred (R5): a revocation schedules a deletion, so Wonde itself must say so.
        if not _confirmed_ended(conn, school_id):
            api.rollback()
            return jsonify({"status": "unconfirmed", "state": conn.state.value}), 202
        api.mark_revoked_by_provider(conn, "revoked_at_provider")
    elif kind == "accessDeclined":
        api.mark_declined(conn, "provider")
    elif kind == "schoolMigration":
        api.audit_event(
            "connection.migration", organisation_id=conn.school_id, target=conn, actor="provider",
            details={"connector": CONNECTOR, "completed": bool(payload.get("completed_at"))},
        )
        api.commit()
    return _done(event_id, kind, conn, "processed")


def _done(event_id: str, kind: str, conn: Connection | None, outcome: str):
    if not api.record_event(CONNECTOR, event_id, kind, conn, outcome):
        # The same event arrived twice at once; the other request recorded it.
        return jsonify({"status": "duplicate", "event_id": event_id})
    return jsonify({"status": outcome, "event_id": event_id, "state": conn.state.value if conn else None})
