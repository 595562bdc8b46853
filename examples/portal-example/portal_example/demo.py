"""The demo's Example MIS school, connected to the Example sandbox through the portal's lifecycle (portal.plugins.api)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from portal.plugins import api
from portal_example.sandbox import DEFAULT_TOKEN, DEMO_SCHOOLS, ExampleSandbox, demo_schools

DEMO_URNS = {school.urn for school in DEMO_SCHOOLS}


def demo_connections(schools: list[Any]) -> list[Any]:
    """Ask for (and, as the sandbox approves at once, get) a connection per demo school the sandbox serves; idempotent."""
    connections = []
    for school in schools:
        if school.urn not in DEMO_URNS:
            continue
        connection = api.connection_for(school, "example")
        if connection.state != api.ConnectionState.approved:
            admin = api.school_admin_with_terms(school)
            if admin is None:
                continue
            if not connection.settings_encrypted:
                # The sandbox's token; a real deployment gives each connection its own.
                api.set_connection_settings(connection, {"token": DEFAULT_TOKEN})
            if connection.state in (api.ConnectionState.requested, api.ConnectionState.pending):
                api.poll_access(connection)
            else:
                api.request_access(connection, admin, {"name": admin.name, "email": admin.email})
        connections.append(connection)
    return connections


@contextmanager
def demo_sandbox() -> Iterator[dict[str, Any]]:
    """Serve the demo's school on a free local port while the demo loads; yield the connector settings for it."""
    with ExampleSandbox(demo_schools(len(DEMO_SCHOOLS)), token=DEFAULT_TOKEN) as sandbox:
        yield sandbox.settings
