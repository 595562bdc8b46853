"""A connector with no provider behind it whose sandbox declares the demo's three schools (demo tests without HTTP)."""
from __future__ import annotations

from portal.connectors import DemoSchool, Sandbox
from portal.plugins import hookimpl
from tests.plugins.fake_connector import FakeConnector

SCHOOLS = (
    DemoSchool("primary", "Demo Primary School", "990001", "990", "2001", "Primary", 11, trust=True),
    DemoSchool("academy", "Demo Academy", "990002", "990", "4001", "Secondary", 18, trust=True),
    DemoSchool("village", "Demo Village School", "990003", "990", "2002", "Primary", 11, via_local_authority=True),
)


class DemoSchoolsConnector(FakeConnector):
    """The fake connector, serving the demo schools (it takes no part in connecting them)."""

    name = "demoschools"
    title = "Demo schools"
    sandbox = Sandbox(demo_schools=SCHOOLS)


@hookimpl
def portal_register_connectors() -> list[type[FakeConnector]]:
    return [DemoSchoolsConnector]
