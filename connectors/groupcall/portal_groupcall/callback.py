"""The route Groupcall posts a school's authorisation to: check the shared secret, validate the school secret, approve."""
from __future__ import annotations

import hmac
import json
import logging
import re

from flask import Blueprint, current_app, jsonify, request

log = logging.getLogger(__name__)

bp = Blueprint("groupcall_callback", __name__, url_prefix="/connectors/groupcall")
ESTAB = re.compile(r"^\d{7}$")


def _error(status: int, code: str, message: str):
    return jsonify({"error": {"code": code, "message": message}}), status


@bp.post("/authorised")
def authorised():
    """XoD's authorisation callback (spec §3.1): form-urlencoded, server to server, our secret in ?key=."""
    from portal import audit, lifecycle
    from portal.connectors import AuthorisationLost, ConnectorError
    from portal.extensions import db
    from portal.models import ConnectionState, Organisation, OrgKind
    from portal_groupcall.client import AuthorisationPaused
    from portal_groupcall.connector import GroupcallConnector

    deployment = current_app.config.get("CONNECTORS", {}).get("groupcall", {}) or {}
    expected = str(deployment.get("callback_secret") or "")
    if not expected:
        return _error(404, "callback_not_configured", "This portal does not take Groupcall authorisations.")
    given = request.args.get("key", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return _error(403, "bad_key", "The key in the authorisation URL is not this portal's.")

    form = request.form
    secret, estab = form.get("schoolSecret", "").strip(), form.get("schoolId", "").strip()
    problems = []
    if not secret:
        problems.append("schoolSecret is missing")
    if not ESTAB.match(estab):
        problems.append("schoolId must be a 7-digit LA and DfE number")
    if form.get("partnerId") and deployment.get("relying_party") and form["partnerId"] != deployment["relying_party"]:
        problems.append("partnerId is not this portal's application id")
    if problems:
        return _error(400, "bad_callback", "; ".join(problems) + ".")

    school = db.session.query(Organisation).filter_by(kind=OrgKind.school, dfe_number=estab).one_or_none()
    if school is None:
        return _error(404, "unknown_school", "No school on this portal has that LA and DfE number.")
    connection = lifecycle.connection_for(school, GroupcallConnector.name)
    settings = {**lifecycle.connection_settings(connection), "school_secret": secret, "estab": estab}
    try:
        details = GroupcallConnector(settings).client(school, connection).token_details()
    except AuthorisationPaused:
        _store_secret(connection, secret, estab)
        audit.record("groupcall.authorisation_paused", organisation_id=school.id, target=connection, actor="provider",
                     details={"connector": "groupcall"})
        db.session.commit()
        return jsonify({"status": "paused"})
    except AuthorisationLost:
        # The secret no longer works: the school has revoked (or re-authorised since) at Groupcall (R5).
        if connection.state in (ConnectionState.approved, ConnectionState.failing, ConnectionState.pending):
            lifecycle.mark_revoked_by_provider(connection, "revoked_at_groupcall")
            return jsonify({"status": "revoked"})
        db.session.rollback()
        return _error(422, "secret_not_valid", "Groupcall did not accept the school secret in this callback.")
    except ConnectorError as exc:
        db.session.rollback()
        return _error(502, exc.code, exc.message)
    if str(details.get("Estab") or estab) != estab:
        db.session.rollback()
        return _error(422, "wrong_school", "The school secret belongs to a different school.")
    if connection.state not in (ConnectionState.requested, ConnectionState.pending, ConnectionState.approved,
                                ConnectionState.failing):
        # R1/R2: a school authorises through the portal first (terms accepted, products chosen).
        db.session.rollback()
        return _error(409, "not_requested", "The school has not asked for this connection in the portal yet.")
    connection.provider_school_id = estab
    lifecycle.mark_approved(connection, "provider", settings={"school_secret": secret, "estab": estab})
    log.info("groupcall authorisation received for connection %s", connection.id)
    return jsonify({"status": "approved", "scopes": sorted(details.get("Scopes") or [])})


def _store_secret(connection, secret: str, estab: str) -> None:
    merged = json.loads(connection.settings_encrypted) if connection.settings_encrypted else {}
    merged.update({"school_secret": secret, "estab": estab})
    connection.settings_encrypted = json.dumps(merged)
    connection.provider_school_id = estab
