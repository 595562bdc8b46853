"""The demo's Example MIS school, connected to the Example sandbox through the lifecycle."""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from portal_example.sandbox import DEFAULT_TOKEN, DEMO_SCHOOLS, ExampleSandbox, demo_schools

DEMO_URNS = {urn for urn, *_ in DEMO_SCHOOLS}


def demo_connections(schools: list[Any]) -> list[Any]:
    """Ask for (and, as the sandbox approves at once, get) an Example MIS connection per demo school it serves."""
    from portal import lifecycle
    from portal.demo import school_admin_with_terms
    from portal.models import ConnectionState

    connections = []
    for school in schools:
        if school.urn not in DEMO_URNS:
            continue
        connection = lifecycle.connection_for(school, "example")
        if connection.state != ConnectionState.approved:
            admin = school_admin_with_terms(school)
            if admin is None:
                continue
            if not connection.settings_encrypted:
                connection.settings_encrypted = json.dumps({"token": DEFAULT_TOKEN})
            lifecycle.request_access(connection, admin, {"name": admin.name, "email": admin.email})
        connections.append(connection)
    return connections


@contextmanager
def demo_sandbox() -> Iterator[dict[str, Any]]:
    """Serve the demo's Example MIS school on a free local port while the demo loads; yield the connector settings."""
    with ExampleSandbox(demo_schools(len(DEMO_SCHOOLS)), token=DEFAULT_TOKEN) as sandbox:
        yield sandbox.settings
