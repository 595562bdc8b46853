"""How the portal finds the Groupcall sandbox: its server, its fixed development port and the demo school it serves."""
from __future__ import annotations

from portal.connectors import DemoSchool, Sandbox
from portal_groupcall import demo, sandbox

# The demo's Groupcall school (LA 990, establishment 2002: portal_groupcall.sandbox.DEMO_ESTABLISHMENTS[0]),
# outside the demo trust and subscribed through the local authority.
DEMO_SCHOOLS = (
    DemoSchool("village", "Demo Village School", "990003", "990", "2002", "Primary", 11, via_local_authority=True),
)
DEV_PORT = 8762


SANDBOX = Sandbox(serve=sandbox.serve, dev_port=DEV_PORT, demo_schools=DEMO_SCHOOLS, demo=demo.demo_sandbox)
