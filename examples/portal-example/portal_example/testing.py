"""The Example MIS side of the portal's conformance kit (tests only: loaded through the ``portal.testing`` entry point)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from portal.sandbox.synthetic import SyntheticSchool
from portal.testing.conformance import ConformanceProvider, Served
from portal_example.connector import CATEGORY_SCOPES
from portal_example.sandbox import ExampleSandbox

# The first read of each category (what the kit counts, and where a refusal is injected).
MAIN_READS = {"student_basic": "/pupils", "student_demographics": "/census", "student_timetable": "/subjects",
              "student_assessment": "/results", "student_attendance_exclusions": "/attendance", "staff_basic": "/staff"}


class ExampleServed(Served):
    """A synthetic school served by a running Example sandbox, with quick retries and a short read timeout."""

    main_reads = MAIN_READS

    def __init__(self, sandbox: ExampleSandbox) -> None:
        self.sandbox = sandbox
        self.school_id = sandbox.school_id()
        self.settings = {**sandbox.settings, "backoff_base": 0.01, "read_timeout": 0.3, "max_retries": 3}
        self.connection_settings = {}

    def synthetic_key(self, provider_id: str) -> str | None:
        return self.sandbox.synthetic_key(provider_id)

    def inject(self, fault: str, *, times: int = 1, skip: int = 0) -> None:
        self.sandbox.add_fault(kind=fault, match=f"/schools/{self.school_id}/", times=times, skip=skip)

    def refuse(self, category: str) -> None:
        self.sandbox.add_fault(kind="forbidden", match=f"/schools/{self.school_id}{MAIN_READS[category]}", times=None)

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
    def serve(self, school: SyntheticSchool) -> Iterator[ExampleServed]:
        with ExampleSandbox([school]) as sandbox:
            yield ExampleServed(sandbox)
