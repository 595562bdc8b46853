"""The API's error model: JSON {"error": {"code", "message", ...}} with a stable code, never HTML or a traceback."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from werkzeug.exceptions import HTTPException

from portal.errors import PortalError

# Stable codes for the HTTP errors the API can raise itself (rate limit, unknown route, wrong method).
_HTTP_CODES = {
    400: ("bad_request", "The request could not be understood."),
    401: ("unauthenticated", "Send a valid API credential as 'Authorization: Bearer <token>'."),
    403: ("forbidden", "This credential may not do that."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept that method."),
    406: ("not_acceptable", "This API answers application/json only."),
    429: ("rate_limited", "Too many requests with this credential. Wait and try again."),
}


class ApiError(PortalError):
    """A refused API request; ``extra`` adds fields (such as the category) next to code and message."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message, code=code, status=status)
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def error_response(status: int, code: str, message: str, **extra: Any):
    """Return a JSON error response."""
    return jsonify({"error": {"code": code, "message": message, **extra}}), status


def register(bp: Blueprint) -> None:
    """Answer every error raised inside the API blueprint in JSON."""

    @bp.errorhandler(ApiError)
    def api_error(exc: ApiError):
        resp = jsonify(exc.body())
        resp.status_code = exc.status
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="portal-api"'
        return resp

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        code, message = _HTTP_CODES.get(status, ("error", "The request failed."))
        resp, status = error_response(status, code, message)
        # Keep the headers the error carries (Allow on 405, Retry-After and limits on 429).
        for key, value in exc.get_headers():
            if key.lower() != "content-type":
                resp.headers[key] = value
        return resp, status
