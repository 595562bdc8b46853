"""Configuration flows one way (defaults, instance file, PORTAL_* variables, test mapping) and bad settings stop start-up clearly."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from portal import create_app
from portal.errors import StartupError
from portal.testing.databases import TEST_ENCRYPTION_KEY, base_config

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = "postgresql+psycopg://root@127.0.0.1:1/x"


@pytest.fixture
def instance(tmp_path, monkeypatch):
    """An instance folder of our own, chosen through PORTAL_INSTANCE_PATH, with a SQLite database in it."""
    folder = tmp_path / "instance"
    folder.mkdir()
    monkeypatch.setenv("PORTAL_INSTANCE_PATH", str(folder))
    monkeypatch.setenv("PORTAL_DATABASE_URL", f"sqlite:///{folder / 'portal.sqlite3'}")
    monkeypatch.setenv("PORTAL_ENCRYPTION_KEYS", TEST_ENCRYPTION_KEY)
    monkeypatch.setenv("PORTAL_PLUGINS_LOAD_ENTRYPOINTS", "false")
    monkeypatch.setenv("PORTAL_PLUGINS", '["tests.plugins.fake_connector"]')
    monkeypatch.setenv("PORTAL_ENABLED_CONNECTORS", '["fake"]')
    monkeypatch.setenv("PORTAL_DATA_LOCATION", "UK")
    return folder


def test_defaults_then_file_then_environment(instance, monkeypatch):
    (instance / "portal.cfg").write_text(
        'MAIL_FROM = "file@example.org"\nBASE_URL = "https://file.example.org"\nJOB_LEASE_SECONDS = 120\n'
    )
    monkeypatch.setenv("PORTAL_BASE_URL", "https://env.example.org")
    monkeypatch.setenv("PORTAL_CONNECTORS__wonde__token", "env-token")
    monkeypatch.setenv("PORTAL_SESSION_COOKIE_SECURE", "false")
    app = create_app()
    assert app.instance_path == str(instance)
    assert app.config["MAIL_FROM"] == "file@example.org"  # the file beats the default
    assert app.config["JOB_LEASE_SECONDS"] == 120
    assert app.config["BASE_URL"] == "https://env.example.org"  # the environment beats the file
    assert app.config["CONNECTORS"]["wonde"]["token"] == "env-token"  # nested keys with __
    assert app.config["SESSION_COOKIE_SECURE"] is False  # values are parsed as JSON
    assert app.config["MAIL_PORT"] == 587  # untouched default


def test_test_mapping_replaces_file_and_environment(instance, monkeypatch, tmp_path):
    (instance / "portal.cfg").write_text('MAIL_FROM = "file@example.org"\n')
    monkeypatch.setenv("PORTAL_BASE_URL", "https://env.example.org")
    cfg = base_config(f"sqlite:///{tmp_path / 'other.sqlite3'}", INSTANCE_PATH=str(instance), MAIL_FROM="test@example.org")
    app = create_app(cfg)
    assert app.config["MAIL_FROM"] == "test@example.org"
    assert app.config["BASE_URL"] == "http://127.0.0.1:5000"


def test_secret_key_generated_once_into_instance_folder(instance):
    first = create_app()
    key_file = instance / "secret_key"
    assert key_file.read_text() == first.config["SECRET_KEY"]
    assert len(first.config["SECRET_KEY"]) >= 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert create_app().config["SECRET_KEY"] == first.config["SECRET_KEY"]  # kept across restarts


def test_instance_folder_is_not_tracked_by_git():
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "instance/secret_key"], cwd=ROOT, capture_output=True
    )
    assert ignored.returncode == 0


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("PORTAL_JOB_LEASE_SECONDS", "soon", "PORTAL_JOB_LEASE_SECONDS"),
        ("PORTAL_ENABLED_CONNECTORS", "wonde", "PORTAL_ENABLED_CONNECTORS"),
        ("PORTAL_MASS_REMOVAL_THRESHOLD", "5", "PORTAL_MASS_REMOVAL_THRESHOLD"),
        ("PORTAL_EXTRACT_PAGE_CHECK_SECONDS", "-1", "PORTAL_EXTRACT_PAGE_CHECK_SECONDS"),
        ("PORTAL_DATA_LOCATION", "US", "PORTAL_DATA_LOCATION"),
        ("PORTAL_DATABASE_URL", "mysql://root@localhost/x", "PORTAL_DATABASE_URL"),
        ("PORTAL_ENCRYPTION_KEYS", "not-a-key", "PORTAL_ENCRYPTION_KEYS"),
        ("PORTAL_SECRET_KEY", "short", "PORTAL_SECRET_KEY"),
        ("PORTAL_SQLITE_CACHE_MB", "0", "PORTAL_SQLITE_CACHE_MB"),
    ],
)
def test_invalid_setting_names_the_key(instance, monkeypatch, variable, value, named):
    monkeypatch.setenv(variable, value)
    with pytest.raises(StartupError, match=named) as info:
        create_app()
    assert "\n" not in str(info.value)


def test_sqlite_connections_take_the_page_cache_setting(instance, monkeypatch):
    from portal.extensions import db

    monkeypatch.setenv("PORTAL_SQLITE_CACHE_MB", "16")
    app = create_app()
    with app.app_context():
        pragma = db.session.connection().exec_driver_sql
        # Negative: KiB, as the setting's 16 MB; the foreign keys stay enforced beside it.
        assert pragma("PRAGMA cache_size").scalar() == -16 * 1024
        assert pragma("PRAGMA foreign_keys").scalar() == 1
        db.session.remove()


def test_missing_setting_names_the_key(tmp_path):
    cfg = base_config(f"sqlite:///{tmp_path / 'x.sqlite3'}", INSTANCE_PATH=str(tmp_path), EXECUTOR=None)
    with pytest.raises(StartupError, match="PORTAL_EXECUTOR is missing"):
        create_app(cfg)


def test_broken_instance_file_is_reported(instance):
    (instance / "portal.cfg").write_text("MAIL_FROM = \n")
    with pytest.raises(StartupError, match="portal.cfg could not be read"):
        create_app()


def test_unreachable_database_is_one_line(tmp_path):
    with pytest.raises(StartupError) as info:
        create_app(base_config(UNREACHABLE, INSTANCE_PATH=str(tmp_path)))
    message = str(info.value)
    assert "cannot be reached" in message and "127.0.0.1:1" in message
    assert "\n" not in message


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    env.update(PORTAL_INSTANCE_PATH=str(tmp_path), PORTAL_DATABASE_URL=UNREACHABLE, PORTAL_DATA_LOCATION="UK")
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args",
    [
        [str(Path(sys.executable).parent / "portal"), "portal", "audit", "verify"],
        [sys.executable, "wsgi.py"],
        [str(Path(sys.executable).parent / "flask"), "--app", "portal", "portal", "audit", "verify"],
    ],
    ids=["console-script", "wsgi", "flask-cli"],
)
def test_entry_points_print_one_line_without_traceback(args, tmp_path):
    done = _run(args, tmp_path)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: the database at") and "cannot be reached" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_r64_a_deployment_that_declares_no_data_location_does_not_start(instance, monkeypatch):
    monkeypatch.delenv("PORTAL_DATA_LOCATION")
    with pytest.raises(StartupError, match="PORTAL_DATA_LOCATION is missing"):
        create_app()
