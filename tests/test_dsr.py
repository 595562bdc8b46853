"""Data-subject requests end to end: register, clock, routing, identity, export, erasure, restriction, rectification (R43–R53)."""
from __future__ import annotations

import io
import json
import zipfile
from datetime import date, timedelta

import jsonschema
import pytest
from sqlalchemy import Column, ForeignKey, Integer, String, Table, func, insert, select

from portal import audit
from portal.connectors import AttendanceMarkRecord, DemographicsRecord
from portal.extensions import db
from portal.models import (
    AuditEntry,
    Connection,
    ConnectionState,
    JobRun,
    MisAttendanceMark,
    MisPupil,
    RequestStatus,
    Role,
    SubjectRequest,
    Suppression,
)
from portal.models.base import utcnow
from portal.privacy import actions, deadlines, export, register
from portal.privacy.register import RequestError
from tests import api_support as s


def _school_with_pupils(make, feature="pupil_tracking", n=3):
    product = s.product(feature, name=f"Tracker {feature}")
    school, connection = s.connected_school(make, product)
    s.write(connection, s.pupils(n))
    s.write(connection, [AttendanceMarkRecord(external_id=f"p{i}-{d}", pupil_external_id=f"p{i}",
                                              session_date=date(2025, 9, 8) + timedelta(days=d), session="AM", code="/")
                         for i in range(n) for d in range(4)])
    s.write(connection, [DemographicsRecord(external_id=f"p{i}", ethnicity="WBRI",
                                            first_language="ENG", sen_status="N") for i in range(n)])
    return product, school, connection


def _request(make, school, kind="access", subject="p1", *, verified=True, received=None, user=None):
    user = user or make.user(Role.school_admin, school)
    req = register.create(user=user, request_type=kind, received_on=received or date.today(), channel="email",
                          requester_kind="parent_carer", relationship="mother", subject_type="pupil", school=school,
                          subject_external_id=subject)
    if verified:
        register.verify_identity(req, user, "known_to_school")
    db.session.commit()
    return req, user


def _actions(target_id) -> list[str]:
    return list(db.session.execute(
        select(AuditEntry.action).where(AuditEntry.target_type == "subject_requests", AuditEntry.target_id == str(target_id))
        .order_by(AuditEntry.id)).scalars())


# ---------------------------------------------------------------- R44/R45: the clock (pure dates)

@pytest.mark.parametrize(("received", "due"), [
    (date(2024, 11, 25), date(2024, 12, 27)),  # 25 and 26 December are bank holidays
    (date(2025, 1, 31), date(2025, 2, 28)),  # no 31 February
    (date(2025, 4, 5), date(2025, 5, 6)),  # Saturday receipt; 5 May is a bank holiday
    (date(2024, 1, 29), date(2024, 2, 29)),  # leap year: 29 February exists
    (date(2023, 1, 29), date(2023, 2, 28)),  # not a leap year
    (date(2025, 12, 31), date(2026, 1, 31) + timedelta(days=2)),  # 31 Jan 2026 is a Saturday -> Monday 2 Feb
])
def test_r44_deadline_is_one_calendar_month_moved_to_a_working_day(received, due):
    assert deadlines.deadline(received) == due


def test_r45_extended_deadline_is_three_months_from_the_start():
    assert deadlines.deadline(date(2025, 1, 31), extended=True) == date(2025, 4, 30)
    assert deadlines.deadline(date(2023, 11, 29), extended=True) == date(2024, 2, 29)


def test_r44_proof_of_identity_arriving_later_restarts_the_clock(app, make):
    school = make.school()
    req, user = _request(make, school, received=date(2025, 3, 3), verified=False)
    assert req.deadline_on == date(2025, 4, 3) and req.status == RequestStatus.identity_pending
    register.verify_identity(req, user, "photo_id", proof_received_on=date(2025, 3, 10))
    db.session.commit()
    assert req.start_on == date(2025, 3, 10) and req.deadline_on == date(2025, 4, 10)
    assert req.identity_checked_by_id == user.id and req.identity_method == "photo_id"


