"""How the portal finds the Groupcall sandbox: its server, its fixed development port and the demo school it serves."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from portal.connectors import DemoSchool, Sandbox

# The demo's Groupcall school (LA 990, establishment 2002: portal_groupcall.sandbox.DEMO_ESTABLISHMENTS[0]),
# outside the demo trust and subscribed through the local authority.
DEMO_SCHOOLS = (
    DemoSchool("village", "Demo Village School", "990003", "990", "2002", "Primary", 11, via_local_authority=True),
)
DEV_PORT = 8762


def serve(**options: Any) -> None:
    """Run the sandbox in the foreground (`flask portal sandbox groupcall`)."""
    from portal_groupcall.sandbox import serve as serve_sandbox

    serve_sandbox(**options)


@contextmanager
def demo() -> Iterator[Mapping[str, Any]]:
    """Serve the demo's Groupcall school on a free local port; yield the connector settings for it."""
    from portal_groupcall.demo import demo_sandbox

    with demo_sandbox() as settings:
        yield settings


SANDBOX = Sandbox(serve=serve, dev_port=DEV_PORT, demo_schools=DEMO_SCHOOLS, demo=demo)
