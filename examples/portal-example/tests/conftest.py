"""Fixtures: the conformance kit's Example MIS provider, and a sandbox with a connector pointed at it."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from portal_example.connector import CATEGORY_SCOPES, ExampleConnector
from portal_example.sandbox import ExampleSandbox

from portal.sandbox import synthetic
from portal.testing.conformance import ConformanceProvider, Served, kit_database, kit_database_url  # noqa: F401


def pytest_addoption(parser):
    # The portal's --backend option; whichever conftest loads first adds it.
    try:
        parser.addoption("--backend", action="append", choices=["sqlite", "postgresql"],
                         help="run database tests on this backend only (repeatable); default: both")
    except ValueError:
        pass


# The first read of each category (where a refusal is injected).
MAIN_READS = {"student_basic": "pupils", "student_demographics": "census", "student_timetable": "subjects",
              "student_assessment": "results", "student_attendance_exclusions": "attendance", "staff_basic": "staff"}


class ExampleServed(Served):
    """A synthetic school served by a running Example sandbox, with quick retries and a short read timeout."""

    def __init__(self, sandbox: ExampleSandbox) -> None:
        self.sandbox = sandbox
        self.school_id = sandbox.school_id()
        self.settings = {**sandbox.settings, "backoff_base": 0.01, "read_timeout": 0.3, "max_retries": 3}
        self.connection_settings = {}

    def synthetic_key(self, provider_id: str) -> str | None:
        return self.sandbox.synthetic_key(provider_id)

    def inject(self, fault: str, *, times: int = 1, skip: int = 0) -> None:
        self.sandbox.add_fault(kind=fault, match=f"/schools/{self.school_id}/", times=times, skip=skip)

    def request_count(self) -> int:
        return self.sandbox.count()

    def refuse(self, category: str) -> None:
        self.sandbox.add_fault(kind="forbidden", match=f"/schools/{self.school_id}/{MAIN_READS[category]}", times=None)

    def withdraw(self, category: str) -> None:
        self.sandbox.withhold(self.school_id, CATEGORY_SCOPES[category])

    def grant(self, category: str) -> None:
        self.sandbox.grant(self.school_id, CATEGORY_SCOPES[category])

    def drop_secondary(self) -> str | None:
        self.sandbox.missing.add("leavers")
        return "student_basic"


class ExampleProvider(ConformanceProvider):
    name = "example"
    plugin = "portal_example.plugin"

    @contextlib.contextmanager
    def serve(self, school: synthetic.SyntheticSchool) -> Iterator[ExampleServed]:
        with ExampleSandbox([school]) as sandbox:
            yield ExampleServed(sandbox)


@pytest.fixture
def provider() -> ExampleProvider:
    """The Example MIS side of the conformance kit."""
    return ExampleProvider()


@pytest.fixture
def school() -> synthetic.SyntheticSchool:
    return synthetic.generate_school(5, pupils=40, days=8, phase="secondary", urn="123457")


@pytest.fixture
def sandbox(school) -> Iterator[ExampleSandbox]:
    with ExampleSandbox([school]) as running:
        yield running


@pytest.fixture
def connector(sandbox) -> Iterator[ExampleConnector]:
    built = ExampleConnector({**sandbox.settings, "backoff_base": 0.001, "page_size": 25})
    yield built
    built.client.close()
