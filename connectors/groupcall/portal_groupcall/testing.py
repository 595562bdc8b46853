"""The Groupcall side of the portal's conformance kit (tests only: loaded through the ``portal.testing`` entry point)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from portal.sandbox.synthetic import SyntheticSchool
from portal.testing.conformance import ConformanceProvider, Served, school_window
from portal_groupcall.client import TOKENS
from portal_groupcall.connector import CATEGORY_SCOPES
from portal_groupcall.sandbox import DEFAULT_SCOPES, RELYING_PARTY, GroupcallSandbox

# The kit's fault names -> this sandbox's.
FAULTS = {"server_error": "http_503", "rate_limited": "http_429", "malformed": "malformed_json", "timeout": "drop",
          "revoke": "revoke"}
# The first paged read of each category.
MAIN_READS = {"student_basic": "/Students", "student_demographics": "/Students", "student_timetable": "/Groups",
              "student_assessment": "/assessmentresults", "student_attendance_exclusions": "/AttendanceForDateRange",
              "staff_basic": "/Staff"}


class GroupcallServed(Served):
    main_reads = MAIN_READS

    def __init__(self, sandbox: GroupcallSandbox, school: SyntheticSchool, secret: str) -> None:
        self.sandbox = sandbox
        self.estab = school.dfe_number
        self.settings = {
            "base_url": sandbox.url,
            "relying_party": RELYING_PARTY,
            "allow_insecure_http": True,  # the sandbox speaks plain http on 127.0.0.1 (tests only, R61)
            "page_size": 100,
            "date_from": school_window(school)[0].isoformat(),
            "date_to": school_window(school)[1].isoformat(),
            "retry_backoff": 0,
        }
        self.connection_settings = {"school_secret": secret}

    def synthetic_key(self, provider_id: str) -> str | None:
        return self.sandbox.id_maps[self.estab].get(provider_id)

    def inject(self, fault: str, *, times: int = 1, skip: int = 0) -> None:
        self.sandbox.add_fault(FAULTS[fault], "/api/v1/School/", times=times, skip=skip)

    def refuse(self, category: str) -> None:
        # The scope-refused envelope ("Scope not authorised") with HTTP 403, the scope still granted.
        self.sandbox.add_fault("http_403", MAIN_READS[category], times=100_000)

    def withdraw(self, category: str) -> None:
        school = self.sandbox.schools[self.estab]
        self.sandbox.set_scopes(self.estab, school.scopes - set(CATEGORY_SCOPES[category]))

    def grant(self, category: str) -> None:
        school = self.sandbox.schools[self.estab]
        self.sandbox.set_scopes(self.estab, school.scopes | (set(CATEGORY_SCOPES[category]) & set(DEFAULT_SCOPES)))

    def drop_secondary(self) -> str | None:
        self.sandbox.add_fault("http_404", "/SEN", times=100_000)
        return "student_demographics"


class GroupcallProvider(ConformanceProvider):
    name = "groupcall"
    plugin = "portal_groupcall.plugin"

    @contextlib.contextmanager
    def serve(self, school: SyntheticSchool) -> Iterator[GroupcallServed]:
        TOKENS.clear()
        with GroupcallSandbox() as sandbox:
            served = sandbox.load_synthetic(school.dfe_number, school)
            yield GroupcallServed(sandbox, school, served.secret)
