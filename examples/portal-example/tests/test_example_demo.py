"""`flask portal demo` with only this package installed: its school, its users and an approved connection."""
from __future__ import annotations

def test_the_demo_serves_the_example_school_from_the_packages_sandbox(make_app):
    from sqlalchemy import select

    from portal.extensions import db
    from portal.models import Connection, Organisation

    app = make_app()  # this package's plugin only (conftest's app_config), no base_url configured
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
