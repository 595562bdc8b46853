"""Test databases: a migrated SQLite template file, or a private PostgreSQL database per test session."""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine, make_url

POSTGRES_URL_ENV = "PORTAL_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
# Key material fixed for tests only, so encrypted columns read back across processes.
TEST_ENCRYPTION_KEY = "cNhVdIuD3mmvnJbRnSmMT2Dsw8kI3Tn8c1mz4O3mzaQ="
TEST_SECRET_KEY = "test-secret-key-not-for-production"
# Tests do not need commits to survive a power cut: skipping the WAL flush per commit saves most of their time.
POSTGRES_TEST_CONNECT_ARGS = {"options": "-c synchronous_commit=off"}
# Skip reasons for a missing service start with this; .ci/run fails a run that has any.
SERVICE_UNAVAILABLE = "service unavailable:"


def base_config(database_url: str, **overrides) -> dict:
    """Return the test configuration every portal test app starts from."""
    cfg = {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "SESSION_COOKIE_SECURE": False,
        "REMEMBER_COOKIE_SECURE": False,
        "WTF_CSRF_ENABLED": False,
        "RATELIMIT_ENABLED": False,
        "PLUGINS_LOAD_ENTRYPOINTS": False,
        "PLUGINS": ["tests.plugins.fake_connector"],
        "ENABLED_CONNECTORS": ["fake"],
        "SCHEDULER_ENABLED": False,
        "DATA_LOCATION": "UK",
        # Tests of other areas sign school staff in with a password only; tests of R63 set the roles.
        "TOTP_REQUIRED_ROLES": [],
        # Hashing cost is the point in production and only time in tests.
        "ARGON2_PROFILE": "CHEAPEST",
    }
    if database_url.startswith("postgresql"):
        cfg["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": True, "connect_args": POSTGRES_TEST_CONNECT_ARGS}
    cfg.update(overrides)
    return cfg


def postgres_available(url: str | None = None) -> str | None:
    """Return None when PostgreSQL answers at the URL, else the reason it does not."""
    url = url or os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)
    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any driver error means "not available"
        return f"{SERVICE_UNAVAILABLE} PostgreSQL not reachable at {make_url(url).render_as_string(hide_password=True)}: {type(exc).__name__}"


@contextmanager
def private_postgres_database() -> Iterator[str]:
    """Create an empty PostgreSQL database for this test session and drop it afterwards."""
    admin_url = make_url(os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL))
    name = f"portal_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def migrate(database_url: str) -> None:
    """Upgrade the database to the newest migration, through Flask-Migrate like a deployment does."""
    from flask_migrate import upgrade

    from portal import create_app

    app = create_app(base_config(database_url))
    with app.app_context():
        upgrade()
        from portal.extensions import db

        db.engine.dispose()


class Snapshot:
    """The rows migrations seed (reference data), restored after each test wipes the database."""

    def __init__(self, engine: Engine) -> None:
        self.tables: dict[str, list[dict]] = {}
        insp = inspect(engine)
        with engine.connect() as conn:
            for name in insp.get_table_names():
                if name == "alembic_version":
                    continue
                rows = [dict(r._mapping) for r in conn.execute(text(f'SELECT * FROM "{name}"'))]  # nosec B608: table names from the database's own inspector
                if rows:
                    self.tables[name] = rows
        self.all_tables = [t for t in insp.get_table_names() if t != "alembic_version"]

    def reset_postgres(self, engine: Engine, metadata) -> None:
        """Empty every table and put the reference rows back."""
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL synchronous_commit = off"))
            names = ", ".join(f'"{t}"' for t in self.all_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            for table in metadata.sorted_tables:
                rows = self.tables.get(table.name)
                if rows:
                    conn.execute(table.insert(), rows)


def copy_sqlite(template: Path, target: Path) -> str:
    """Copy the migrated template database and return the URL of the copy."""
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


def migrated_database(backend: str, tmp_path_factory) -> Iterator[dict]:
    """Yield a database of the backend migrated to head once, with its reference rows (the session fixtures' body).

    Skips (with a ``service unavailable:`` reason) when PostgreSQL is not reachable.
    """
    import pytest

    if backend == "sqlite":
        template = tmp_path_factory.mktemp("sqlite") / "template.sqlite3"
        url = f"sqlite:///{template}"
        migrate(url)
        engine = create_engine(url)
        yield {"backend": backend, "template": template, "snapshot": Snapshot(engine)}
        engine.dispose()
        return
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    with private_postgres_database() as url:
        migrate(url)
        engine = create_engine(url)
        yield {"backend": backend, "url": url, "snapshot": Snapshot(engine)}
        engine.dispose()


def fresh_database_url(migrated: dict, folder: Path) -> str:
    """Return the URL of a database holding only the reference rows, for one test."""
    if migrated["backend"] == "sqlite":
        return copy_sqlite(migrated["template"], folder / "portal.sqlite3")
    from portal.extensions import db

    engine = create_engine(migrated["url"])
    migrated["snapshot"].reset_postgres(engine, db.metadata)
    engine.dispose()
    return migrated["url"]