def test_r45_an_extension_is_kept_when_identity_proof_restarts_the_clock(app, make):
    school = make.school()
    req, user = _request(make, school, received=date(2025, 3, 3), verified=False)
    register.extend(req, user, "complex", on=date(2025, 3, 20))
    assert req.deadline_on == date(2025, 6, 3)
    register.verify_identity(req, user, "photo_id", proof_received_on=date(2025, 3, 25))
    db.session.commit()
    # The clock restarts on 25 March and keeps its two extra months: 25 June, still shown as extended.
    assert req.start_on == date(2025, 3, 25) and req.deadline_on == date(2025, 6, 25)
    assert req.first_deadline_on == date(2025, 4, 25) and req.extended_on == date(2025, 3, 20)
    with pytest.raises(RequestError) as twice:
        register.extend(req, user, "complex", on=date(2025, 4, 1))
    assert twice.value.code == "already_extended" and req.deadline_on == date(2025, 6, 25)


def test_r45_extension_once_before_the_first_deadline_with_a_reason(app, make):
    school = make.school()
    req, user = _request(make, school, received=date(2025, 1, 31))
    with pytest.raises(RequestError) as no_reason:
        register.extend(req, user, None, on=date(2025, 2, 20))
    assert no_reason.value.code == "reason_required"
    late, _ = _request(make, school, received=date(2025, 1, 31))
    with pytest.raises(RequestError) as too_late:
        register.extend(late, user, "complex", on=date(2025, 3, 1))
    assert too_late.value.code == "too_late" and late.deadline_on == date(2025, 2, 28)
    register.extend(req, user, "complex", on=date(2025, 2, 20))
    db.session.commit()
    assert req.deadline_on == date(2025, 4, 30) and req.first_deadline_on == date(2025, 2, 28)
    assert "dsr.extension_notice" in _actions(req.id)
    with pytest.raises(RequestError) as twice:
        register.extend(req, user, "many_requests", on=date(2025, 2, 21))
    assert twice.value.code == "already_extended"


# ---------------------------------------------------------------- R43: the register

@pytest.mark.parametrize(("missing", "code"), [("request_type", "type_required"), ("received_on", "received_required")])
def test_r43_a_request_without_a_type_or_receipt_date_cannot_be_saved(app, make, missing, code):
    school = make.school()
    user = make.user(Role.school_admin, school)
    fields = dict(request_type="access", received_on=date.today(), channel="letter", requester_kind="subject",
                  subject_type="pupil", school=school, subject_external_id="p1")
    fields[missing] = None
    with pytest.raises(RequestError) as err:
        register.create(user=user, **fields)
    assert err.value.code == code
    db.session.rollback()
    assert db.session.execute(select(func.count()).select_from(SubjectRequest)).scalar() == 0


def test_r43_every_step_is_written_to_the_hash_chained_audit_trail(app, make):
    _, school, _ = _school_with_pupils(make)
    req, user = _request(make, school)
    token = export.prepare(req, user)
    export.redeem(req, token, user)
    register.complete(req, user)
    db.session.commit()
    assert _actions(req.id) == ["dsr.received", "dsr.identity_verified", "store.dsr_read", "dsr.export_prepared",
                                "dsr.export_downloaded", "dsr.completed"]
    assert audit.verify().ok


# ---------------------------------------------------------------- R47: routing

def test_r47_a_request_to_us_about_a_pupil_is_routed_to_the_school(app, make):
    trust = make.trust()
    school = make.school(trust=trust)
    admin = make.user(Role.school_admin, school)
    trust_admin = make.user(Role.trust_admin, trust)
    support = make.user(None, support=True, totp=True)
    req = register.create(user=support, request_type="access", received_on=date.today(), channel="email",
                          requester_kind="parent_carer", subject_type="pupil", school=school, subject_external_id="p1")
    db.session.commit()
    assert req.status == RequestStatus.routed_to_controller and req.school_id == school.id
    outbox = sorted((app.instance_path and __import__("pathlib").Path(app.instance_path) / "mail").glob("*.eml"))
    body = outbox[-1].read_text()
    assert admin.email in body and trust_admin.email in body and f"/schools/{school.id}/requests/{req.id}" in body
    with pytest.raises(RequestError) as err:
        register.verify_identity(req, support, "photo_id")
    assert err.value.code == "controller_only"
    register.verify_identity(req, admin, "known_to_school")
    with pytest.raises(RequestError) as err:
        register.complete(req, support)
    assert err.value.code == "controller_only"
    register.complete(req, admin)
    assert req.status == RequestStatus.completed


