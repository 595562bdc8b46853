"""How the portal finds the Wonde sandbox: its server, its fixed development port and the demo schools it serves."""
from __future__ import annotations

from typing import Any

from portal.connectors import DemoSchool, Sandbox
from portal_wonde import demo, sandbox

# The demo's Wonde schools; the sandbox serves them first (portal_wonde.sandbox.DEMO_SCHOOLS has the same numbers).
DEMO_SCHOOLS = (
    DemoSchool("primary", "Demo Primary School", "990001", "990", "2001", "Primary", 11, trust=True),
    # GIAS statutory high ages: the academy is 11-18, its sixth form not part of the phase (R30's suggestion).
    DemoSchool("academy", "Demo Academy", "990002", "990", "4001", "Secondary", 18, trust=True),
)
DEV_PORT = 8761


def settings_for(url: str) -> dict[str, Any]:
    """Settings for a sandbox already listening at ``url`` (its API lives under /v1.0)."""
    return {"base_url": f"{url.rstrip('/')}/v1.0", "allow_insecure_http": True}


SANDBOX = Sandbox(serve=sandbox.serve, dev_port=DEV_PORT, demo_schools=DEMO_SCHOOLS, demo=demo.demo_sandbox, settings_for=settings_for)
