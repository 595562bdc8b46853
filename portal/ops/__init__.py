"""Running the portal in production: health, metrics, request ids and JSON logs, wired by init_app()."""
from __future__ import annotations

from flask import Flask

__all__ = ["init_app"]


def init_app(app: Flask) -> None:
    """Add request ids, JSON logs when LOG_FORMAT=json, and the /healthz, /readyz and /metrics endpoints."""
    from portal.ops import health, metrics, requestlog

    requestlog.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