def test_r47_a_users_request_about_their_own_login_data_stays_with_the_operator(app, make):
    school = make.school()
    someone = make.user(Role.school_viewer, school)
    support = make.user(None, support=True, totp=True)
    req = register.create(user=support, request_type="access", received_on=date.today(), channel="email",
                          requester_kind="user", subject_type="user", subject_user_id=someone.id)
    register.verify_identity(req, support, "signed_in")
    register.complete(req, support)
    db.session.commit()
    assert req.controller.value == "operator" and req.school_id is None and req.status == RequestStatus.completed


# ---------------------------------------------------------------- R46 and R48: identity, then the export

def test_r46_no_export_while_identity_is_pending(app, make):
    _, school, _ = _school_with_pupils(make)
    req, user = _request(make, school, verified=False)
    with pytest.raises(RequestError) as err:
        export.prepare(req, user)
    assert err.value.code == "identity_pending"
    assert "dsr.export_prepared" not in _actions(req.id)


def test_r48_export_holds_every_row_lists_readers_and_validates_against_the_schema(app, client, make):
    product, school, connection = _school_with_pupils(make)
    unread = s.product("pupil_tracking", name="Never reads")
    from portal.api import authorisations
    authorisations.authorise_product(school, unread, None)
    db.session.commit()
    token = s.token_for(product)
    assert s.get(client, token, s.records_path("pupil_tracking", school.id, "student_attendance_exclusions",
                                                "attendance_marks")).status_code == 200
    req, user = _request(make, school)
    payload = export.redeem(req, export.prepare(req, user), user)
    archive = zipfile.ZipFile(io.BytesIO(payload))
    assert {"export.json", "schema.json", "cover.txt", "csv/mis_pupils.csv", "csv/mis_attendance_marks.csv"} <= set(archive.namelist())
    document = json.loads(archive.read("export.json"))
    jsonschema.validate(document, json.loads(archive.read("schema.json")))
    held = db.session.execute(select(func.count()).select_from(MisAttendanceMark).where(
        MisAttendanceMark.school_id == school.id, MisAttendanceMark.pupil_external_id == "p1")).scalar()
    assert len(document["tables"]["mis_attendance_marks"]) == held == 4
    assert document["tables"]["mis_pupils"][0]["external_id"] == "p1"
    # R75: special-category values appear in an access export (and only there), decrypted.
    assert document["tables"]["mis_demographics"][0]["ethnicity"] == "WBRI"
    assert [r["product"] for r in document["cover"]["recipients"]] == [product.name]
    assert {c["id"] for c in document["cover"]["categories"]} >= {"student_basic", "student_attendance_exclusions"}
    assert document["cover"]["sources"] == [{"connection_id": connection.id, "connector": "fake"}]
    csv_rows = archive.read("csv/mis_attendance_marks.csv").decode().strip().splitlines()
    assert len(csv_rows) == 1 + held
    assert "Tracker pupil_tracking" in archive.read("cover.txt").decode()


def test_r48_the_download_is_single_use_and_expires(app, make):
    _, school, _ = _school_with_pupils(make)
    req, user = _request(make, school)
    token = export.prepare(req, user)
    export.redeem(req, token, user)
    with pytest.raises(RequestError) as used:
        export.redeem(req, token, user)
    assert used.value.code == "export_used"
    token2 = export.prepare(req, user)
    from portal.models import SubjectExport
    for e in db.session.execute(select(SubjectExport)).scalars():
        e.expires_at = utcnow() - timedelta(seconds=1)
    with pytest.raises(RequestError) as expired:
        export.redeem(req, token2, user)
    assert expired.value.code == "export_expired"


