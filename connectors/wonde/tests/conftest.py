"""Fixtures: a running Wonde sandbox over a small synthetic school, and a connector pointed at it.

The databases, apps and the conformance kit come from the portal's pytest plugin (portal.testing.plugin).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from portal_wonde.connector import WondeConnector
from portal_wonde.sandbox import WondeSandbox
from portal_wonde.testing import WondeProvider, WondeServed

from portal.sandbox import synthetic
from portal.sandbox.synthetic import generate_school
from portal.testing.conformance import Kit, connect_synthetic_school


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


@pytest.fixture
def provider():
    """The Wonde side of the conformance kit (portal_wonde.testing)."""
    return WondeProvider()

# Quick retries and short waits: the tests assert what the client did, not how long it waited.
FAST = {"backoff_base": 0.01, "backoff_cap": 0.02, "retry_after_cap": 0.02, "max_retries": 3}


class _Served(WondeServed):
    """The conformance kit's Wonde school with the default read timeout (FAST retries only)."""

    def __init__(self, sandbox: WondeSandbox) -> None:
        super().__init__(sandbox)
        self.settings = {**sandbox.settings, **FAST}


@pytest.fixture
def wonde(make_app):
    """A 36-pupil synthetic school served by a running Wonde sandbox, an app, and an approved connection (a Kit)."""
    school = synthetic.generate_school(11, pupils=36, days=12, phase="secondary", sixth_form=False)
    with WondeSandbox([school]) as sandbox:
        served = _Served(sandbox)
        app = make_app(PLUGINS=["portal_wonde.plugin"], ENABLED_CONNECTORS=["wonde"],
                       CONNECTORS={"wonde": served.settings}, EXTRACT_BATCH_SIZE=200)
        with app.app_context():
            yield Kit(None, school, served, app, connect_synthetic_school(school, "wonde", {}))
