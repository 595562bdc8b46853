"""The installed package is found through the `portal` entry point, and the sandbox command dispatches to it."""
from __future__ import annotations

import importlib.metadata

from portal.testing.databases import base_config


def test_entry_point_is_declared():
    entry_points = importlib.metadata.entry_points(group="portal")
    assert "portal_wonde.plugin" in {ep.value for ep in entry_points if ep.name == "wonde"}


def test_create_app_discovers_the_wonde_connector(tmp_path):
    from portal_wonde.connector import WondeConnector

    from portal import create_app
    from portal.plugins.manager import get_plugins

    app = create_app(base_config(f"sqlite:///{tmp_path / 'portal.sqlite3'}", PLUGINS_LOAD_ENTRYPOINTS=True,
                                 ENABLED_CONNECTORS=["wonde"], PLUGINS=[]))
    plugins = get_plugins(app)
    assert plugins.connector("wonde") is WondeConnector
    assert "token" in WondeConnector.secret_settings()


def test_sandbox_command_refuses_an_unknown_connector(tmp_path):
    from portal import create_app

    app = create_app(base_config(f"sqlite:///{tmp_path / 'portal.sqlite3'}"))
    result = app.test_cli_runner().invoke(args=["portal", "sandbox", "nosuch"])
    assert result.exit_code != 0 and "no sandbox for connector 'nosuch'" in result.output


def test_start_up_refuses_plain_http_except_to_an_allowed_local_sandbox(tmp_path):
    import pytest

    from portal import create_app
    from portal.errors import StartupError

    config = base_config(f"sqlite:///{tmp_path / 'portal.sqlite3'}", PLUGINS=["portal_wonde.plugin"],
                         ENABLED_CONNECTORS=["wonde"],
                         CONNECTORS={"wonde": {"base_url": "http://api.example.org/v1.0", "allow_insecure_http": True}})
    with pytest.raises(StartupError, match="Wonde connector: .*HTTPS"):
        create_app(config)
    config["CONNECTORS"]["wonde"]["base_url"] = "http://127.0.0.1:9/v1.0"
    assert create_app(config)  # a local sandbox, explicitly allowed
    config["CONNECTORS"]["wonde"]["allow_insecure_http"] = "false"
    with pytest.raises(StartupError, match="Wonde connector: .*HTTPS"):
        create_app(config)
