"""`flask portal demo` with only this package installed: its school, its users and an approved connection."""
from __future__ import annotations

import pytest

from portal.testing.databases import base_config


@pytest.fixture
def app(kit_database_url):
    from portal import create_app
    from portal.extensions import db

    app = create_app(base_config(kit_database_url, PLUGINS=["portal_example.plugin"], ENABLED_CONNECTORS=["example"],
                                 CONNECTORS={}))
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_the_demo_serves_the_example_school_from_the_packages_sandbox(app):
    from sqlalchemy import select

    from portal.extensions import db
    from portal.models import Connection, Organisation

    result = app.test_cli_runner().invoke(args=["portal", "demo", "--no-extract"])
    assert result.exit_code == 0, result.output
    assert "Started the sandbox providers for the demo load (example)" in result.output
    assert "admin.example@demo.example" in result.output
    with app.app_context():
        school = db.session.execute(select(Organisation).where(Organisation.urn == "990004")).scalar_one()
        assert school.name == "Demo Example School"
        connection = db.session.execute(select(Connection).where(Connection.school_id == school.id)).scalar_one()
        assert (connection.connector, connection.state.value) == ("example", "approved")
        # Approved through the sandbox's real access endpoint, with the school's token stored for the connection.
        assert connection.provider_school_id
    # A second demo changes nothing.
    again = app.test_cli_runner().invoke(args=["portal", "demo", "--no-extract"])
    assert again.exit_code == 0 and "already in place" in again.output
