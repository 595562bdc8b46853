"""How the portal finds the Wonde sandbox: its server, its fixed development port and the demo schools it serves."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from portal.connectors import DemoSchool, Sandbox

# The demo's Wonde schools; the sandbox serves them first (portal_wonde.sandbox.DEMO_SCHOOLS has the same numbers).
DEMO_SCHOOLS = (
    DemoSchool("primary", "Demo Primary School", "990001", "990", "2001", "Primary", 11, trust=True),
    # GIAS statutory high ages: the academy is 11-18, its sixth form not part of the phase (R30's suggestion).
    DemoSchool("academy", "Demo Academy", "990002", "990", "4001", "Secondary", 18, trust=True),
)
DEV_PORT = 8761


def serve(**options: Any) -> None:
    """Run the sandbox in the foreground (`flask portal sandbox wonde`)."""
    from portal_wonde.sandbox import serve as serve_sandbox

    serve_sandbox(**options)


@contextmanager
def demo() -> Iterator[Mapping[str, Any]]:
    """Serve the demo's Wonde schools on a free local port; yield the connector settings for it."""
    from portal_wonde.demo import demo_sandbox

    with demo_sandbox() as settings:
        yield settings


def settings_for(url: str) -> dict[str, Any]:
    """Settings for a sandbox already listening at ``url`` (its API lives under /v1.0)."""
    return {"base_url": f"{url.rstrip('/')}/v1.0", "allow_insecure_http": True}


SANDBOX = Sandbox(serve=serve, dev_port=DEV_PORT, demo_schools=DEMO_SCHOOLS, demo=demo, settings_for=settings_for)
