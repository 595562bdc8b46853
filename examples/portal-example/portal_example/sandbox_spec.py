"""How the portal finds the Example MIS sandbox: its server, its development port and the demo school it serves."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from portal.connectors import DemoSchool, Sandbox

# The demo's Example MIS school: a school of its own, so the demo's other schools keep their providers.
DEMO_SCHOOLS = (DemoSchool("example", "Demo Example School", "990004", "990", "2003", "Primary", 11),)
DEV_PORT = 8763


def serve(**options: Any) -> None:
    """Run the sandbox in the foreground (`flask portal sandbox example`, `make run`)."""
    from portal_example.sandbox import serve as serve_sandbox

    serve_sandbox(**options)


@contextmanager
def demo() -> Iterator[Mapping[str, Any]]:
    """Serve the demo's school on a free local port while `flask portal demo` loads; yield the connector settings."""
    from portal_example.demo import demo_sandbox

    with demo_sandbox() as settings:
        yield settings


def settings_for(url: str) -> dict[str, Any]:
    """Settings for a sandbox already listening at ``url`` (its API lives under /api/v1)."""
    return {"base_url": f"{url.rstrip('/')}/api/v1", "allow_insecure_http": True}


SANDBOX = Sandbox(serve=serve, dev_port=DEV_PORT, demo_schools=DEMO_SCHOOLS, demo=demo, settings_for=settings_for)
