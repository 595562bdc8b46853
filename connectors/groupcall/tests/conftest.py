"""Fixtures for portal-groupcall's tests: the sandbox, a connector on it, and portal apps with the Groupcall plugin.

The databases, ``make_app`` and the conformance kit come from the portal's pytest plugin (portal.testing.plugin).
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from portal.sandbox import synthetic
from portal.testing.conformance import school_window
from portal_groupcall.client import TOKENS
from portal_groupcall.connector import GroupcallConnector
from portal_groupcall.sandbox import RELYING_PARTY, GroupcallSandbox
from portal_groupcall.testing import GroupcallProvider


@pytest.fixture
def provider() -> GroupcallProvider:
    """The Groupcall side of the conformance kit."""
    return GroupcallProvider()


@pytest.fixture
def app_config() -> dict:
    """Every portal app of these tests loads the Groupcall plugin."""
    return {"PLUGINS": ["portal_groupcall.plugin"], "ENABLED_CONNECTORS": ["groupcall"]}


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
def gc_app(make_app, sandbox):
    """A portal app with the Groupcall connector enabled against the sandbox, app context pushed."""
    app = make_app(CONNECTORS={"groupcall": {"base_url": sandbox.url, "relying_party": RELYING_PARTY,
                                             "allow_insecure_http": True, "callback_secret": "callback-key-for-tests",
                                             "retry_backoff": 0}})
    with app.app_context():
        yield app
