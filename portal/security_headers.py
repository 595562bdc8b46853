"""Security headers on every response (R61, R70): a CSP without inline code, no framing, HSTS, no-store on data pages."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, redirect, request
from werkzeug.wrappers import Response

# Scripts and styles come only from our own static files: no inline <script>, style="" or event handlers.
# img-src allows data: for the SVG icons Bootstrap's stylesheet embeds (select arrows, the navbar toggler).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HSTS = "max-age=31536000; includeSubDomains"

# Headers every response carries. The Referrer-Policy is same-origin, not no-referrer: over HTTPS Flask-WTF's
# CSRF check compares the Referer with the host, so our own forms must still send it; other sites get nothing.
FIXED_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}

# Probes from the machine itself (load balancers, monitoring) may speak plain HTTP to the app.
NO_REDIRECT_PATHS = ("/healthz", "/readyz", "/metrics")


def https_only(app: Flask) -> bool:
    """Return whether the deployment's public address is https (then HSTS is sent and http is redirected)."""
    return urlsplit(str(app.config.get("BASE_URL") or "")).scheme == "https"


def _is_static(endpoint: str | None) -> bool:
    return endpoint is not None and (endpoint == "static" or endpoint.endswith(".static"))


def init_app(app: Flask) -> None:
    """Register the redirect to HTTPS and the headers."""
    secure = https_only(app)

    @app.before_request
    def redirect_to_https():
        # Behind a TLS-terminating proxy, request.is_secure is right only with TRUSTED_PROXIES set (ProxyFix).
        if secure and not request.is_secure and not request.path.startswith(NO_REDIRECT_PATHS):
            return redirect(request.url.replace("http://", "https://", 1), code=308)
        return None

    @app.after_request
    def add_headers(response: Response) -> Response:
        for name, value in FIXED_HEADERS.items():
            response.headers.setdefault(name, value)
        if secure:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        if not _is_static(request.endpoint):
            # Pages and API answers may show pupil, staff or request data: no browser or proxy keeps a copy.
            response.headers["Cache-Control"] = "no-store"
            response.headers.pop("Expires", None)
            response.headers.pop("Pragma", None)
        return response
