"""Fixtures: a running Wonde sandbox over a small synthetic school, and a connector pointed at it."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from portal_wonde.connector import WondeConnector
from portal_wonde.sandbox import WondeSandbox

from portal.sandbox.synthetic import generate_school


@pytest.fixture
def school():
    """A small secondary school (90 pupils, 12 school days) with exclusions, SEN and a sixth form."""
    return generate_school(2, pupils=90, days=12, phase="secondary", urn="123456", la_code="201",
                           establishment_number="4001")


@pytest.fixture
def sandbox(school):
    """A Wonde sandbox serving the school over real HTTP on a free loopback port."""
    with WondeSandbox([school]) as running:
        yield running


@pytest.fixture
def sleeps():
    """The waits the client asked for, recorded instead of slept."""
    return []


@pytest.fixture
def make_connector(sandbox, sleeps):
    """Build a WondeConnector against the sandbox, with extra settings; waits are recorded, not slept."""
    built = []

    def build(**settings):
        connector = WondeConnector({**sandbox.settings, **settings}, sleep=sleeps.append)
        built.append(connector)
        return connector

    yield build
    for connector in built:
        connector.client.close()


@pytest.fixture
def connector(make_connector):
    """A WondeConnector against the sandbox with default settings."""
    return make_connector()


@pytest.fixture
def connection(school):
    """A portal connection (not yet matched to a Wonde school) for the synthetic school."""
    return SimpleNamespace(provider_school_id=None, school=SimpleNamespace(urn=school.urn, dfe_number=school.dfe_number))


# ---------------------------------------------------------------- the connector conformance kit (portal.testing.conformance)

import contextlib  # noqa: E402

from portal.testing.conformance import ConformanceProvider, Served, kit_database, kit_database_url  # noqa: E402,F401

# Each kit fault type as a sandbox fault on the school's data endpoints.
KIT_FAULTS = {
    "server_error": {"status": 503},
    "rate_limited": {"status": 429, "retry_after": "0"},
    "malformed": {"body": "invalid_json"},
    "timeout": {"delay": 0.6},
    "revoke": {"action": "revoke"},
}


class WondeServed(Served):
    """A synthetic school served by a running Wonde sandbox, with quick retries and a short read timeout."""

    def __init__(self, sandbox: WondeSandbox) -> None:
        self.sandbox = sandbox
        self.settings = {**sandbox.settings, "backoff_base": 0.01, "backoff_cap": 0.02, "retry_after_cap": 0.02,
                         "read_timeout": 0.3, "max_retries": 3}
        self.connection_settings = {}

    def synthetic_key(self, provider_id: str) -> str | None:
        return self.sandbox.synthetic_key(provider_id)

    def inject(self, fault: str, *, times: int = 1, skip: int = 0) -> None:
        self.sandbox.add_fault(match=f"/schools/{self.sandbox.school_id()}/", times=times, skip=skip, **KIT_FAULTS[fault])

    def request_count(self) -> int:
        return len(self.sandbox.requests())

    def refuse(self, category: str) -> None:
        self.sandbox.add_fault(match=f"/schools/{self.sandbox.school_id()}/{MAIN_READS[category]}", status=403,
                               times=None)

    def withdraw(self, category: str) -> None:
        self.sandbox.withhold(self.sandbox.school_id(), *PERMISSIONS[category])

    def grant(self, category: str) -> None:
        self.sandbox.grant(self.sandbox.school_id(), *PERMISSIONS[category])

    def drop_secondary(self) -> str | None:
        self.sandbox.missing.add("students-leaver")
        return "student_basic"


# The first read of each category, and the Wonde permissions (sandbox resources) it needs.
MAIN_READS = {"student_basic": "students", "student_demographics": "students", "student_timetable": "subjects",
              "student_assessment": "assessment/results", "student_attendance_exclusions": "attendance/session",
              "staff_basic": "employees"}
PERMISSIONS = {"student_basic": ("students",), "student_demographics": ("students",),
               "student_timetable": ("subjects", "classes", "groups", "lessons"), "student_assessment": ("assessment",),
               "student_attendance_exclusions": ("attendance", "exclusions"), "staff_basic": ("employees",)}


class WondeProvider(ConformanceProvider):
    name = "wonde"
    plugin = "portal_wonde.plugin"

    @contextlib.contextmanager
    def serve(self, school):
        with WondeSandbox([school]) as sandbox:
            yield WondeServed(sandbox)


@pytest.fixture
def provider():
    """The Wonde side of the conformance kit."""
    return WondeProvider()
