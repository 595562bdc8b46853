"""The Wonde side of the portal's conformance kit (tests only: loaded through the ``portal.testing`` entry point)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from portal.sandbox.synthetic import SyntheticSchool
from portal.testing.conformance import ConformanceProvider, Served
from portal_wonde.sandbox import WondeSandbox

# Each kit fault type as a sandbox fault on the school's data endpoints.
KIT_FAULTS = {
    "server_error": {"status": 503},
    "rate_limited": {"status": 429, "retry_after": "0"},
    "malformed": {"body": "invalid_json"},
    "timeout": {"delay": 0.6},
    "revoke": {"action": "revoke"},
}
# The first read of each category, and the Wonde permissions (sandbox resources) it needs.
MAIN_READS = {"student_basic": "/students", "student_demographics": "/students", "student_timetable": "/subjects",
              "student_assessment": "/assessment/results", "student_attendance_exclusions": "/attendance/session",
              "staff_basic": "/employees"}
PERMISSIONS = {"student_basic": ("students",), "student_demographics": ("students",),
               "student_timetable": ("subjects", "classes", "groups", "lessons"), "student_assessment": ("assessment",),
               "student_attendance_exclusions": ("attendance", "exclusions"), "staff_basic": ("employees",)}


class WondeServed(Served):
    """A synthetic school served by a running Wonde sandbox, with quick retries and a short read timeout."""

    main_reads = MAIN_READS

    def __init__(self, sandbox: WondeSandbox) -> None:
        self.sandbox = sandbox
        self.settings = {**sandbox.settings, "backoff_base": 0.01, "backoff_cap": 0.02, "retry_after_cap": 0.02,
                         "read_timeout": 0.3, "max_retries": 3}
        self.connection_settings = {}

    def synthetic_key(self, provider_id: str) -> str | None:
        return self.sandbox.synthetic_key(provider_id)

    def inject(self, fault: str, *, times: int = 1, skip: int = 0) -> None:
        self.sandbox.add_fault(match=f"/schools/{self.sandbox.school_id()}/", times=times, skip=skip, **KIT_FAULTS[fault])

    def refuse(self, category: str) -> None:
        self.sandbox.add_fault(match=f"/schools/{self.sandbox.school_id()}{MAIN_READS[category]}", status=403, times=None)

    def withdraw(self, category: str) -> None:
        self.sandbox.withhold(self.sandbox.school_id(), *PERMISSIONS[category])

    def grant(self, category: str) -> None:
        self.sandbox.grant(self.sandbox.school_id(), *PERMISSIONS[category])

    def drop_secondary(self) -> str | None:
        self.sandbox.missing.add("students-leaver")
        return "student_basic"


class WondeProvider(ConformanceProvider):
    name = "wonde"
    plugin = "portal_wonde.plugin"

    @contextlib.contextmanager
    def serve(self, school: SyntheticSchool) -> Iterator[WondeServed]:
        with WondeSandbox([school]) as sandbox:
            yield WondeServed(sandbox)
