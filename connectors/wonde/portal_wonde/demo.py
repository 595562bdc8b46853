"""The demo's Wonde schools: Demo Primary School and Demo Academy, connected to the Wonde sandbox through the lifecycle."""
from __future__ import annotations

import json
from typing import Any

from portal_wonde.sandbox import DEFAULT_TOKEN, DEMO_SCHOOLS

DEMO_URNS = {urn for urn, *_ in DEMO_SCHOOLS}


def demo_connections(schools: list[Any]) -> list[Any]:
    """Request (and, as the sandbox approves at once, get) a Wonde connection per demo school it serves; idempotent.

    It walks the real lifecycle: a school admin accepts the terms and asks for access through the
    real connector, and the sandbox answers the request-access call with "approved".
    """
    from sqlalchemy import select

    from portal import lifecycle
    from portal.extensions import db
    from portal.models import ConnectionState, Membership, Role

    connections = []
    for school in schools:
        if school.urn not in DEMO_URNS:
            continue
        connection = lifecycle.connection_for(school, "wonde")
        if connection.state != ConnectionState.approved:
            admin = db.session.execute(
                select(Membership).where(Membership.organisation_id == school.id, Membership.role == Role.school_admin)
            ).scalars().first()
            if admin is None:
                continue
            if not connection.settings_encrypted:
                # The sandbox's token; a real deployment sets CONNECTORS["wonde"]["token"] instead.
                connection.settings_encrypted = json.dumps({"token": DEFAULT_TOKEN})
            if lifecycle.terms_acceptance(school) is None:
                lifecycle.accept_terms(school, admin.user, lifecycle.current_terms_version())
            if connection.state not in (ConnectionState.requested, ConnectionState.pending):
                lifecycle.request_access(connection, admin.user, {"name": admin.user.name, "email": admin.user.email})
            else:
                lifecycle.poll_access(connection)
        connections.append(connection)
    return connections
