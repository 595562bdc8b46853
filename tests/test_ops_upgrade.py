"""`flask portal upgrade` on a database of the previous release, with data in it: migrated to head, data kept, then checked."""
from __future__ import annotations

from datetime import date

from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade
from sqlalchemy import func, select, text

from portal.extensions import db
from portal.models import Connection, MisAttendanceMark, MisPupil, Organisation, User
from tests.test_migrations import empty_app, schema_differences  # noqa: F401  (fixture)
from tests.test_retention import World

# The first migration-stable release's head (CHANGELOG.md, 0.1.0). Move it forward with each release.
PREVIOUS_RELEASE = "0004"


def test_upgrade_from_the_previous_release_keeps_the_data_and_ends_with_the_deploy_check(empty_app, make):
    app = empty_app
    # Data as the previous release left it: written with this release's models, then the schema taken back
    # to the previous release (every migration since has a downgrade), which also proves the downgrades keep rows.
    upgrade()
    world = World(make)
    conn = world.school()
    pupils = [world.pupil(conn, year="4", leaving=date(2025, 7, 23)) for _ in range(3)]
    user = make.user(email="head@school.example")
    db.session.commit()
    ids = {"pupils": sorted(p.id for p in pupils), "user": user.id, "connection": conn.id}
    marks = db.session.scalar(select(func.count()).select_from(MisAttendanceMark))
    upns = sorted(p.upn for p in pupils)
    db.session.remove()
    downgrade(revision=PREVIOUS_RELEASE)
    assert db.session.execute(text("SELECT version_num FROM alembic_version")).scalar() == PREVIOUS_RELEASE
    db.session.remove()

    result = app.test_cli_runner().invoke(args=["portal", "upgrade"])
    head = ScriptDirectory.from_config(app.extensions["migrate"].migrate.get_config()).get_current_head()
    assert f"Database upgraded from {PREVIOUS_RELEASE} to {head}." in result.output
    assert db.session.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
    assert schema_differences() == []
    # Every row is still there and readable (encrypted columns included).
    assert sorted(db.session.scalars(select(MisPupil.id))) == ids["pupils"]
    assert sorted(db.session.scalars(select(MisPupil.upn))) == upns
    assert db.session.scalar(select(func.count()).select_from(MisAttendanceMark)) == marks
    assert db.session.get(User, ids["user"]).email == "head@school.example"
    assert db.session.get(Connection, ids["connection"]).school_id == db.session.scalar(select(Organisation.id).where(Organisation.id == conn.school_id))
    # Then the deploy check ran: the test settings are not production's, so it failed, one line per problem.
    assert result.exit_code == 1
    assert "ERROR BASE_URL:" in result.output and "Fix:" in result.output

    again = app.test_cli_runner().invoke(args=["portal", "upgrade"])
    assert f"Database upgraded from {head} to {head}." in again.output
