"""The plugin contract: strict loading, installed is not enabled, entry points, and one test per hook."""
from __future__ import annotations

import importlib
import logging
import sys
import textwrap
import uuid
from datetime import datetime, timezone
from importlib.metadata import entry_points

import pytest

from portal.errors import StartupError
from portal.plugins.manager import get_plugins
from tests.test_docs import hook_functions

AT = datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """Write a one-off plugin module for one test and return its import name."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    names: list[str] = []

    def write(source: str) -> str:
        name = f"tmp_portal_plugin_{uuid.uuid4().hex[:8]}"
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def with_plugin(name: str) -> dict:
    """Return configuration that loads the fake connector and one more plugin module."""
    return {"PLUGINS": ["tests.plugins.fake_connector", name]}


def test_every_hook_has_a_test():
    tests = [name for name in globals() if name.startswith("test_hook_")]
    missing = [hook for hook in hook_functions() if not any(t.startswith(f"test_hook_{hook}") for t in tests)]
    assert missing == []


# ---------------------------------------------------------------- loading is strict


def test_duplicate_connector_names_stop_start_up(make_app, plugin_module):
    name = plugin_module(
        """
        from portal.plugins import hookimpl
        from tests.plugins.fake_connector import FakeConnector

        class OtherFake(FakeConnector):
            name = "fake"

        @hookimpl
        def portal_register_connectors():
            return [OtherFake]
        """
    )
    with pytest.raises(StartupError, match="two plugins provide a connector named 'fake'"):
        make_app(**with_plugin(name))


def test_unknown_hooks_stop_start_up(make_app, plugin_module):
    name = plugin_module(
        """
        from portal.plugins import hookimpl

        @hookimpl
        def portal_not_a_hook():
            return []
        """
    )
    with pytest.raises(StartupError, match="implements a hook the portal does not define.*portal_not_a_hook"):
        make_app(**with_plugin(name))


def test_hook_arguments_the_spec_does_not_have_stop_start_up(make_app, plugin_module):
    name = plugin_module(
        """
        from portal.plugins import hookimpl

        @hookimpl
        def portal_startup(app, flavour):
            pass
        """
    )
    with pytest.raises(StartupError, match=f"plugin '{name}' does not match the plugin API"):
        make_app(**with_plugin(name))


def test_unimportable_plugins_stop_start_up(make_app):
    with pytest.raises(StartupError, match="plugin 'no_such_plugin' named in PORTAL_PLUGINS cannot be imported"):
        make_app(PLUGINS=["no_such_plugin"])


def test_blocked_plugins_are_not_loaded(make_app):
    app = make_app(PLUGINS_BLOCKED=["tests.plugins.fake_connector"])
    assert "fake" not in get_plugins(app).installed_connectors()
    described = {p["name"]: p for p in get_plugins(app).describe()}
    assert described["tests.plugins.fake_connector"]["blocked"] is True
    result = app.test_cli_runner().invoke(args=["portal", "plugins"])
    assert "tests.plugins.fake_connector: blocked" in result.output


def test_installed_connectors_are_used_only_when_enabled(make_app):
    plugins = get_plugins(make_app(ENABLED_CONNECTORS=[]))
    assert "fake" in plugins.installed_connectors()
    assert plugins.connectors() == {}
    with pytest.raises(KeyError):
        plugins.connector("fake")


def test_installed_distributions_are_found_through_the_portal_entry_point_group(make_app, tmp_path, monkeypatch):
    site = tmp_path / "site"
    dist = site / "portal_epfake-0.3.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: portal-epfake\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text("[portal]\nepfake = portal_epfake_plugin\n")
    (site / "portal_epfake_plugin.py").write_text(
        textwrap.dedent(
            """
            from portal.plugins import hookimpl
            from tests.plugins.fake_connector import FakeConnector

            class EpFake(FakeConnector):
                name = "epfake"
                title = "Entry-point fake"

            @hookimpl
            def portal_register_connectors():
                return [EpFake]
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.delitem(sys.modules, "portal_epfake_plugin", raising=False)
    # Only this distribution: the connector packages installed in the environment have tests of their own.
    others = [ep.name for ep in entry_points(group="portal") if ep.name != "epfake"]
    config = {"PLUGINS_LOAD_ENTRYPOINTS": True, "ENABLED_CONNECTORS": ["fake", "epfake"], "PLUGINS_BLOCKED": others}

    plugins = get_plugins(make_app(**config))
    assert plugins.connector("epfake").title == "Entry-point fake"
    described = {p["name"]: p for p in plugins.describe()}
    assert described["epfake"]["version"] == "0.3"
    assert described["epfake"]["hooks"] == ["portal_register_connectors"]

    blocked = get_plugins(make_app(**{**config, "PLUGINS_BLOCKED": [*others, "epfake"]}))
    assert "epfake" not in blocked.installed_connectors()
    sys.modules.pop("portal_epfake_plugin", None)


