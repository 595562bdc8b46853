"""Fixtures: a running Wonde sandbox over a small synthetic school, and a connector pointed at it.

The databases, apps and the conformance kit come from the portal's pytest plugin (portal.testing.plugin).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from portal_wonde.connector import WondeConnector
from portal_wonde.sandbox import WondeSandbox
from portal_wonde.testing import WondeProvider

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


@pytest.fixture
def provider():
    """The Wonde side of the conformance kit (portal_wonde.testing)."""
    return WondeProvider()