def test_r48_schema_walk_picks_up_a_new_table_linked_to_pupils(app, make):
    _, school, _ = _school_with_pupils(make)
    notes = Table("mis_test_pastoral_notes", db.metadata,
                  Column("id", Integer, primary_key=True),
                  Column("pupil_id", Integer, ForeignKey("mis_pupils.id", ondelete="CASCADE")),
                  Column("note_code", String(20)))
    try:
        notes.create(db.session.connection())
        pupil_id = db.session.execute(select(MisPupil.id).where(MisPupil.school_id == school.id,
                                                                MisPupil.external_id == "p1")).scalar()
        db.session.execute(insert(notes).values(pupil_id=pupil_id, note_code="N1"))
        req, user = _request(make, school)
        document, _ = export.build(req)
        assert document["tables"]["mis_test_pastoral_notes"] == [{"id": 1, "pupil_id": pupil_id, "note_code": "N1"}]
        erase_req, _ = _request(make, school, kind="erasure", user=user)
        actions.erase(erase_req, user)
        assert db.session.execute(select(func.count()).select_from(notes)).scalar() == 0
    finally:
        db.session.rollback()
        notes.drop(db.session.connection(), checkfirst=True)
        db.session.commit()
        db.metadata.remove(notes)


# ---------------------------------------------------------------- R50: erasure and suppression

def test_r50_erasure_deletes_everywhere_and_suppression_holds_no_plain_id(app, make):
    _, school, connection = _school_with_pupils(make)
    req, user = _request(make, school, kind="erasure")
    deleted = actions.erase(req, user)
    register.complete(req, user, "erased")
    db.session.commit()
    assert deleted == {"mis_pupils": 1, "mis_attendance_marks": 4, "mis_demographics": 1, "pupil_year_group_facts": 1}
    from portal import store
    assert store.dsr_count_rows(school.id, "pupil", "p1") == 0
    assert store.dsr_count_rows(school.id, "pupil", "p0") > 0
    entry = db.session.execute(select(Suppression)).scalar_one()
    assert "p1" not in entry.key_hash and entry.school_id == school.id
    assert "dsr.erased" in _actions(req.id)


def test_r50_refusing_an_erasure_needs_a_reason_and_the_letter_names_dpo_and_ico(make_app, make):
    app = make_app(DPO_EMAIL="dpo@operator.example")
    with app.app_context():
        school = make.school()
        req, user = _request(make, school, kind="erasure")
        with pytest.raises(RequestError) as err:
            register.refuse(req, user, "  ")
        assert err.value.code == "reason_required" and req.status == RequestStatus.in_progress
        register.refuse(req, user, "Attendance records must be kept by law.")
        db.session.commit()
        letter = register.refusal_letter(req)
        assert "dpo@operator.example" in letter and "Information Commissioner" in letter
        assert "must be kept by law" in letter


# ---------------------------------------------------------------- R51: restriction and objection

def test_r51_a_restricted_pupil_never_appears_in_the_product_api_until_lifted(app, client, make):
    product, school, _ = _school_with_pupils(make)
    token = s.token_for(product)
    pupils_path = s.records_path("pupil_tracking", school.id, "student_basic", "pupils")
    marks_path = s.records_path("pupil_tracking", school.id, "student_attendance_exclusions", "attendance_marks")
    req, user = _request(make, school, kind="restriction")
    with pytest.raises(RequestError):
        actions.restrict(req, user, None)
    actions.restrict(req, user, "accuracy_contested")
    db.session.commit()
    assert sorted(r["external_id"] for r in s.get(client, token, pupils_path).json["records"]) == ["p0", "p2"]
    assert {r["external_id"].split("-")[0] for r in s.get(client, token, marks_path).json["records"]} == {"p0", "p2"}
    actions.lift_restriction(req, user)
    db.session.commit()
    assert sorted(r["external_id"] for r in s.get(client, token, pupils_path).json["records"]) == ["p0", "p1", "p2"]


