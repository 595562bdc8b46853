"""One focused test for each privacy rule that was checked only inside a larger scenario (or not at all) (issue 16)."""
from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, inspect as sa_inspect, select, text

from portal.connectors import RECORD_TYPES
from portal.extensions import db
from portal.extract import run_extract
from portal.models import (
    Connection,
    ConnectionState,
    Feature,
    Membership,
    Product,
    ProductAuthorisation,
    Role,
    RunStatus,
)
from portal.models.base import utcnow
from portal.models.mis import STORE_MODELS, MisPupil, MisStaff
from portal.retention.sweep import run_sweep
from tests import api_support as s
from tests.extract_helpers import connect, live, set_settings, snapshot, xapp  # noqa: F401 - fixture
from tests.plugins import fake_mis
from tests.plugins.fake_mis import World as FakeWorld
from tests.plugins.fake_mis import generate
from tests.test_access import fill, school_routes
from tests.test_retention import World, at, exists, orphan_count

MATRIX = json.loads(s.MATRIX_PATH.read_text())
SYNC_COLUMNS = {"id", "school_id", "connection_id", "category", "external_id", "provider_updated_at", "extracted_at",
                "deleted_at", "data_type", "content_hash", "seen_run_id", "pupil_id", "pupil_external_id"}


@pytest.fixture
def zero_window_app(make_app):
    """No backup window (B = 0), as in privacy-rules.md group D's examples."""
    app = make_app(RETENTION_BACKUP_WINDOW_DAYS=0)
    with app.app_context():
        yield app


@pytest.fixture
def world(make):
    return World(make)


def _fake_school(make, tmp_path, *feature_ids: str, pupils: int = 6):
    """A school on the fake MIS whose authorised product provides the given features."""
    school = make.school()
    product = Product(name=f"P {school.id}", purpose="test")
    product.features = [db.session.get(Feature, f) for f in feature_ids]
    db.session.add(product)
    db.session.flush()
    db.session.add(ProductAuthorisation(school_id=school.id, product_id=product.id))
    fworld = FakeWorld(tmp_path / "world.json").save(generate(pupils=pupils))
    return school, fworld, connect(school, fworld.path)


# ---------------------------------------------------------------- B. categories


def test_r10_store_tables_hold_only_listed_fields_and_sync_keys():
    names = " ".join(db_table for db_table in (m.__tablename__ for m in STORE_MODELS.values()))
    for word in ("contact", "guardian", "medical", "parent", "photo", "behaviour"):
        assert word not in names
    for kind, model in STORE_MODELS.items():
        fields = {f.name for f in dataclasses.fields(RECORD_TYPES[kind])}
        extra = {c.name for c in model.__table__.columns} - fields - SYNC_COLUMNS
        assert extra == set(), (kind, extra)


def test_r10_a_record_carrying_extra_fields_is_stored_without_them(app, make):
    p = s.product("pupil_tracking")
    school, connection = s.connected_school(make, p)
    from portal.connectors import PupilRecord

    # A connector's record carrying a field no category lists (say, a provider's medical notes).
    Extended = dataclasses.make_dataclass("Extended", [("medical_notes", str, dataclasses.field(default=""))],
                                          bases=(PupilRecord,), frozen=True, kw_only=True)
    base = s.pupils(1, prefix="x")[0]
    record = Extended(**base.values(), medical_notes="Sentinel-Medical")
    assert record.values()["medical_notes"] == "Sentinel-Medical"
    s.write(connection, [record])
    raw = json.dumps([dict(r) for r in db.session.execute(select(MisPupil.__table__)).mappings()], default=str)
    assert "x0" in raw and "Sentinel-Medical" not in raw


def test_r16_mis_records_are_customer_data_with_the_school_as_controller(app, make):
    p = s.product("pupil_tracking")
    school, connection = s.connected_school(make, p)
    s.write(connection, s.pupils(2))
    rows = db.session.execute(select(MisPupil.data_type, MisPupil.school_id)).all()
    assert rows and set(rows) == {("customer", school.id)}


