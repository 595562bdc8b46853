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
    # The sandbox's token; a real deployment sets CONNECTORS["wonde"]["token"] instead.
    return api.connect_demo_schools(schools, "wonde", lambda school: school.urn in DEMO_URNS,
                                    lambda connection, school, admin: api.ask_for_access(connection, admin, {"token": DEFAULT_TOKEN}))


@contextmanager
def demo_sandbox() -> Iterator[dict[str, Any]]:
    """Serve the demo's Wonde schools on a free local port while the demo loads; yield the connector settings for it."""
    with WondeSandbox(demo_schools(len(DEMO_SCHOOLS)), token=DEFAULT_TOKEN) as sandbox:
        yield sandbox.settings