def test_r51_an_objection_restricts_while_assessed_and_upheld_leads_to_erasure(app, client, make):
    product, school, _ = _school_with_pupils(make)
    token = s.token_for(product)
    pupils_path = s.records_path("pupil_tracking", school.id, "student_basic", "pupils")
    req, user = _request(make, school, kind="objection")
    actions.object_to_processing(req, user)
    db.session.commit()
    assert "p1" not in {r["external_id"] for r in s.get(client, token, pupils_path).json["records"]}
    actions.erase(req, user)
    db.session.commit()
    from portal import store
    assert store.dsr_count_rows(school.id, "pupil", "p1") == 0


# ---------------------------------------------------------------- R49: rectification

def test_r49_rectification_flags_the_school_and_queues_a_resync_of_the_pupils_categories(app, make):
    _, school, connection = _school_with_pupils(make)
    req, user = _request(make, school, kind="rectification")
    with pytest.raises(RequestError):
        actions.rectify(req, user, "")
    runs = actions.rectify(req, user, "Date of birth is wrong")
    db.session.commit()
    assert len(runs) == 1
    run = db.session.get(JobRun, runs[0].id)
    assert run.connection_id == connection.id and run.status.value == "queued"
    requested = run.params["requested"]
    assert requested["mode"] == "full"
    assert set(requested["categories"]) == {"student_basic", "student_attendance_exclusions", "student_demographics"}
    mails = sorted((__import__("pathlib").Path(app.instance_path) / "mail").glob("*.eml"))
    text = mails[-1].read_text()
    assert user.email in text and "Date of birth" not in text  # R65: ids only in email
    assert db.session.get(SubjectRequest, req.id).details == "Date of birth is wrong"


def test_r49_a_users_own_name_is_corrected_directly(app, make):
    someone = make.user(Role.school_viewer, make.school())
    support = make.user(None, support=True, totp=True)
    req = register.create(user=support, request_type="rectification", received_on=date.today(), channel="email",
                          requester_kind="user", subject_type="user", subject_user_id=someone.id)
    register.verify_identity(req, support, "signed_in")
    actions.rectify_user(req, support, name="Corrected Name")
    db.session.commit()
    assert someone.name == "Corrected Name"


# ---------------------------------------------------------------- reminders and the queue

def test_reminders_go_once_to_the_controller_before_the_deadline(app, make):
    school = make.school()
    req, user = _request(make, school, received=date.today() - timedelta(days=28))
    later, _ = _request(make, school, user=user)
    assert register.send_reminders() == 1
    assert register.send_reminders() == 0
    db.session.commit()
    assert req.reminded_on == date.today() and later.reminded_on is None


# ---------------------------------------------------------------- R50 against a real extract (the fake MIS)

def test_r50_erasure_followed_by_an_extract_does_not_bring_the_subject_back(make_app, make, tmp_path):
    from portal import store
    from portal.extract import run_extract
    from portal.models import RunStatus
    from portal.privacy import suppression
    from tests.extract_helpers import authorise_all_features, connect, extract_config
    from tests.plugins.fake_mis import World, generate

    app = make_app(**extract_config())
    with app.app_context():
        school = make.school()
        authorise_all_features(school)
        world = World(tmp_path / "world.json").save(generate(pupils=4))
        conn = connect(school, world.path)
        assert run_extract(conn.id, mode="full").status == RunStatus.succeeded
        held_before = store.dsr_count_rows(school.id, "pupil", "P2")
        assert held_before > 5
        req, user = _request(make, school, kind="erasure", subject="P2")
        actions.erase(req, user)
        db.session.commit()
        # The sandbox MIS still returns P2 on the next full and incremental runs.
        for mode in ("full", "incremental"):
            run = run_extract(conn.id, mode=mode)
            assert run.status == RunStatus.succeeded, run.error_message
            assert store.dsr_count_rows(school.id, "pupil", "P2") == 0
        assert store.dsr_count_rows(school.id, "pupil", "P1") > 0
        # The school lifts the suppression: the next full extract brings P2 back.
        suppression.lift(db.session.execute(select(Suppression)).scalar_one(), user)
        db.session.commit()
        assert run_extract(conn.id, mode="full").status == RunStatus.succeeded
        assert store.dsr_count_rows(school.id, "pupil", "P2") == held_before


