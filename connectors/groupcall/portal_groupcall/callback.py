"""The route Groupcall posts a school's authorisation to: check the shared secret, validate the school secret, approve."""
from __future__ import annotations

import hmac
import logging
import re

from flask import Blueprint, current_app, jsonify, request

from portal.connectors import AuthorisationLost, ConnectorError
from portal.plugins import api
from portal.plugins.api import ConnectionState
from portal_groupcall.client import AuthorisationPaused

log = logging.getLogger(__name__)

bp = Blueprint("groupcall_callback", __name__, url_prefix="/connectors/groupcall")
ESTAB = re.compile(r"^\d{7}$")
CONNECTOR = "groupcall"
# States in which the school has asked for the connection in the portal (R1/R2).
ASKED = (ConnectionState.requested, ConnectionState.pending, ConnectionState.approved, ConnectionState.failing)


def _error(status: int, code: str, message: str):
    return jsonify({"error": {"code": code, "message": message}}), status


@bp.post("/authorised")
def authorised():
    """XoD's authorisation callback (spec §3.1): form-urlencoded, server to server, our secret in ?key=."""
    deployment = current_app.config.get("CONNECTORS", {}).get(CONNECTOR, {}) or {}
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

    school = api.school_by_dfe_number(estab)
    if school is None:
        return _error(404, "unknown_school", "No school on this portal has that LA and DfE number.")
    # Looked up, never created: a callback for a school that never asked stores nothing (R1/R2).
    connection = api.connection_of(school, CONNECTOR)
    asked = connection is not None and connection.state in ASKED
    stored = api.connection_settings(connection) if connection is not None else {}
    if asked and stored.get("school_secret") == secret and connection.state == ConnectionState.approved:
        # The authorisation the portal already holds, sent again: nothing to change.
        return jsonify({"status": "approved", "unchanged": True})
    settings = {**(stored or dict(deployment)), "school_secret": secret, "estab": estab}
    try:
        details = api.connector_class(CONNECTOR)(settings).client(school, connection).token_details()
    except AuthorisationPaused:
        if not asked:
            api.rollback()
            return _refused(school, connection, 409, "not_requested",
                            "The school has not asked for this connection in the portal yet.")
        _store_secret(connection, secret, estab)
        api.audit_event("groupcall.authorisation_paused", organisation_id=school.id, target=connection, actor="provider",
                    details={"connector": CONNECTOR})
        api.commit()
        return jsonify({"status": "paused"})
    except AuthorisationLost:
        # Groupcall refuses this secret: another school's, or an older authorisation replayed after a
        # newer one. It proves nothing about the connection, which stays as it is.
        api.rollback()
        return _refused(school, connection, 422, "secret_not_valid",
                        "Groupcall did not accept the school secret in this callback; nothing was changed.")
    except ConnectorError as exc:
        api.rollback()
        return _error(502, exc.code, exc.message)
    if str(details.get("Estab") or estab) != estab:
        api.rollback()
        return _refused(school, connection, 422, "wrong_school", "The school secret belongs to a different school.")
    if not asked:
        # R1/R2: a school authorises through the portal first (terms accepted, products chosen).
        api.rollback()
        return _refused(school, connection, 409, "not_requested",
                        "The school has not asked for this connection in the portal yet.")
    connection.provider_school_id = estab
    api.mark_approved(connection, "provider", settings={"school_secret": secret, "estab": estab})
    log.info("groupcall authorisation received for connection %s", connection.id)
    return jsonify({"status": "approved", "scopes": sorted(details.get("Scopes") or [])})


def _refused(school, connection, status: int, code: str, message: str):
    """Answer a callback that changes nothing, and audit it (ids only; never the secret)."""
    api.audit_event("groupcall.callback_refused", organisation_id=school.id, actor="provider",
                    target_type="connections" if connection is not None else None,
                    target_id=connection.id if connection is not None else None,
                    details={"connector": CONNECTOR, "code": code})
    api.commit()
    return _error(status, code, message)


def _store_secret(connection, secret: str, estab: str) -> None:
    api.merge_connection_settings(connection, {"school_secret": secret, "estab": estab})
    connection.provider_school_id = estab
