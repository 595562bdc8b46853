"""The extract engine against the fake MIS: full, incremental, reconciliation, watermarks, grants (R19–R21)."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, text

from portal.connectors import CATEGORIES
from portal.extensions import db
from portal.extract import plan, run_extract
from portal.models import AuditEntry, JobRun, RunStatus
from portal.models.base import utcnow
from tests.extract_helpers import (
    assert_matches_source,
    authorise_all_features,
    connect,
    live,
    snapshot,
    xapp,  # noqa: F401 - fixture
)
from tests.plugins import fake_mis
from tests.plugins.fake_mis import World, generate



def _school(make, tmp_path, pupils=6, **settings):
    school = make.school()
    authorise_all_features(school)
    world = World(tmp_path / "world.json").save(generate(pupils=pupils))
    return school, world, connect(school, world.path, **settings)


def test_full_extract_of_every_category_matches_the_source_field_by_field(xapp, make, tmp_path):
    school, world, conn = _school(make, tmp_path)
    run = run_extract(conn.id, mode="full")
    assert run.status == RunStatus.succeeded, run.error_message
    assert run.params["categories"] == list(CATEGORIES)
    checked = assert_matches_source(snapshot(conn.id), world.records())
    assert checked == len(world.records())
    counts = run.stats["categories"]
    assert counts["student_basic"] == {"inserted": 6, "updated": 0, "unchanged": 0, "tombstoned": 0}
    assert counts["student_attendance_exclusions"]["inserted"] == 6 * 3 * 2 + 1
    assert run.stats["pages"] > len(CATEGORIES) and run.stats["requests"] == run.stats["pages"]
    assert run.stats["seconds"] >= 0 and run.duration_seconds is not None


def test_a_second_full_run_changes_nothing_and_counts_unchanged(xapp, make, tmp_path):
    school, world, conn = _school(make, tmp_path)
    run_extract(conn.id, mode="full")
    before = snapshot(conn.id)
    run = run_extract(conn.id, mode="full")
    assert run.status == RunStatus.succeeded
    assert snapshot(conn.id) == {k: {e: {**r} for e, r in v.items()} for k, v in before.items()}
    for category, c in run.stats["categories"].items():
        assert c["inserted"] == c["updated"] == c["tombstoned"] == 0, category
        assert c["unchanged"] > 0


def test_special_category_fields_are_encrypted_at_rest(xapp, make, tmp_path):
    school, world, conn = _school(make, tmp_path)
    run_extract(conn.id, mode="full")
    raw = db.session.execute(
        text("SELECT ethnicity, first_language, sen_status, eal FROM mis_demographics WHERE external_id = 'P5'")
    ).one()
    assert all(v is not None for v in raw)
    assert "WBRI" not in raw.ethnicity and "ENG" not in raw.first_language and raw.sen_status != "K"
    assert raw.eal not in ("true", "false", "0", "1")
    # ...and read back as the plain values through the store's types.
    assert snapshot(conn.id)["demographics"]["P5"]["ethnicity"] == "WBRI"
    assert snapshot(conn.id)["demographics"]["P5"]["sen_status"] == "K"


def test_incremental_run_sends_the_watermark_and_applies_updates_and_deletions(xapp, make, tmp_path):
    school, world, conn = _school(make, tmp_path, pupils=20)
    first = run_extract(conn.id)  # auto: the first run is a full one (R21)
    assert first.params["mode"] == "full" and first.params["mode_reason"] == "first_run"
    LATER = utcnow().replace(microsecond=0)  # changed at the provider after the first run started
    world.update("pupil", "P2", LATER, legal_surname="Changed")
    world.update("attendance_mark", "P3:2026-09-07:AM", LATER, code="I")
    world.delete("pupil", "P4", LATER)
    world.delete("staff", "ST2", LATER)
    fake_mis.CALLS.clear()
    run = run_extract(conn.id)
    assert run.status == RunStatus.succeeded, run.error_message
    assert run.params["mode"] == "incremental"
    # The updated-after filter is when the last run started asking (the provider's clock; this one sends no
    # Date, so ours less a skew margin), less a small overlap: not the newest stamp seen, T0 (issue 19).
    sent = {cat: since for cat, since, _ in fake_mis.CALLS}
    assert set(sent) == set(CATEGORIES)
    asked = {datetime.fromisoformat(at) for at in first.stats["asked_at"].values()}
    assert len(asked) == 1
    assert set(sent.values()) == {asked.pop() - plan.CLOCK_SKEW_MARGIN - plan.WATERMARK_OVERLAP}
    assert min(sent.values()) > fake_mis.T0
    snap = snapshot(conn.id)
    assert snap["pupil"]["P2"]["legal_surname"] == "Changed"
    assert snap["attendance_mark"]["P3:2026-09-07:AM"]["code"] == "I"
    assert snap["pupil"]["P4"]["deleted_at"] == LATER
    assert snap["staff"]["ST2"]["deleted_at"] is not None
    counts = run.stats["categories"]
    # Records stamped T0, before the first run asked, are not sent again.
    assert counts["student_basic"] == {"inserted": 0, "updated": 1, "unchanged": 0, "tombstoned": 1}
    assert counts["student_attendance_exclusions"]["updated"] == 1
    assert counts["staff_basic"]["tombstoned"] == 1
    # The deleted pupil's other rows go with them (the feed names the pupil only).
    assert counts["student_demographics"] == {"inserted": 0, "updated": 0, "unchanged": 0, "tombstoned": 1}
    assert snap["demographics"]["P4"]["deleted_at"] is not None
    about_p4 = [r for kind in ("attendance_mark", "membership", "assessment_result") for r in snap[kind].values()
                if r.get("pupil_external_id") == "P4"]
    assert about_p4 and all(r["deleted_at"] is not None for r in about_p4)
    # A third run asks from when the second started asking: only the change made just before it comes
    # again (inside the margin and overlap), unchanged, so nothing is written.
    fake_mis.CALLS.clear()
    third = run_extract(conn.id)
    sent = {cat: since for cat, since, _ in fake_mis.CALLS}
    second_asked = datetime.fromisoformat(run.stats["asked_at"]["student_basic"])
    assert set(sent.values()) == {second_asked - plan.CLOCK_SKEW_MARGIN - plan.WATERMARK_OVERLAP}
    assert third.stats["categories"]["student_basic"] == {"inserted": 0, "updated": 0, "unchanged": 1, "tombstoned": 0}


def test_a_complete_full_run_tombstones_records_missing_from_the_pull(xapp, make, tmp_path):
    school, world, conn = _school(make, tmp_path, pupils=20)
    run_extract(conn.id, mode="full")
    LATER = utcnow()
    world.delete("pupil", "P7", LATER, feed=False)  # gone without a deletion in the feed
    world.delete("membership", "G2:P1", LATER, feed=False)
    incremental = run_extract(conn.id, mode="incremental")
    assert "P7" in live(snapshot(conn.id), "pupil")  # absence means nothing outside a full pull (R20)
    assert incremental.status == RunStatus.succeeded
    run = run_extract(conn.id, mode="full")
    snap = snapshot(conn.id)
    assert "P7" not in live(snap, "pupil") and "G2:P1" not in live(snap, "membership")
    assert run.stats["categories"]["student_basic"]["tombstoned"] == 1
    # G2:P1, and P7's own membership: rows about a removed pupil go with them, even if still served.
    assert run.stats["categories"]["student_timetable"]["tombstoned"] == 2
    assert not [k for k in live(snap, "membership") if k.endswith(":P7")]
    # A pupil who comes back is live again, with the rows about them the next full run brings.
    world.save(generate(pupils=20))
    run_extract(conn.id, mode="full")
    assert "P7" in live(snapshot(conn.id), "pupil")
    assert [k for k in live(snapshot(conn.id), "membership") if k.endswith(":P7")]


def test_full_run_reconciles_attendance_only_inside_the_sessions_it_pulled(xapp, make, tmp_path):
    school = make.school()
    authorise_all_features(school)
    world = World(tmp_path / "world.json").save(generate(pupils=4, days=5))
    conn = connect(school, world.path)
    run_extract(conn.id, mode="full")
    # The provider now serves only the last two days (an attendance window moving on).
    data = world.load()
    data["records"] = [
        r for r in data["records"]
        if r["kind"] != "attendance_mark" or r["fields"]["session_date"]["__d__"] >= "2026-09-10"
    ]
    world.save(data)
    run = run_extract(conn.id, mode="full")
    assert run.stats["categories"]["student_attendance_exclusions"]["tombstoned"] == 0
    assert len(live(snapshot(conn.id), "attendance_mark")) == 4 * 5 * 2


def test_auto_mode_goes_full_after_seven_days_without_success(xapp, make, tmp_path):
    school, world, conn = _school(make, tmp_path)
    first = run_extract(conn.id)
    assert run_extract(conn.id).params["mode"] == "incremental"
    first.finished_at = utcnow() - timedelta(days=8)
    db.session.execute(
        JobRun.__table__.update().where(JobRun.id != first.id).values(finished_at=utcnow() - timedelta(days=8))
    )
    db.session.commit()
    run = run_extract(conn.id)
    assert (run.params["mode"], run.params["mode_reason"]) == ("full", "gap_over_7_days")


def test_only_categories_of_authorised_products_are_extracted(xapp, make, tmp_path):
    from portal.models import Feature, Product, ProductAuthorisation

    school = make.school()
    product = Product(name="Provisioning only", purpose="test")
    product.features = [db.session.get(Feature, "user_provisioning")]
    db.session.add(product)
    db.session.flush()
    db.session.add(ProductAuthorisation(school_id=school.id, product_id=product.id))
    world = World(tmp_path / "world.json").save(generate())
    conn = connect(school, world.path)
    run = run_extract(conn.id)
    assert run.status == RunStatus.succeeded
    assert run.params["categories"] == ["staff_basic"]
    assert {c for c, _, _ in fake_mis.CALLS} == {"staff_basic"}
    snap = snapshot(conn.id)
    assert snap["pupil"] == {} and len(snap["staff"]) == 2


def test_a_school_with_no_authorised_product_gets_nothing_extracted(xapp, make, tmp_path):
    school = make.school()
    world = World(tmp_path / "world.json").save(generate())
    conn = connect(school, world.path)
    run = run_extract(conn.id)
    assert (run.status, run.error_code, run.error_kind.value) == (RunStatus.failed, "nothing_authorised", "school_action")
    assert fake_mis.CALLS == []


def test_store_writes_are_audited_with_counts_only(xapp, make, tmp_path):
    school, world, conn = _school(make, tmp_path)
    run = run_extract(conn.id, mode="full")
    entries = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "store.records_written", AuditEntry.organisation_id == school.id)
    ).scalars().all()
    assert len(entries) == 1 and entries[0].details["run_id"] == run.id
    flat = str(entries[0].details)
    assert "Forename" not in flat and "WBRI" not in flat and "A0000" not in flat


def test_r23_the_first_import_skips_leavers_past_their_deletion_date(xapp, make, tmp_path):
    from portal.retention.calendar import add_months, london_date

    school, world, conn = _school(make, tmp_path)
    today = london_date(utcnow())
    # P1 left long enough ago that R29 would already have deleted them; P2 left recently.
    world.update("pupil", "P1", utcnow(), leaving_date=add_months(today, -6))
    world.update("pupil", "P2", utcnow(), leaving_date=add_months(today, -6) + timedelta(days=1))
    run = run_extract(conn.id, mode="full")
    assert run.status == RunStatus.succeeded, run.error_message
    stored = snapshot(conn.id)
    assert "P1" not in stored["pupil"] and "P2" in stored["pupil"]
    assert not any(k.startswith("P1:") for k in stored["attendance_mark"])  # no past attendance for a skipped leaver
    assert any(k.startswith("P2:") for k in stored["attendance_mark"])
    assert run.stats["skipped"]["historic_leaver"] == 1


def test_r39_the_first_import_skips_staff_past_their_deletion_date(xapp, make, tmp_path):
    school, world, conn = _school(make, tmp_path)
    # ST1 has not been employed since a change 6 months and a day ago: R39 would already have deleted them.
    world.update("staff", "ST1", utcnow() - timedelta(days=190), currently_employed=False)
    world.update("staff", "ST2", utcnow() - timedelta(days=20), currently_employed=False)
    run = run_extract(conn.id, mode="full")
    assert run.status == RunStatus.succeeded, run.error_message
    stored = snapshot(conn.id)
    assert "ST1" not in stored["staff"] and "ST2" in stored["staff"]
    assert run.stats["skipped"]["historic_leaver"] == 1
