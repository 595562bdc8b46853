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
    # The sandbox's token; a real deployment gives each connection its own.
    return api.connect_demo_schools(schools, "example", lambda school: school.urn in DEMO_URNS,
                                    lambda connection, school, admin: api.ask_for_access(connection, admin, {"token": DEFAULT_TOKEN}))


@contextmanager
def demo_sandbox() -> Iterator[dict[str, Any]]:
    """Serve the demo's school on a free local port while the demo loads; yield the connector settings for it."""
    with ExampleSandbox(demo_schools(len(DEMO_SCHOOLS)), token=DEFAULT_TOKEN) as sandbox:
        yield sandbox.settings