def test_r49_the_queued_resync_runs_and_brings_the_correction_in(make_app, make, tmp_path):
    from portal.extract import run_extract
    from portal.models import RunStatus
    from tests.extract_helpers import authorise_all_features, connect, extract_config
    from tests.plugins.fake_mis import T0, World, generate

    app = make_app(**extract_config())
    with app.app_context():
        school = make.school()
        authorise_all_features(school)
        world = World(tmp_path / "world.json").save(generate(pupils=2))
        conn = connect(school, world.path)
        run_extract(conn.id, mode="full")
        req, user = _request(make, school, kind="rectification", subject="P1")
        queued = actions.rectify(req, user, "Wrong date of birth")
        db.session.commit()
        world.update("pupil", "P1", T0 + timedelta(days=1), date_of_birth=date(2014, 5, 5))
        # Nothing else is asked: the housekeeping job of a scheduling process starts the queued run.
        from portal.jobs.scheduler import fire_job

        fire_job("jobs:recover", utcnow())
        run = db.session.get(JobRun, queued[0].id)
        db.session.refresh(run)
        assert run.status == RunStatus.succeeded, run.error_message
        assert run.params["mode"] == "full"
        assert db.session.execute(select(MisPupil.date_of_birth).where(MisPupil.external_id == "P1")).scalar() == date(2014, 5, 5)


# ---------------------------------------------------------------- finding the subject

def test_subject_search_by_id_upn_or_name_and_birth_date_across_entitled_schools_only(app, make):
    from portal.privacy import search
    from portal.connectors import PupilRecord

    trust = make.trust()
    a, b, other = make.school(trust=trust), make.school(trust=trust), make.school()
    for school in (a, b, other):
        conn = Connection(school_id=school.id, connector="fake", state=ConnectionState.approved)
        db.session.add(conn)
        db.session.commit()
        s.write(conn, [PupilRecord(external_id=f"x{school.id}", legal_forename="Sam", legal_surname="Twin",
                                   date_of_birth=date(2015, 2, 3), upn=f"B{school.id:012d}", year_group="5")])
    trust_admin = make.user(Role.trust_admin, trust)
    found = search.find(trust_admin, surname="twin", date_of_birth=date(2015, 2, 3))
    assert sorted(m.school_id for m in found) == sorted([a.id, b.id])  # ambiguous: two matches to choose from
    assert [m.external_id for m in search.find(trust_admin, upn=f"b{a.id:012d}")] == [f"x{a.id}"]
    assert search.find(trust_admin, external_id=f"x{other.id}") == []
    with pytest.raises(RequestError):
        search.find(trust_admin, surname="Twin")


def test_the_daily_reminder_job_is_scheduled_and_reminds_the_controller(app, make):
    from datetime import datetime, timezone

    from portal.jobs.scheduler import fire_job, job_specs

    spec = job_specs(app)["dsr:reminders"]
    assert spec.trigger == "cron" and spec.trigger_args == {"hour": 7, "minute": 30}
    school = make.school()
    req, _ = _request(make, school, received=date.today() - timedelta(days=30))
    run = fire_job("dsr:reminders", datetime.now(timezone.utc).replace(microsecond=0))
    assert run.status.value == "succeeded" and run.stats == {"sent": 1}
    db.session.expire_all()
    assert db.session.get(SubjectRequest, req.id).reminded_on == date.today()


def test_r51_a_restriction_for_legal_claims_also_creates_the_r40_hold_awaiting_the_dpo(app, make):
    from portal.models import LegalHold

    _, school, _ = _school_with_pupils(make)
    req, user = _request(make, school, kind="restriction")
    actions.restrict(req, user, "legal_claims")
    db.session.commit()
    hold = db.session.execute(select(LegalHold)).scalar_one()
    pupil_id = db.session.execute(select(MisPupil.id).where(MisPupil.school_id == school.id,
                                                            MisPupil.external_id == "p1")).scalar()
    assert (hold.record_table, hold.record_id, hold.school_id) == ("mis_pupils", pupil_id, school.id)
    assert hold.dpo_approved_at is None and hold.review_on > date.today() and str(req.id) in hold.reason