def test_r71_matrix_marks_exactly_four_special_category_fields_in_demographics():
    special = {c["id"]: set(c.get("special_category_fields") or []) for c in MATRIX["categories"]
               if c.get("special_category")}
    assert special == {"student_demographics": {"ethnicity", "first_language", "eal", "sen"}}


# ---------------------------------------------------------------- C. cadence and extracts


def test_r17_attendance_is_due_every_calendar_day_weekends_included(make_app):
    from portal.jobs.builtin import extract_spec
    from portal.jobs.scheduler import make_trigger
    from portal.plugins.manager import get_plugins

    app = make_app(EXTRACT_SCHEDULE={"student_assessment": "weekly"}, EXTRACT_WEEKLY_DAY="wednesday")
    with app.app_context():
        connector = next(iter(get_plugins(app).installed_connectors().values()))
        trigger = make_trigger(extract_spec(7, connector), "Europe/London")
        fire, fires = None, []
        now = datetime(2025, 10, 3, 0, 0, tzinfo=timezone.utc)
        while True:
            fire = trigger.get_next_fire_time(fire, now if fire is None else fire + timedelta(seconds=1))
            if fire.date() > date(2025, 10, 5):
                break
            fires.append(fire.date())
        assert fires == [date(2025, 10, 3), date(2025, 10, 4), date(2025, 10, 5)]  # Fri, Sat, Sun
        from portal.extract.plan import cadence

        assert cadence("student_attendance_exclusions") == "daily"


def test_r19_only_the_attendance_product_s_categories_are_requested(xapp, make, tmp_path):
    school, fworld, conn = _fake_school(make, tmp_path, "attendance_reporting")
    fake_mis.CALLS.clear()
    run = run_extract(conn.id)
    assert run.status == RunStatus.succeeded, run.error_message
    assert {c for c, _, _ in fake_mis.CALLS} == {"student_basic", "student_demographics", "student_attendance_exclusions"}
    snap = snapshot(conn.id)
    assert snap["staff"] == {} and snap["assessment_result"] == {} and snap["group"] == {}


def test_r20_absence_counts_only_in_a_complete_full_run_and_a_failed_run_marks_nobody(xapp, make, tmp_path):
    school, fworld, conn = _fake_school(make, tmp_path, "pupil_tracking", pupils=20)
    run_extract(conn.id, mode="full")
    fworld.delete("pupil", "P7", utcnow(), feed=False)
    set_settings(conn, faults=[{"category": "student_basic", "page": 3, "do": "unavailable"}])
    failed = run_extract(conn.id, mode="full")
    assert failed.status != RunStatus.succeeded
    assert "P7" in live(snapshot(conn.id), "pupil")
    set_settings(conn, faults=[])
    run = run_extract(conn.id, mode="full")
    assert run.status == RunStatus.succeeded, run.error_message
    assert "P7" not in live(snapshot(conn.id), "pupil")


def test_r21_the_first_run_after_re_authorisation_is_full(xapp, make, tmp_path):
    school, fworld, conn = _fake_school(make, tmp_path, "pupil_tracking")
    run_extract(conn.id)
    assert run_extract(conn.id).params["mode"] == "incremental"
    # A real re-approval (after a revocation) stamps authorised_at; recovering from failing does not.
    conn.state = ConnectionState.approved
    conn.state_changed_at = conn.authorised_at = utcnow() + timedelta(seconds=1)
    db.session.commit()
    run = run_extract(conn.id)
    assert (run.params["mode"], run.params["mode_reason"]) == ("full", "reauthorised")


# ---------------------------------------------------------------- D. retention


