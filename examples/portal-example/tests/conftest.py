"""Fixtures: a sandbox over a small synthetic school and a connector pointed at it.

The databases, apps and the conformance kit come from the portal's pytest plugin (portal.testing.plugin);
the kit's provider is portal_example.testing.ExampleProvider.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from portal_example.connector import ExampleConnector
from portal_example.sandbox import ExampleSandbox
from portal_example.testing import ExampleProvider

from portal.sandbox import synthetic


@pytest.fixture
def provider() -> ExampleProvider:
    """The Example MIS side of the conformance kit."""
    return ExampleProvider()


@pytest.fixture
def app_config() -> dict:
    """Every portal app of these tests loads this package's plugin and enables only its connector."""
    return {"PLUGINS": ["portal_example.plugin"], "ENABLED_CONNECTORS": ["example"], "CONNECTORS": {}}


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
