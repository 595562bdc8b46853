"""Security headers on every route, signed in and out (R61, R70): CSP without inline code, no framing, no-store."""
from __future__ import annotations

import pytest

from portal.api.statements import STATEMENT_CSP
from portal.security_headers import CONTENT_SECURITY_POLICY, HSTS
from tests.web_routes import ROLES, client_as, probed_routes

EXPECTED = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _check(resp, where: str) -> list[str]:
    problems = [f"{where}: {name} is {resp.headers.get(name)!r}" for name, value in EXPECTED.items() if resp.headers.get(name) != value]
    csp = resp.headers.get("Content-Security-Policy", "")
    own = csp in (CONTENT_SECURITY_POLICY, STATEMENT_CSP)  # the downloadable statement carries a stricter one
    if not own or "unsafe-inline" in csp or "frame-ancestors 'none'" not in csp:
        problems.append(f"{where}: CSP is {csp!r}")
    return problems


@pytest.mark.parametrize("role", ROLES)
def test_every_route_answers_with_the_security_headers(app, make, role):
    client, headers = client_as(app, make, role)
    problems = []
    for route in probed_routes(app):
        resp = client.open(route.path(), method=route.method, headers=headers)
        problems += _check(resp, f"{role} {route.method} {route.path()} ({resp.status_code})")
    assert problems == []


def test_static_files_may_be_cached_but_carry_the_other_headers(client):
    resp = client.get("/static/portal.css")
    resp.close()
    assert resp.status_code == 200
    assert resp.headers.get("Cache-Control") != "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff" and "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]


def test_no_hsts_and_no_redirect_when_the_portal_is_served_over_http(client):
    resp = client.get("/login")
    assert resp.status_code == 200 and "Strict-Transport-Security" not in resp.headers


def test_https_base_url_sends_hsts_and_redirects_plain_http_to_https(make_app):
    app = make_app(BASE_URL="https://portal.example.org")
    client = app.test_client()
    plain = client.get("/login?next=/schools", base_url="http://portal.example.org")
    assert plain.status_code == 308 and plain.headers["Location"] == "https://portal.example.org/login?next=/schools"
    assert plain.headers["Strict-Transport-Security"] == HSTS
    secure = client.get("/login", base_url="https://portal.example.org")
    assert secure.status_code == 200 and secure.headers["Strict-Transport-Security"] == HSTS


def test_templates_have_no_inline_script_or_style():
    """The CSP forbids inline code; a template that brings some back would break in the browser."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "portal" / "templates"
    # javascript: links (flask-admin's menus, whose clicks its scripts handle) are blocked by the CSP and do nothing.
    inline = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=", re.I)
    found = [f"{p.relative_to(root)}: {m.group(0)}" for p in root.rglob("*.html") for m in inline.finditer(p.read_text())]
    # The downloadable statement is a standalone file: its one style is allowed by hash (next test).
    assert found == ["api/school_statement.html: <style"]


def test_the_downloadable_statement_allows_exactly_its_own_style(app, client, make, auth):
    import base64
    import hashlib
    import re

    from portal.extensions import db
    from portal.models import Role

    school = make.school()
    user = make.user(Role.school_admin, school)
    db.session.commit()
    auth.login(user)
    resp = client.get(f"/schools/{school.id}/data-use/statement.html")
    assert resp.status_code == 200
    style = re.search(r"<style>(.*?)</style>", resp.get_data(as_text=True), re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    csp = resp.headers["Content-Security-Policy"]
    assert f"style-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
