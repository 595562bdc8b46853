"""How the portal finds the Example MIS sandbox: its server, its development port and the demo school it serves."""
from __future__ import annotations

from typing import Any

from portal.connectors import Sandbox
from portal_example import demo, sandbox

DEV_PORT = 8763


def settings_for(url: str) -> dict[str, Any]:
    """Settings for a sandbox already listening at ``url`` (its API lives under /api/v1)."""
    return {"base_url": f"{url.rstrip('/')}/api/v1", "allow_insecure_http": True}


SANDBOX = Sandbox(serve=sandbox.serve, dev_port=DEV_PORT, demo_schools=sandbox.DEMO_SCHOOLS, demo=demo.demo_sandbox,
                  settings_for=settings_for)