# ---------------------------------------------------------------- R34 and R48: exports outlive nothing; complete exports


def _export_rows() -> int:
    from portal.models import SubjectExport
    return db.session.execute(select(func.count()).select_from(SubjectExport)).scalar()


def test_r34_an_export_never_downloaded_is_erased_at_expiry_content_and_row(app, make):
    from portal.models import SubjectExport
    from portal.retention.sweep import run_sweep

    _, school, _ = _school_with_pupils(make)
    req, user = _request(make, school)
    export.prepare(req, user)
    export.prepare(req, user)
    db.session.commit()
    first = db.session.execute(select(SubjectExport).order_by(SubjectExport.id)).scalars().first()
    first.expires_at = utcnow() - timedelta(seconds=1)
    first_id = first.id
    db.session.commit()
    run = run_sweep()
    assert run.status.value == "succeeded", run.error_message
    # The expired one is gone, content and row; the other link still works until it expires.
    assert _export_rows() == 1
    assert db.session.execute(select(SubjectExport.id).where(SubjectExport.id == first_id)).first() is None
    assert "dsr.exports_expired" in [e.action for e in db.session.execute(select(AuditEntry)).scalars()]


@pytest.mark.parametrize("how", ["retention", "erasure"])
def test_r34_an_export_is_erased_with_its_subject(app, make, how):
    from portal import store

    _, school, _ = _school_with_pupils(make)
    req, user = _request(make, school, subject="p1")
    other, _ = _request(make, school, subject="p2", user=user)
    export.prepare(req, user)
    export.prepare(other, user)
    db.session.commit()
    if how == "retention":
        pupil_id = db.session.execute(select(MisPupil.id).where(MisPupil.school_id == school.id,
                                                                MisPupil.external_id == "p1")).scalar()
        store.delete_pupils([pupil_id])
    else:
        erasure, _ = _request(make, school, kind="erasure", subject="p1", user=user)
        actions.erase(erasure, user)
    db.session.commit()
    from portal.models import SubjectExport
    left = db.session.execute(select(SubjectExport.request_id)).scalars().all()
    assert left == [other.id]  # p1's export went with p1; p2's is untouched


def test_r48_export_holds_the_portals_own_records_and_per_pupil_recipients(app, client, make):
    from portal.api import authorisations
    from portal.models import FlagKind, SubjectFlag, SubjectKind

    evaluation = s.product("self_evaluation_early_results", name="Evaluator")  # sees leavers too
    tracking = s.product("pupil_tracking", name="Tracker")  # current students only (R13)
    school, connection = s.connected_school(make, evaluation, tracking)
    s.write(connection, [*s.pupils(1, prefix="left", leaving_date=date.today() - timedelta(days=10)), *s.pupils(2)])
    for product in (evaluation, tracking):
        feature = product.features[0].id
        assert s.get(client, s.token_for(product), s.records_path(feature, school.id, "student_basic", "pupils")).status_code == 200
    user = make.user(Role.school_admin, school)
    db.session.add(SubjectFlag(school_id=school.id, subject_kind=SubjectKind.pupil, external_id="left0",
                               kind=FlagKind.special_category_objection, reason_code="written_notice", recorded_by_id=user.id))
    db.session.commit()
    req, _ = _request(make, school, subject="left0", user=user)
    document, _ = export.build(req)
    tables = document["tables"]
    assert [r["kind"] for r in tables["subject_flags"]] == ["special_category_objection"]
    assert req.id in [r["id"] for r in tables["subject_requests"]]
    assert {r["product_id"] for r in tables["product_receipts"]} == {evaluation.id}
    # Per pupil: only the product that received this pupil's records, not every product that read the school.
    assert [(r["product"], r["categories"]) for r in document["cover"]["recipients"]] == [("Evaluator", ["student_basic"])]
    assert "requester_contact" not in tables["subject_requests"][0]
    jsonschema.validate(document, export.SCHEMA)
    on_roll, _ = _request(make, school, subject="p0", user=user)
    assert {r["product"] for r in export.build(on_roll)[0]["cover"]["recipients"]} == {"Evaluator", "Tracker"}
