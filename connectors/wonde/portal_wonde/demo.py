"""The demo's Wonde schools: Demo Primary School and Demo Academy, connected to the Wonde sandbox through the lifecycle."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from portal.plugins import api
from portal_wonde.sandbox import DEFAULT_TOKEN, DEMO_SCHOOLS, WondeSandbox, demo_schools

DEMO_URNS = {urn for urn, *_ in DEMO_SCHOOLS}


def demo_connections(schools: list[Any]) -> list[Any]:
    """Request (and, as the sandbox approves at once, get) a Wonde connection per demo school it serves; idempotent.

    It walks the real lifecycle: a school admin accepts the terms and asks for access through the
    real connector, and the sandbox answers the request-access call with "approved".
    """
    connections = []
    for school in schools:
        if school.urn not in DEMO_URNS:
            continue
        connection = api.connection_for(school, "wonde")
        if connection.state != api.ConnectionState.approved:
            admin = api.school_admin_with_terms(school)
            if admin is None:
                continue
            if not connection.settings_encrypted:
                # The sandbox's token; a real deployment sets CONNECTORS["wonde"]["token"] instead.
                api.set_connection_settings(connection, {"token": DEFAULT_TOKEN})
            if connection.state not in (api.ConnectionState.requested, api.ConnectionState.pending):
                api.request_access(connection, admin, {"name": admin.name, "email": admin.email})
            else:
                api.poll_access(connection)
        connections.append(connection)
    return connections


@contextmanager
def demo_sandbox() -> Iterator[dict[str, Any]]:
    """Serve the demo's Wonde schools on a free local port while the demo loads; yield the connector settings for it."""
    with WondeSandbox(demo_schools(len(DEMO_SCHOOLS)), token=DEFAULT_TOKEN) as sandbox:
        yield sandbox.settings
