"""`flask portal schools add`, `connect` and `extract`: clear errors, nothing changed on bad input, JSON for scripts."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import Connection, ConnectionState, Organisation, OrgKind, Role
from tests.extract_helpers import authorise_all_features, extract_config, set_settings
from tests.plugins.fake_mis import World, generate


@pytest.fixture
def cli(make_app, tmp_path):
    """An app with the fake MIS serving a world file from deployment settings, and a CLI runner."""
    world = World(tmp_path / "world.json").save(generate(pupils=8))
    app = make_app(**extract_config(CONNECTORS={"fakemis": {"world": str(world.path)}}))
    with app.app_context():
        yield app.test_cli_runner()


def _orgs() -> int:
    return db.session.execute(select(func.count()).select_from(Organisation)).scalar()


def test_schools_add_creates_a_school_and_its_la(cli):
    result = cli.invoke(args=["portal", "schools", "add", "--urn", "123456", "--dfe-number", "2084321",
                              "--name", "Hill Primary", "--phase", "Primary"])
    assert result.exit_code == 0, result.output
    school = db.session.execute(select(Organisation).where(Organisation.urn == "123456")).scalar_one()
    assert (school.kind, school.dfe_number, school.phase) == (OrgKind.school, "2084321", "Primary")
    assert school.local_authority.la_code == "208"


def test_r30_schools_add_records_the_gias_statutory_high_age_as_a_suggestion_only(cli):
    from portal.retention.last_year_group import confirmed_last_year_group, suggest_last_year_group

    result = cli.invoke(args=["portal", "schools", "add", "--urn", "123457", "--dfe-number", "2084322",
                              "--name", "Hill Academy", "--phase", "Secondary", "--statutory-high-age", "18"])
    assert result.exit_code == 0, result.output
    school = db.session.execute(select(Organisation).where(Organisation.urn == "123457")).scalar_one()
    assert school.statutory_high_age == 18
    assert suggest_last_year_group(school).value == 13 and confirmed_last_year_group(school) is None
    bad = cli.invoke(args=["portal", "schools", "add", "--urn", "123458", "--dfe-number", "2084323",
                           "--name", "X", "--statutory-high-age", "old"])
    assert bad.exit_code != 0 and "statutory-high-age" in bad.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--urn", "12345", "--dfe-number", "2084321", "--name", "X"], "a URN is 6 digits"),
        (["--urn", "12345a", "--dfe-number", "2084321", "--name", "X"], "a URN is 6 digits"),
        (["--urn", "123456", "--dfe-number", "208432", "--name", "X"], "a DfE number is 7 digits"),
        (["--urn", "123456", "--dfe-number", "2084321", "--name", "  "], "enter the school's name"),
        (["--urn", "123456", "--dfe-number", "2084321", "--name", "X", "--la-code", "209"], "does not start with LA code"),
    ],
)
def test_schools_add_refuses_bad_input_and_creates_nothing(cli, args, message):
    before = _orgs()
    result = cli.invoke(args=["portal", "schools", "add", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert _orgs() == before


def test_schools_add_refuses_a_duplicate_urn(cli):
    cli.invoke(args=["portal", "schools", "add", "--urn", "123456", "--dfe-number", "2084321", "--name", "A"])
    before = _orgs()
    result = cli.invoke(args=["portal", "schools", "add", "--urn", "123456", "--dfe-number", "2084322", "--name", "B"])
    assert result.exit_code == 2 and "already exists" in result.output
    assert _orgs() == before


def _school_and_admin(cli, make):
    cli.invoke(args=["portal", "schools", "add", "--urn", "123456", "--dfe-number", "2084321", "--name", "Hill"])
    school = db.session.execute(select(Organisation).where(Organisation.urn == "123456")).scalar_one()
    authorise_all_features(school)
    admin = make.user(Role.school_admin, school)
    db.session.commit()
    return school, admin


def test_connect_then_extract_with_a_json_summary(cli, make):
    school, admin = _school_and_admin(cli, make)
    result = cli.invoke(args=["portal", "connect", "--connector", "fakemis", "--school", "123456",
                              "--user", admin.email, "--accept-terms"])
    assert result.exit_code == 0, result.output
    assert "Approved" in result.output
    db.session.expire_all()
    conn = db.session.execute(select(Connection).where(Connection.school_id == school.id)).scalar_one()
    assert conn.state == ConnectionState.approved

    result = cli.invoke(args=["portal", "extract", "--connector", "fakemis", "--school", "123456", "--full", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["status"] == "succeeded" and summary["mode"] == "full" and summary["error"] is None
    assert summary["categories"]["student_basic"] == {"inserted": 8, "updated": 0, "unchanged": 0, "tombstoned": 0}
    assert summary["pages"] > 0 and isinstance(summary["run_id"], int)
    assert "Forename" not in result.output  # counts only, never personal data

    # For people: a progress bar on stderr and a readable result.
    result = cli.invoke(args=["portal", "extract", "--connector", "fakemis", "--school", "123456",
                              "--category", "staff_basic"])
    assert result.exit_code == 0, result.output
    assert "(incremental): succeeded." in result.output and "staff_basic: 0 inserted" in result.output


def test_connect_without_accepted_terms_says_so(cli, make):
    school, admin = _school_and_admin(cli, make)
    result = cli.invoke(args=["portal", "connect", "--connector", "fakemis", "--school", "123456", "--user", admin.email])
    assert result.exit_code == 1 and "Accept the current terms" in result.output


def test_extract_failure_exits_non_zero_with_the_typed_error(cli, make):
    school, admin = _school_and_admin(cli, make)
    cli.invoke(args=["portal", "connect", "--connector", "fakemis", "--school", "123456", "--user", admin.email,
                     "--accept-terms"])
    conn = db.session.execute(select(Connection).where(Connection.school_id == school.id)).scalar_one()
    set_settings(conn, faults=[{"category": "student_basic", "page": 1, "do": "unavailable"}])
    result = cli.invoke(args=["portal", "extract", "--connector", "fakemis", "--school", "123456", "--json"])
    assert result.exit_code == 1
    summary = json.loads(result.output)
    assert summary["status"] == "failed"
    assert summary["error"] == {"kind": "temporary", "code": "provider_unavailable",
                                "message": "The provider did not answer after 5 tries."}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--connector", "nope", "--school", "123456"], "connector 'nope' is not enabled"),
        (["--connector", "fakemis", "--school", "999999"], "no school with URN 999999"),
        (["--connector", "fake", "--school", "123456"], "has no fake connection"),
    ],
)
def test_extract_refuses_unknown_things_clearly(cli, make, args, message):
    _school_and_admin(cli, make)
    result = cli.invoke(args=["portal", "extract", *args])
    assert result.exit_code != 0 and message in result.output