def test_r27_dfe_data_goes_on_the_23rd_birthday(zero_window_app, world):
    conn = world.school()
    g = world.pupil(conn, dob=date(2003, 2, 14), data_type="government")
    leap = world.pupil(conn, dob=date(2004, 2, 29), data_type="government")
    db.session.commit()
    run_sweep(as_of=date(2026, 2, 13))
    assert exists(MisPupil, g)
    run_sweep(as_of=date(2026, 2, 14))
    assert not exists(MisPupil, sa_inspect(g).identity[0])
    run_sweep(as_of=date(2027, 2, 27))
    assert exists(MisPupil, leap)
    run_sweep(as_of=date(2027, 2, 28))
    assert not exists(MisPupil, sa_inspect(leap).identity[0])


def test_r29_six_months_after_the_leaving_date(zero_window_app, world):
    conn = world.school()
    p = world.pupil(conn, year="3", leaving=date(2025, 7, 22), extracted=date(2025, 5, 1))
    db.session.commit()
    pid = p.id
    run_sweep(as_of=date(2026, 1, 21))
    assert exists(MisPupil, pid)
    run_sweep(as_of=date(2026, 1, 22))
    assert not exists(MisPupil, pid) and orphan_count() == 0


def test_r32_six_months_after_a_revocation_not_undone(zero_window_app, world):
    revoked, restored = world.school(), world.school()
    p, q = world.pupil(revoked, year="1", extracted=date(2024, 10, 1)), world.pupil(restored, year="1", extracted=date(2024, 10, 1))
    for conn in (revoked, restored):
        conn.state, conn.state_changed_at = ConnectionState.revoked, at(date(2025, 10, 6), 10)
    db.session.commit()
    pid, qid = p.id, q.id
    run_sweep(as_of=date(2026, 3, 1))
    restored.state, restored.state_changed_at = ConnectionState.approved, at(date(2026, 3, 1), 10)
    db.session.commit()
    run_sweep(as_of=date(2026, 4, 5))
    assert exists(MisPupil, pid)
    run_sweep(as_of=date(2026, 4, 6))
    assert not exists(MisPupil, pid) and exists(MisPupil, qid)


def test_r33_the_earliest_deadline_wins(zero_window_app, world, make):
    conn = world.school(ends_on=date(2025, 12, 31))  # R31 alone: 30 Jun 2026
    p = world.pupil(conn, year="1", extracted=date(2025, 9, 1))
    p.deleted_at = at(date(2025, 10, 1))  # missing from the full extract of 1 Oct 2025 (R29): 1 Apr 2026
    db.session.commit()
    pid = p.id
    run_sweep(as_of=date(2026, 3, 31))
    assert exists(MisPupil, pid)
    run_sweep(as_of=date(2026, 4, 1))
    assert not exists(MisPupil, pid)


def test_r34_deleting_a_pupil_leaves_no_row_about_them(zero_window_app, world):
    conn = world.school()
    p = world.pupil(conn, year="3", leaving=date(2025, 7, 22), rows=3)
    db.session.commit()
    pid, upn = p.id, p.upn
    run_sweep(as_of=date(2026, 1, 22))
    assert orphan_count() == 0
    for model in STORE_MODELS.values():
        table = model.__table__
        if "pupil_id" in table.c:
            assert db.session.execute(select(func.count()).select_from(table).where(table.c.pupil_id == pid)).scalar_one() == 0
    assert db.session.execute(select(func.count()).select_from(MisPupil).where(MisPupil.upn == upn)).scalar_one() == 0


def test_r39_staff_never_provisioned_go_six_months_after_they_stop_being_employed(zero_window_app, world):
    conn = world.school()
    left = world.staff(conn, employed=False, changed=date(2025, 10, 1))
    stays = world.staff(conn)
    db.session.commit()
    lid, sid = left.id, stays.id
    run_sweep(as_of=date(2026, 3, 31))
    assert exists(MisStaff, lid)
    run_sweep(as_of=date(2026, 4, 1))
    assert not exists(MisStaff, lid) and exists(MisStaff, sid)


# ---------------------------------------------------------------- F. access control


