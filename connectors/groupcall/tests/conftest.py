"""Fixtures for portal-groupcall's tests: the sandbox, the conformance kit's provider, and a portal app."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from portal.sandbox import synthetic
from portal.testing.conformance import (  # noqa: F401 (kit_* are fixtures)
    ConformanceProvider,
    Served,
    kit_database,
    kit_database_url,
    school_window,
)
from portal.testing.databases import base_config
from portal_groupcall.client import TOKENS
from portal_groupcall.connector import CATEGORY_SCOPES, GroupcallConnector
from portal_groupcall.sandbox import DEFAULT_SCOPES, RELYING_PARTY, GroupcallSandbox

def pytest_addoption(parser):
    # The same --backend option as the portal's tests; whichever conftest loads first adds it.
    try:
        parser.addoption("--backend", action="append", choices=["sqlite", "postgresql"],
                         help="run database tests on this backend only (repeatable); default: both")
    except ValueError:
        pass


# The kit's fault names -> this sandbox's.
FAULTS = {"server_error": "http_503", "rate_limited": "http_429", "malformed": "malformed_json", "timeout": "drop",
          "revoke": "revoke"}


class GroupcallServed(Served):
    def __init__(self, sandbox: GroupcallSandbox, school: synthetic.SyntheticSchool, secret: str) -> None:
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

    def request_count(self) -> int:
        return self.sandbox.count()

    def refuse(self, category: str) -> None:
        # The scope-refused envelope ("Scope not authorised") with HTTP 403, the scope still granted.
        self.sandbox.add_fault("http_403", f"/{MAIN_READS[category]}", times=100_000)

    def withdraw(self, category: str) -> None:
        school = self.sandbox.schools[self.estab]
        self.sandbox.set_scopes(self.estab, school.scopes - set(CATEGORY_SCOPES[category]))

    def grant(self, category: str) -> None:
        school = self.sandbox.schools[self.estab]
        self.sandbox.set_scopes(self.estab, school.scopes | (set(CATEGORY_SCOPES[category]) & set(DEFAULT_SCOPES)))

    def drop_secondary(self) -> str | None:
        self.sandbox.add_fault("http_404", "/SEN", times=100_000)
        return "student_demographics"


# The first paged read of each category.
MAIN_READS = {"student_basic": "Students", "student_demographics": "Students", "student_timetable": "Groups",
              "student_assessment": "assessmentresults", "student_attendance_exclusions": "AttendanceForDateRange",
              "staff_basic": "Staff"}


class GroupcallProvider(ConformanceProvider):
    name = "groupcall"
    plugin = "portal_groupcall.plugin"

    @contextlib.contextmanager
    def serve(self, school: synthetic.SyntheticSchool) -> Iterator[GroupcallServed]:
        TOKENS.clear()
        with GroupcallSandbox() as sandbox:
            served = sandbox.load_synthetic(school.dfe_number, school)
            yield GroupcallServed(sandbox, school, served.secret)


@pytest.fixture
def provider() -> GroupcallProvider:
    return GroupcallProvider()


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Tokens are per process; each test starts without any (change tokens live in the database)."""
    TOKENS.clear()
    yield
    TOKENS.clear()


@pytest.fixture
def school() -> synthetic.SyntheticSchool:
    return synthetic.generate_school(5, pupils=30, days=8, phase="secondary", sixth_form=False)


@pytest.fixture
def sandbox(school) -> Iterator[GroupcallSandbox]:
    with GroupcallSandbox() as box:
        box.load_synthetic(school.dfe_number, school)
        yield box


@pytest.fixture
def settings(sandbox, school) -> dict:
    """Connector settings for the sandbox school (merged deployment + connection settings)."""
    return {
        "base_url": sandbox.url,
        "relying_party": RELYING_PARTY,
        "school_secret": sandbox.schools[school.dfe_number].secret,
        "estab": school.dfe_number,
        "allow_insecure_http": True,
        "page_size": 10,
        "date_from": school_window(school)[0].isoformat(),
        "date_to": school_window(school)[1].isoformat(),
        "retry_backoff": 0,
    }


@pytest.fixture
def connector(settings) -> GroupcallConnector:
    return GroupcallConnector(settings)


@pytest.fixture
def make_kit_app(kit_database_url):
    """Build portal apps on this test's database with the Groupcall plugin loaded."""
    from portal import create_app
    from portal.extensions import db

    apps = []

    def build(**overrides):
        config = {"PLUGINS": ["portal_groupcall.plugin"], "ENABLED_CONNECTORS": ["groupcall"], **overrides}
        app = create_app(base_config(kit_database_url, **config))
        apps.append(app)
        return app

    yield build
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def gc_app(kit_database_url, sandbox):
    """A portal app with the Groupcall connector enabled against the sandbox, app context pushed."""
    from portal import create_app
    from portal.extensions import db

    app = create_app(base_config(
        kit_database_url,
        PLUGINS=["portal_groupcall.plugin"],
        ENABLED_CONNECTORS=["groupcall"],
        CONNECTORS={"groupcall": {"base_url": sandbox.url, "relying_party": RELYING_PARTY,
                                  "allow_insecure_http": True, "callback_secret": "callback-key-for-tests",
                                  "retry_backoff": 0}},
    ))
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()
