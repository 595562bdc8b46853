"""Migrations: one head, the migrated schema matches the models, and downgrade then upgrade works."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app
from flask_migrate import downgrade, upgrade
from sqlalchemy import func, inspect, select, text

from portal.extensions import db
from portal.testing.databases import base_config, postgres_available, private_postgres_database


@pytest.fixture
def empty_app(backend, tmp_path):
    """An app on a brand-new empty database of this backend, with an app context pushed."""
    from portal import create_app

    def build(url: str):
        app = create_app(base_config(url))
        app.instance_path = str(tmp_path / "instance")
        return app

    if backend == "sqlite":
        app = build(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
        with app.app_context():
            yield app
            db.engine.dispose()
        return
    if reason := postgres_available():
        pytest.skip(reason)
    # A database of its own: downgrading the session's shared database would break other tests.
    with private_postgres_database() as url:
        app = build(url)
        with app.app_context():
            yield app
            db.session.remove()
            db.engine.dispose()


def schema_differences() -> list:
    """Return what autogenerate would change to make the database match the models."""
    migrate = current_app.extensions["migrate"]
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=dict(migrate.configure_args))
        return compare_metadata(context, db.metadata)


def portal_tables() -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_there_is_exactly_one_head(app):
    config = app.extensions["migrate"].migrate.get_config()
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


def test_upgrade_from_empty_matches_the_models_and_survives_downgrade_and_upgrade_again(empty_app):
    from portal.models import Category

    assert portal_tables() == set()
    upgrade()
    assert portal_tables() == set(db.metadata.tables)
    assert schema_differences() == []
    seeded = db.session.scalar(select(func.count()).select_from(Category))
    assert seeded > 0
    db.session.commit()

    downgrade(revision="base")
    assert portal_tables() == set()

    upgrade()
    assert schema_differences() == []
    assert db.session.scalar(select(func.count()).select_from(Category)) == seeded

    # The comparison does see a schema that drifted from the models.
    with db.engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_job_runs_job_id"))
    assert [diff[0] for diff in schema_differences()] == ["add_index"]
