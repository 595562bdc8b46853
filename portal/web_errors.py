"""Error pages and JSON errors: a clear message with a stable code, never a traceback."""
from __future__ import annotations

import logging

from flask import Flask, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from portal.errors import PortalError, code_location
from portal.extensions import db

log = logging.getLogger(__name__)

_PLAIN = {
    400: "The request could not be understood.",
    403: "You do not have permission to do that.",
    404: "Page not found.",
    405: "That action is not allowed here.",
    429: "Too many attempts. Wait a few minutes and try again.",
    500: "Something went wrong on our side. The problem has been logged.",
}


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def _respond(status: int, code: str, message: str):
    if _wants_json():
        return jsonify({"error": {"code": code, "message": message}}), status
    return render_template("error.html", status=status, message=message), status


def init_app(app: Flask) -> None:
    """Register the handlers."""

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return _respond(400, "csrf_failed", "The form expired or was sent from elsewhere. Go back, reload and try again.")

    @app.errorhandler(PortalError)
    def portal_error(exc: PortalError):
        return _respond(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        body, status = _respond(status, code, _PLAIN.get(status, exc.description or "Error."))
        # Keep the headers the error carries (Allow on 405, Retry-After on 429); the body sets its own type.
        return body, status, [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        # R65: the exception text (and a traceback's last line) may quote personal data or SQL parameters,
        # and a path may carry a search value: log the type, request id, route and code location only.
        log.error("unhandled %s (request %s, %s %s) at %s", type(exc).__name__, g.get("request_id") or "-",
                  request.method, request.url_rule.rule if request.url_rule else request.endpoint or "-", code_location(exc))
        # A failed statement leaves the transaction aborted (PostgreSQL): end it so the error page can render.
        db.session.rollback()
        return _respond(500, "internal_error", _PLAIN[500])