def test_r54_a_school_user_gets_404_on_every_route_of_another_school(app, make, client, auth):
    mine, theirs = make.school("Mine"), make.school("Theirs")
    user = make.user(Role.school_admin, mine)
    db.session.commit()
    auth.login(user)
    for method, rule in school_routes(app):
        resp = client.open(fill(rule, theirs.id), method=method)
        assert resp.status_code == 404, (method, rule)


def test_r59_a_suspended_membership_closes_that_school_only(app, make, client, auth):
    a, b = make.school("A"), make.school("B")
    teacher = make.user(Role.school_viewer, a)
    db.session.add(Membership(user_id=teacher.id, organisation_id=b.id, role=Role.school_viewer))
    db.session.commit()
    membership = db.session.execute(select(Membership).where(Membership.user_id == teacher.id,
                                                             Membership.organisation_id == a.id)).scalar_one()
    membership.suspended_at = utcnow()
    db.session.commit()
    auth.login(teacher)
    assert client.get(f"/schools/{a.id}").status_code == 404
    assert client.get(f"/schools/{b.id}", follow_redirects=True).status_code == 200


def test_r60_no_pupil_role_and_user_provisioning_cannot_read_pupils(app, make, client):
    assert not any("pupil" in r.value or "student" in r.value for r in Role)
    p = s.product("user_provisioning")
    school, connection = s.connected_school(make, p)
    token = s.token_for(p)
    resp = s.get(client, token, s.records_path("user_provisioning", school.id, "student_basic", "pupils"))
    assert resp.status_code == 403


# ---------------------------------------------------------------- G. security


def test_r62_secrets_are_ciphertext_in_the_database(app, make):
    user = make.user(totp=True)
    secret = user.totp_secret
    conn = Connection(school_id=make.school().id, connector="fake", settings_encrypted='{"api_token": "Sentinel-Token"}')
    db.session.add(conn)
    db.session.commit()
    raw_totp = db.session.execute(text("SELECT totp_secret FROM users WHERE id = :i"), {"i": user.id}).scalar_one()
    raw_settings = db.session.execute(text("SELECT settings_encrypted FROM connections WHERE id = :i"), {"i": conn.id}).scalar_one()
    assert secret not in raw_totp and "Sentinel-Token" not in raw_settings
    raw_hash = db.session.execute(text("SELECT password_hash FROM users WHERE id = :i"), {"i": user.id}).scalar_one()
    assert raw_hash.startswith("$argon2")


def test_r70_only_login_and_csrf_cookies_are_set(app, client, make):
    names = set()
    for path in ("/login", "/privacy"):
        resp = client.get(path)
        names |= {c.split("=", 1)[0] for c in resp.headers.getlist("Set-Cookie")}
    allowed = {app.config.get("SESSION_COOKIE_NAME", "session"), app.config.get("REMEMBER_COOKIE_NAME", "remember_token")}
    assert names <= allowed, names


# ---------------------------------------------------------------- H. special category


def test_r75_special_category_values_are_ciphertext_at_rest(app, make):
    from portal.connectors import DemographicsRecord

    p = s.product("pupil_tracking")
    school, connection = s.connected_school(make, p)
    record = DemographicsRecord(external_id="x0", updated_at=utcnow(), ethnicity="SENTINEL-ETH", first_language="ENG")
    s.write(connection, [*s.pupils(1, prefix="x"), record])
    raw = db.session.execute(text("SELECT ethnicity FROM mis_demographics")).scalar_one()
    assert raw and "SENTINEL-ETH" not in raw
    assert db.session.execute(text("SELECT COUNT(*) FROM audit_entries WHERE CAST(details AS TEXT) LIKE '%SENTINEL-ETH%'")).scalar_one() == 0


def test_r77_attendance_records_carry_no_free_text_note():
    for kind in ("attendance_mark", "exclusion"):
        fields = {f.name for f in dataclasses.fields(RECORD_TYPES[kind])}
        columns = {c.name for c in STORE_MODELS[kind].__table__.columns}
        for word in ("note", "notes", "comment", "comments", "description"):
            assert word not in fields and word not in columns, (kind, word)
