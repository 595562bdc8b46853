"""/healthz (the process answers) and /readyz (its dependencies), as JSON with no personal data."""
from __future__ import annotations

from flask import Blueprint, jsonify

from portal.ops import probes

bp = Blueprint("ops_health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is alive and serving; touches no dependency."""
    return _no_store(jsonify({"status": "ok"}))


@bp.get("/readyz")
def readyz():
    """Ready when every blocking dependency is; 503 otherwise. Each check is listed with a short detail."""
    results = probes.readiness()
    ready = all(p.ok for p in results if p.blocking)
    body = {
        "status": ("ready" if all(p.ok for p in results) else "degraded") if ready else "not_ready",
        "checks": {p.name: {"ok": p.ok, "detail": p.detail, "blocking": p.blocking} for p in results},
    }
    resp = jsonify(body)
    resp.status_code = 200 if ready else 503
    return _no_store(resp)


def _no_store(resp):
    resp.headers["Cache-Control"] = "no-store"
    return resp