def test_plugins_command_lists_plugins_and_connectors(make_app):
    result = make_app(ENABLED_CONNECTORS=[]).test_cli_runner().invoke(args=["portal", "plugins"])
    assert result.exit_code == 0, result.output
    assert "tests.plugins.fake_connector: portal_register_connectors" in result.output
    assert "connector fake: installed, not enabled" in result.output


def test_tracing_logs_hook_calls(make_app, caplog):
    caplog.set_level(logging.INFO, logger="portal.plugins.manager")
    make_app(TRACE_PLUGINS=True)
    assert "hook portal_register_connectors ->" in caplog.text


# ---------------------------------------------------------------- one test per hook


def test_hook_portal_register_connectors_provides_the_fake_connector(app):
    cls = get_plugins(app).connector("fake")
    assert cls.name == "fake" and cls.title == "Fake MIS"
    assert "tests.plugins.fake_connector" in {p["name"] for p in get_plugins(app).describe()}


def test_hook_portal_register_jobs_adds_runnable_jobs_and_refuses_duplicate_ids(make_app, plugin_module):
    from portal.jobs.scheduler import fire_job, job_specs
    from portal.models import RunStatus

    # ticking_jobs implements the hook with only the ``app`` argument (opt-in arguments).
    app = make_app(PLUGINS=["tests.plugins.fake_connector", "tests.plugins.ticking_jobs"])
    assert {"test:tick", "test:once"} <= set(job_specs(app))
    with app.app_context():
        assert fire_job("test:tick", AT).status == RunStatus.succeeded

    name = plugin_module(
        """
        from portal.jobs import JobSpec
        from portal.plugins import hookimpl

        @hookimpl
        def portal_register_jobs():
            return [JobSpec("retention:sweep", print, "cron", {"hour": 3})]
        """
    )
    with pytest.raises(StartupError, match="two plugins declare a job with id 'retention:sweep'"):
        make_app(**with_plugin(name))


def test_hook_portal_admin_views_adds_secured_pages_only(make_app, plugin_module, make):
    from portal.extensions import db
    from tests.conftest import Auth

    name = plugin_module(
        """
        from flask_admin import expose
        from portal.admin.views import SecureBaseView
        from portal.plugins import hookimpl

        class PluginPage(SecureBaseView):
            @expose("/")
            def index(self):
                return "plugin page"

        @hookimpl
        def portal_admin_views(app):
            return [PluginPage(name="Plugin page", endpoint="pluginpage")]
        """
    )
    app = make_app(**with_plugin(name))
    client = app.test_client()
    with app.app_context():
        assert client.get("/admin/pluginpage/").status_code == 302  # to the sign-in page
        staff = make.user(support=True)
        db.session.commit()
        Auth(client).login(staff)
        page = client.get("/admin/pluginpage/")
        assert page.status_code == 200 and page.data == b"plugin page"

    unsecured = plugin_module(
        """
        from flask_admin import BaseView, expose
        from portal.plugins import hookimpl

        class OpenPage(BaseView):
            @expose("/")
            def index(self):
                return "open"

        @hookimpl
        def portal_admin_views():
            return [OpenPage(name="Open", endpoint="openpage")]
        """
    )
    with pytest.raises(StartupError, match="admin view OpenPage .* must subclass"):
        make_app(**with_plugin(unsecured))


def test_hook_portal_startup_can_refuse_to_start(make_app, plugin_module):
    source = """
        from portal.errors import StartupError
        from portal.plugins import hookimpl

        @hookimpl
        def portal_startup(app):
            if not app.config["CONNECTORS"].get("example", {}).get("token"):
                raise StartupError("setting PORTAL_CONNECTORS__example__token is missing")
        """
    name = plugin_module(source)
    with pytest.raises(StartupError, match="PORTAL_CONNECTORS__example__token is missing"):
        make_app(**with_plugin(name))
    app = make_app(**with_plugin(name), CONNECTORS={"example": {"token": "t"}})
    assert name in {p["name"] for p in get_plugins(app).describe()}


