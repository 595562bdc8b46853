"""Request ids (X-Request-ID in and out, g.request_id) and JSON-lines logs when LOG_FORMAT=json."""
from __future__ import annotations

import logging
import re
import sys
import uuid

from flask import Flask, g, has_request_context, request

from portal.errors import StartupError

HEADER = "X-Request-ID"
# A proxy's id is kept only when it is short and plain, so it cannot forge log lines.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_HANDLER_NAME = "portal-ops"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Give every record a ``request_id`` (the current request's, else "-")."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


def formatter(log_format: str) -> logging.Formatter:
    """Return the formatter of LOG_FORMAT: one JSON object per line, or plain text."""
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(log_format: str, level: str = "INFO") -> None:
    """Send every log record to stderr in the chosen format (once per process; called again, it replaces the format)."""
    if log_format not in ("text", "json"):
        raise StartupError('setting PORTAL_LOG_FORMAT is invalid: it must be "text" or "json"')
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == _HANDLER_NAME), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    handler.setFormatter(formatter(log_format))
    if root.level > logging.getLevelName(level) or root.level == logging.NOTSET:
        root.setLevel(level)


def init_app(app: Flask) -> None:
    """Tag each request with an id and, when LOG_FORMAT=json, log JSON lines to stderr."""
    log_format = app.config.get("LOG_FORMAT", "text")
    if log_format not in ("text", "json"):
        raise StartupError('setting PORTAL_LOG_FORMAT is invalid: it must be "text" or "json"')
    if log_format == "json":
        configure_logging("json", app.config.get("LOG_LEVEL", "INFO"))

    @app.before_request
    def _assign_request_id() -> None:
        incoming = request.headers.get(HEADER, "")
        g.request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex

    @app.after_request
    def _return_request_id(response):
        if "request_id" in g:
            response.headers[HEADER] = g.request_id
        return response
