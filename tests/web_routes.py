"""Every route of the app as something a test can request: sample paths for each rule, and the roles that ask."""
from __future__ import annotations

import re
from dataclasses import dataclass

from flask import Flask

from portal.extensions import db
from portal.models import Role
from tests import api_support
from tests.conftest import Auth

ARGUMENT = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
SAMPLE = {"int": "1", "string": "x", "path": "x", "default": "x"}
ROLES = ("anonymous", "school_admin", "support", "product")


@dataclass
class Route:
    rule: str
    endpoint: str
    method: str

    def path(self, values: dict[str, str] | None = None) -> str:
        """The rule with each argument replaced by the given raw text (or a sample of its converter)."""
        values = values or {}

        def fill(match: re.Match) -> str:
            return values.get(match.group(2), SAMPLE.get(match.group(1) or "default", "x"))

        return ARGUMENT.sub(fill, self.rule)

    @property
    def arguments(self) -> list[tuple[str, str]]:
        return [(m.group(1) or "default", m.group(2)) for m in ARGUMENT.finditer(self.rule)]


def probed_routes(app: Flask) -> list[Route]:
    """Every route a signed-in client may request without ending its own session."""
    return [r for r in routes(app) if not (r.method == "POST" and r.endpoint in SESSION_ENDING)]


def routes(app: Flask) -> list[Route]:
    """One entry per rule and method (GET where a rule has it, else POST), static files excluded."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        methods = rule.methods or set()
        method = "GET" if "GET" in methods else ("POST" if "POST" in methods else sorted(methods - {"OPTIONS", "HEAD"})[0])
        found.append(Route(rule.rule, rule.endpoint, method))
    return sorted(found, key=lambda r: (r.rule, r.method))


def client_as(app: Flask, make, role: str):
    """A test client signed in as the role (or carrying a product's API token); returns (client, headers)."""
    client = app.test_client()
    headers: dict[str, str] = {}
    if role == "school_admin":
        school = make.school()
        user = make.user(Role.school_admin, school)
        db.session.commit()
        Auth(client).login(user)
    elif role == "support":
        user = make.user(support=True)
        db.session.commit()
        Auth(client).login(user)
    elif role == "product":
        product = api_support.product(api_support.matrix()["features"][1]["id"])
        school, _ = api_support.connected_school(make, product)
        headers["Authorization"] = f"Bearer {api_support.token_for(product)}"
    return client, headers


# POSTs that would end the client's own session, so later requests would no longer test the role.
SESSION_ENDING = {"auth.logout"}
