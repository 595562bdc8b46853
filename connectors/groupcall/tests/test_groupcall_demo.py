"""`flask portal demo` connects the demo's Groupcall school to the Groupcall sandbox."""
from __future__ import annotations

from sqlalchemy import select

from portal import lifecycle
from portal.extensions import db
from portal.models import Connection, ConnectionState, Organisation
from portal.sandbox import synthetic
from portal_groupcall.sandbox import DEMO_ESTABLISHMENTS, DEMO_LA, RELYING_PARTY, GroupcallSandbox, demo_secret


def test_demo_connects_demo_village_school_through_groupcall(make_app):
    village = synthetic.generate_school(3, pupils=20, days=5, la_code=DEMO_LA, establishment_number=DEMO_ESTABLISHMENTS[0])
    with GroupcallSandbox() as sandbox:
        sandbox.load_synthetic(village.dfe_number, village, secret=demo_secret(village.dfe_number))
        app = make_app(CONNECTORS={"groupcall": {"base_url": sandbox.url, "allow_insecure_http": True}})
        for _ in range(2):  # running it again changes nothing
            result = app.test_cli_runner().invoke(args=["portal", "demo"])
            assert result.exit_code == 0, result.output
        with app.app_context():
            school = db.session.execute(select(Organisation).where(Organisation.dfe_number == village.dfe_number)).scalar_one()
            connections = db.session.execute(select(Connection).where(Connection.connector == "groupcall")).scalars().all()
            assert [c.school_id for c in connections] == [school.id]
            assert connections[0].state == ConnectionState.approved
            connector = lifecycle.connector_instance(connections[0])
            assert connector.settings["relying_party"] == RELYING_PARTY
            assert connector.access_status(school).state == "approved"
