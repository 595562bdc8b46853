"""A provider deletion reaches every row about the subject (R20, R42), and scheduled runs reconcile in full periodically."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from portal.api import authorisations
from portal.extensions import db
from portal.extract import run_extract
from portal.models import JobRun, Organisation, RunStatus
from portal.models.base import utcnow
from portal.models.deletions import DeletionNotice
from portal.models.mis import STORE_MODELS, MisPupil
from tests import api_support as s
from tests.extract_helpers import connect, set_settings, xapp  # noqa: F401 - fixture
from tests.plugins.fake_mis import World, generate

FEATURE = "attendance_reporting"  # pupils, demographics, attendance and exclusions, leavers included


def _read_all(client, token, school_id, category, record_type) -> list[dict]:
    resp = s.get(client, token, s.records_path(FEATURE, school_id, category, record_type), limit=10000)
    assert resp.status_code == 200, resp.json
    return resp.json["records"]


def _rows_about(pupil_id: int) -> dict[str, list[bool]]:
    """Per store table about pupils: whether each row about the pupil is tombstoned."""
    out = {}
    for model in STORE_MODELS.values():
        if "pupil_id" in model.__table__.c:
            out[model.__tablename__] = [d is not None for d in db.session.execute(
                select(model.deleted_at).where(model.pupil_id == pupil_id)).scalars()]
    return out


def test_r42_a_pupil_deleted_by_the_provider_takes_every_row_about_them_out_of_the_feed_and_readers_are_told(
        xapp, make, tmp_path):
    client = xapp.test_client()
    school = make.school()
    reader, bystander = s.product(FEATURE, name="Reader"), s.product(FEATURE, name="Never read")
    for p in (reader, bystander):
        authorisations.authorise_product(db.session.get(Organisation, school.id), p, None)
    world = World(tmp_path / "world.json").save(generate(pupils=20, days=3))
    conn = connect(school, world.path)
    assert run_extract(conn.id, mode="full").status == RunStatus.succeeded
    token = s.token_for(reader)
    s.token_for(bystander)
    gone = db.session.execute(select(MisPupil.id).where(MisPupil.external_id == "P4")).scalar_one()
    marks = _read_all(client, token, school.id, "student_attendance_exclusions", "attendance_marks")
    served_about = [m for m in marks if m["fields"]["pupil_id"] == gone]
    assert served_about and not any(m["deleted"] for m in served_about)
    _read_all(client, token, school.id, "student_basic", "pupils")

    world.delete("pupil", "P4", utcnow())  # the deletions feed names the pupil only
    run = run_extract(conn.id, mode="incremental")
    assert run.status == RunStatus.succeeded, run.error_message
    about = _rows_about(gone)
    assert about["mis_attendance_marks"] and all(about["mis_attendance_marks"])
    assert about["mis_demographics"] and all(about["mis_demographics"])
    assert all(all(flags) for flags in about.values()), about
    counts = run.stats["categories"]
    assert counts["student_attendance_exclusions"]["tombstoned"] == len(about["mis_attendance_marks"]) + len(
        about["mis_exclusions"])
    assert counts["student_demographics"]["tombstoned"] == 1
    # The feed now serves each of them as a tombstone, with no field values.
    marks = _read_all(client, token, school.id, "student_attendance_exclusions", "attendance_marks")
    about_now = [m for m in marks if m["deleted"] and m["fields"] is None]
    assert {m["id"] for m in about_now} >= {m["id"] for m in served_about}
    assert not [m for m in marks if not m["deleted"] and m["fields"]["pupil_id"] == gone]
    # R42: the product that received the pupil is told at once; the one that never read is not.
    notices = db.session.execute(select(DeletionNotice)).scalars().all()
    assert [(n.product_id, n.record_type, n.record_id, n.scope, n.reason) for n in notices] == [
        (reader.id, "pupils", gone, "subject", "provider_deleted")]


def test_a_staff_member_deleted_by_the_provider_is_tombstoned_and_readers_are_told(xapp, make, tmp_path):
    client = xapp.test_client()
    school = make.school()
    reader = s.product("user_provisioning", name="Provisioning")
    authorisations.authorise_product(db.session.get(Organisation, school.id), reader, None)
    world = World(tmp_path / "world.json").save(generate(pupils=2, staff=12))
    conn = connect(school, world.path)
    assert run_extract(conn.id, mode="full").status == RunStatus.succeeded
    token = s.token_for(reader)
    resp = s.get(client, token, f"/features/user_provisioning/schools/{school.id}/categories/staff_basic/staff", limit=100)
    staff = {r["external_id"]: r["id"] for r in resp.json["records"]}
    world.delete("staff", "ST2", utcnow())
    assert run_extract(conn.id, mode="incremental").status == RunStatus.succeeded
    notices = db.session.execute(select(DeletionNotice)).scalars().all()
    assert [(n.record_type, n.record_id, n.scope, n.reason) for n in notices] == [
        ("staff", staff["ST2"], "record", "provider_deleted")]


def _age_runs(conn, *, full_days: float, other_days: float = 0) -> None:
    """Move the connection's successful runs into the past: full ones ``full_days`` ago, the rest ``other_days``."""
    for run in db.session.execute(select(JobRun).where(JobRun.connection_id == conn.id)).scalars():
        days = full_days if run.params.get("mode") == "full" else other_days
        run.finished_at = utcnow() - timedelta(days=days)
    db.session.commit()


def test_scheduled_runs_become_full_when_the_last_full_run_is_older_than_a_week(xapp, make, tmp_path):
    school = make.school()
    from tests.extract_helpers import authorise_all_features

    authorise_all_features(school)
    world = World(tmp_path / "world.json").save(generate(pupils=4))
    conn = connect(school, world.path)
    assert run_extract(conn.id).params["mode"] == "full"
    assert run_extract(conn.id).params["mode"] == "incremental"
    _age_runs(conn, full_days=6)
    assert run_extract(conn.id).params["mode"] == "incremental"  # six days: not yet
    _age_runs(conn, full_days=8)  # incremental runs kept succeeding daily; the full one is 8 days old
    run = run_extract(conn.id)
    assert (run.params["mode"], run.params["mode_reason"]) == ("full", "reconciliation_due")
    assert run.status == RunStatus.succeeded
    assert run_extract(conn.id).params["mode"] == "incremental"  # the full run just done counts
    # An explicit incremental run is not overridden.
    _age_runs(conn, full_days=8)
    assert run_extract(conn.id, mode="incremental").params["mode"] == "incremental"


def test_full_reconciliation_period_is_configurable_per_connection_and_deployment(xapp, make, tmp_path):
    school = make.school()
    from tests.extract_helpers import authorise_all_features

    authorise_all_features(school)
    world = World(tmp_path / "world.json").save(generate(pupils=4))
    conn = connect(school, world.path)
    run_extract(conn.id)
    assert run_extract(conn.id).params["mode"] == "incremental"
    _age_runs(conn, full_days=8)
    set_settings(conn, full_reconciliation_days=30)
    assert run_extract(conn.id).params["mode"] == "incremental"
    set_settings(conn, full_reconciliation_days=None)
    xapp.config["FULL_RECONCILIATION_DAYS"] = 10
    assert run_extract(conn.id).params["mode"] == "incremental"
    xapp.config["FULL_RECONCILIATION_DAYS"] = 1
    assert run_extract(conn.id).params["mode"] == "full"
