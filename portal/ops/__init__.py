"""Running the portal in production: health, metrics, request ids and JSON logs, wired by init_app()."""
from __future__ import annotations

from flask import Flask

from portal.errors import StartupError
from portal.ops import health, metrics, requestlog

__all__ = ["init_app"]


def init_app(app: Flask) -> None:
    """Add request ids, JSON logs when LOG_FORMAT=json, and the /healthz, /readyz and /metrics endpoints."""
    for key in ("SERVE_WORKERS", "SERVE_THREADS"):
        value = app.config.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise StartupError(f"setting PORTAL_{key} is invalid: it must be a positive whole number (or unset: from the CPU count)")
    if not isinstance(app.config.get("METRICS_ENABLED", False), bool):
        raise StartupError("setting PORTAL_METRICS_ENABLED is invalid: it must be true or false")
    requestlog.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
