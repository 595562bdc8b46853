"""The portal's pytest plugin (entry point ``pytest11: portal``): app, database and conformance-kit fixtures.

Installed with the portal (``pip install mis-portal[testing]`` brings pytest and the PostgreSQL
driver), it gives the portal's own tests and every connector package's tests the same fixtures:

- ``backend``: each database test runs on SQLite and on PostgreSQL (``PORTAL_TEST_POSTGRES_URL``);
  ``--backend sqlite`` / ``--backend postgresql`` picks one; ``@pytest.mark.one_backend("postgresql")``
  runs a test that is not about the database on one only.
- ``database_url``: a database migrated once per session, reset to its reference rows per test.
- ``make_app`` / ``app`` / ``client``: portal apps on it; a package sets its plugin and connector by
  overriding ``app_config`` (a dict of configuration every app of the test starts from).
- ``kit``: the conformance kit's world for the package's ``provider`` fixture (portal.testing.conformance).
- ``mis_provider``: a conformance provider of an installed connector package (entry point group
  ``portal.testing``), for core tests that need a real provider over HTTP but not a particular one.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest

pytest.register_assert_rewrite("portal.testing.conformance")

from portal.testing import databases  # noqa: E402 (after the assertion-rewrite registration)
from portal.testing import conformance  # noqa: E402
from portal.testing.conformance import ConformanceProvider, kit  # noqa: E402,F401 (kit is a fixture)

BACKENDS = ("sqlite", "postgresql")
#: Connector packages name their ConformanceProvider under this entry point group.
PROVIDER_GROUP = "portal.testing"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("portal", "the MIS connection portal")
    group.addoption("--backend", action="append", choices=BACKENDS,
                    help="run database tests on this backend only (repeatable); default: both")
    group.addoption("--connector", default=None,
                    help="the installed connector whose sandbox core tests use (mis_provider); default: the first by name")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "one_backend(preferred): a test of pages or input handling, not of databases: it runs on one "
        "backend only, the preferred one if chosen, else the first chosen")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--backend") or list(BACKENDS)
        one = metafunc.definition.get_closest_marker("one_backend")
        if one is not None:
            preferred = [b for b in one.args if b in chosen]
            chosen = preferred[:1] or chosen[:1]
        metafunc.parametrize("backend", chosen, scope="session")


@pytest.fixture(autouse=True)
def _clean_portal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the machine's PORTAL_* variables out of tests."""
    for key in list(os.environ):
        if key.startswith("PORTAL_") and not key.startswith("PORTAL_TEST_"):
            monkeypatch.delenv(key)


# ---------------------------------------------------------------- databases and apps


@pytest.fixture(scope="session")
def migrated_database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A database migrated to head once per session, with the reference rows the migrations seed."""
    yield from databases.migrated_database(backend, tmp_path_factory)


@pytest.fixture
def database_url(migrated_database: dict, tmp_path) -> str:
    """The URL of an empty (reference rows only) database for this test."""
    return databases.fresh_database_url(migrated_database, tmp_path)


@pytest.fixture
def app_config() -> dict:
    """Configuration every app of the test starts from (a connector package names its plugin here)."""
    return {}


@pytest.fixture
def make_app(database_url: str, app_config: dict, tmp_path):
    """Build apps on this test's database with extra configuration."""
    from portal import create_app
    from portal.extensions import db

    apps = []

    def build(**overrides):
        app = create_app(databases.base_config(database_url, **{**app_config, **overrides}))
        app.instance_path = str(tmp_path / "instance")
        apps.append(app)
        return app

    yield build
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def app(make_app):
    """The portal app on this test's database, with an app context pushed."""
    app = make_app()
    with app.app_context():
        yield app


@pytest.fixture
def client(app):
    """A test client of the app."""
    return app.test_client()


# ---------------------------------------------------------------- installed connectors' sandboxes


def installed_providers() -> dict[str, type[ConformanceProvider]]:
    """The conformance providers installed connector packages declare (entry point group ``portal.testing``)."""
    return {ep.name: ep.load() for ep in sorted(entry_points(group=PROVIDER_GROUP), key=lambda ep: ep.name)}


@pytest.fixture
def mis_provider(request: pytest.FixtureRequest) -> ConformanceProvider:
    """A real provider's sandbox for core tests: the ``--connector`` one, else the first installed by name."""
    providers = installed_providers()
    if not providers:
        pytest.skip("no connector package with a conformance provider is installed")
    name = request.config.getoption("--connector") or next(iter(providers))
    if name not in providers:
        raise pytest.UsageError(f"--connector {name}: installed are {', '.join(providers)}")
    return providers[name]()


@pytest.fixture
def serve_school(mis_provider: ConformanceProvider, make_app):
    """``with serve_school(school, **config) as s``: the school served by ``mis_provider``'s sandbox, connected in an app."""

    def serving(school, **config):
        return conformance.serve_school(mis_provider, school, make_app, **config)

    return serving