def test_hook_portal_extract_finished_is_told_and_cannot_fail_the_run(make_app, plugin_module, make, caplog):
    from portal.extensions import db
    from portal.jobs.scheduler import fire_job
    from portal.models import Connection, ConnectionState

    recorder = plugin_module(
        """
        from portal.plugins import hookimpl

        SEEN = []

        @hookimpl
        def portal_extract_finished(run):
            SEEN.append((run.id, run.status.value))
        """
    )
    broken = plugin_module(
        """
        from portal.plugins import hookimpl

        @hookimpl
        def portal_extract_finished():
            raise RuntimeError("boom")
        """
    )
    app = make_app(PLUGINS=["tests.plugins.fake_connector", recorder, broken])
    with app.app_context():
        conn = Connection(school_id=make.school().id, connector="fake", state=ConnectionState.approved)
        db.session.add(conn)
        db.session.commit()
        fire_job("jobs:refresh", AT)
        run = fire_job(f"extract:{conn.id}", AT)
        # The engine calls the hook once, after the run is finished; the broken plugin changes nothing.
        assert sys.modules[recorder].SEEN == [(run.id, run.status.value)]
        assert run.finished_at is not None
        assert f"plugin {broken} failed in portal_extract_finished for run {run.id}" in caplog.text


# ------------------------------------------------------------------ the connector contract: settings, discovery


def test_connector_settings_are_typed_at_start_up_and_secrets_are_masked(make_app):
    app = make_app(CONNECTORS={"fake": {"revoked": "false", "api_key": "key-that-must-not-show"}})
    assert app.config["CONNECTORS"]["fake"] == {"revoked": False, "api_key": "key-that-must-not-show"}
    output = app.test_cli_runner().invoke(args=["portal", "plugins"]).output
    assert "revoked=False" in output and "api_key=••••••" in output and "key-that-must-not-show" not in output
    with app.app_context():
        from portal.plugins.manager import get_plugins

        # Each instance gets every declared setting, typed, with its default.
        assert get_plugins().connector("fake")({"revoked": "yes"}).settings == {"revoked": True, "api_key": None}


@pytest.mark.parametrize(("settings", "message"), [
    ({"revokd": True}, "connector fake: setting PORTAL_CONNECTORS__fake__revokd is not one of its settings"),
    ({"revoked": "perhaps-secret"}, "connector fake: setting PORTAL_CONNECTORS__fake__revoked is invalid: it must be true or false"),
    ({"api_key": ["secret-in-a-list"]}, "connector fake: setting PORTAL_CONNECTORS__fake__api_key is invalid: it must be text"),
])
def test_start_up_refuses_bad_connector_settings_naming_the_key_never_the_value(make_app, settings, message):
    with pytest.raises(StartupError) as refused:
        make_app(CONNECTORS={"fake": settings})
    assert str(refused.value.message).startswith(message)
    assert "secret" not in refused.value.message.replace(message, "")


def test_a_required_deployment_setting_must_be_set(make_app, monkeypatch):
    from portal.connectors import Setting
    from tests.plugins.fake_connector import FakeConnector

    monkeypatch.setattr(FakeConnector, "settings_schema", {**FakeConnector.settings_schema, "tenant": Setting(str, required=True)})
    with pytest.raises(StartupError, match="connector fake: setting PORTAL_CONNECTORS__fake__tenant is missing"):
        make_app()
    assert make_app(CONNECTORS={"fake": {"tenant": "t1"}})


def test_every_installed_connector_is_enabled_by_default(make_app):
    plugins = get_plugins(make_app(ENABLED_CONNECTORS=["*"]))
    assert set(plugins.connectors()) == {"fake"}


def test_discovery_finds_installed_connector_sandboxes_and_tests_without_an_app():
    from pathlib import Path

    from portal.connectors import Sandbox
    from portal.plugins import discover
    from tests.plugins.fake_connector import FakeConnector

    class Served(FakeConnector):
        name = "served"
        sandbox = Sandbox(serve=lambda **options: None, dev_port=8799)

    class Api(FakeConnector):
        name = "api"
        sandbox = Sandbox(serve=lambda **options: None, dev_port=8798, settings_for=lambda url: {"base_url": f"{url}/v2"})

    connectors = {"served": Served, "api": Api, "fake": FakeConnector}
    assert discover.sandbox_ports(connectors) == {"api": 8798, "served": 8799}
    env = discover.sandbox_environment(connectors, {"PORTAL_CONNECTORS__served__base_url": "https://set.example"})
    assert env == {"PORTAL_CONNECTORS__api__base_url": "http://127.0.0.1:8798/v2",
                   "PORTAL_CONNECTORS__served__allow_insecure_http": "true"}
    # Whatever connector packages this environment has installed: each one's tests folder, beside its package.
    installed = discover.installed_connectors()
    folders = discover.connector_test_folders(installed)
    assert all(Path(folder).is_dir() and Path(folder).name == "tests" for folder in folders)
    assert discover.main(["nonsense"]) == 2
