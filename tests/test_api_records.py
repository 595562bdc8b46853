"""The record feed: pagination, updated_since, tombstones, on-roll scope, restriction, special-category fields, audit."""
from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from portal.connectors import AttendanceMarkRecord, DemographicsRecord, StaffRecord
from portal.extensions import db
from portal.models import AuditEntry, ConnectionState, FlagKind, RunStatus, SubjectFlag, SubjectKind
from portal.models.base import utcnow
from tests import api_support as s


def _all_pages(client, token, path, **params):
    seen, cursor = [], None
    while True:
        page = s.get(client, token, path, **params, **({"cursor": cursor} if cursor else {})).json
        seen.extend(page["records"])
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return seen, cursor


def _setup(make, feature="pupil_tracking", **app_kwargs):
    p = s.product(feature)
    school, connection = s.connected_school(make, p)
    return p, school, connection, s.token_for(p)


def test_pages_follow_a_cursor_to_the_end_without_gaps_or_repeats(app, client, make):
    _, school, connection, token = _setup(make)
    s.write(connection, s.pupils(25))
    path = s.records_path("pupil_tracking", school.id, "student_basic", "pupils")
    first = s.get(client, token, path, limit=10).json
    assert len(first["records"]) == 10 and first["has_more"] is True
    records, cursor = _all_pages(client, token, path, limit=10)
    assert sorted(r["external_id"] for r in records) == sorted(f"p{i}" for i in range(25))
    assert len({r["id"] for r in records}) == 25
    assert records[0]["fields"]["legal_forename"].startswith("Pupil") and records[0]["deleted"] is False
    # The last cursor is where to poll from: nothing new, nothing repeated.
    assert s.get(client, token, path, cursor=cursor).json["records"] == []


def test_pagination_is_stable_while_an_extract_writes(app, client, make):
    _, school, connection, token = _setup(make)
    s.write(connection, s.pupils(20))
    path = s.records_path("pupil_tracking", school.id, "student_basic", "pupils")
    page = s.get(client, token, path, limit=8).json
    consumed = list(page["records"])
    # An extract starts: it changes a pupil already paged past and one not yet paged, adds new ones,
    # and commits its first batch while the consumer is still paging. (Which pupils the first page held
    # depends on the order the store wrote them in, so both are picked from what it returned.)
    behind = consumed[0]["external_id"]
    ahead = max((f"p{i}" for i in range(20)), key=lambda e: e not in {r["external_id"] for r in consumed})
    running = s.run_for(connection, status=RunStatus.running)
    db.session.commit()
    changed = {p.external_id: p for p in s.pupils(20, year_group="8")}
    s.write(connection, [changed[behind], changed[ahead], *s.pupils(3, prefix="new")], run=running)
    while page["has_more"]:
        page = s.get(client, token, path, limit=8, cursor=page["next_cursor"]).json
        consumed.extend(page["records"])
    # Rows the running extract wrote (the new version of the pupil not yet paged among them) wait until it
    # finishes; no repeats meanwhile.
    assert sorted(r["external_id"] for r in consumed) == sorted(f"p{i}" for i in range(20) if f"p{i}" != ahead)
    running.status = RunStatus.succeeded
    running.finished_at = utcnow()
    db.session.commit()
    after = s.get(client, token, path, cursor=page["next_cursor"]).json["records"]
    assert sorted(r["external_id"] for r in after) == sorted(["new0", "new1", "new2", behind, ahead])
    assert all(r["fields"]["year_group"] == "8" for r in after if r["external_id"].startswith("p"))
    # Every record reached the consumer, and only changed ones twice.
    assert {r["external_id"] for r in consumed + after} == {f"p{i}" for i in range(20)} | {"new0", "new1", "new2"}


def test_updated_since_returns_only_later_changes(app, client, make):
    _, school, connection, token = _setup(make)
    s.write(connection, s.pupils(5))
    between = utcnow()
    s.write(connection, s.pupils(2, prefix="late"))
    path = s.records_path("pupil_tracking", school.id, "student_basic", "pupils")
    recent = s.get(client, token, path, updated_since=between.isoformat()).json["records"]
    assert sorted(r["external_id"] for r in recent) == ["late0", "late1"]


def test_tombstones_reach_consumers_so_they_delete_too(app, client, make):
    _, school, connection, token = _setup(make, "user_provisioning")
    s.write(connection, [StaffRecord(external_id=f"s{i}", forename="Sam", surname=f"Teacher{i}", roles=("teacher",))
                         for i in range(3)])
    path = s.records_path("user_provisioning", school.id, "staff_basic", "staff")
    _, cursor = _all_pages(client, token, path)
    s.write(connection, [s.tombstone("staff", "staff_basic", "s1")])
    after = s.get(client, token, path, cursor=cursor).json["records"]
    assert len(after) == 1
    assert after[0]["external_id"] == "s1" and after[0]["deleted"] is True
    assert after[0]["fields"] is None and after[0]["deleted_at"]


def test_r13_current_students_features_see_pupils_on_roll_only(app, client, make):
    tracking = s.product("pupil_tracking")
    evaluation = s.product("self_evaluation_early_results")
    school, connection = s.connected_school(make, tracking, evaluation)
    left = s.pupils(1, prefix="leaver", leaving_date=date.today() - timedelta(days=30))
    on_roll = s.pupils(1, prefix="current")
    s.write(connection, [*left, *on_roll])
    s.write(connection, [AttendanceMarkRecord(external_id=f"{p.external_id}-am", pupil_external_id=p.external_id,
                                              session_date=date.today() - timedelta(days=40), session="AM", code="/")
                         for p in (*left, *on_roll)])
    t_token, e_token = s.token_for(tracking), s.token_for(evaluation)

    def ids(token, feature, category, record_type):
        body = s.get(client, token, s.records_path(feature, school.id, category, record_type)).json
        return sorted(r["external_id"] for r in body["records"])

    assert ids(t_token, "pupil_tracking", "student_basic", "pupils") == ["current0"]
    assert ids(e_token, "self_evaluation_early_results", "student_basic", "pupils") == ["current0", "leaver0"]
    assert ids(t_token, "pupil_tracking", "student_attendance_exclusions", "attendance_marks") == ["current0-am"]
    assert ids(e_token, "self_evaluation_early_results", "student_attendance_exclusions", "attendance_marks") == [
        "current0-am", "leaver0-am"]


def test_r51_restricted_subjects_are_never_returned_and_lifting_brings_them_back(app, client, make):
    _, school, connection, token = _setup(make)
    s.write(connection, s.pupils(3))
    s.write(connection, [AttendanceMarkRecord(external_id=f"p{i}-am", pupil_external_id=f"p{i}",
                                              session_date=date(2025, 9, 8), session="AM", code="/") for i in range(3)])
    flag = SubjectFlag(school_id=school.id, subject_kind=SubjectKind.pupil, external_id="p1", kind=FlagKind.restricted,
                       reason_code="accuracy_contested")
    db.session.add(flag)
    db.session.commit()
    pupils_path = s.records_path("pupil_tracking", school.id, "student_basic", "pupils")
    marks_path = s.records_path("pupil_tracking", school.id, "student_attendance_exclusions", "attendance_marks")
    assert sorted(r["external_id"] for r in s.get(client, token, pupils_path).json["records"]) == ["p0", "p2"]
    assert sorted(r["external_id"] for r in s.get(client, token, marks_path).json["records"]) == ["p0-am", "p2-am"]
    flag.lifted_at = utcnow()
    db.session.commit()
    assert len(s.get(client, token, pupils_path).json["records"]) == 3
    assert len(s.get(client, token, marks_path).json["records"]) == 3


def test_a_revoked_connection_serves_nothing_at_once(app, client, make):
    _, school, connection, token = _setup(make)
    s.write(connection, s.pupils(2))
    path = s.records_path("pupil_tracking", school.id, "student_basic", "pupils")
    assert len(s.get(client, token, path).json["records"]) == 2
    connection.state = ConnectionState.revoked
    db.session.commit()
    assert s.get(client, token, path).json["records"] == []


def _demographics(connection):
    s.write(connection, s.pupils(2))
    s.write(connection, [DemographicsRecord(external_id=f"p{i}", fsm=True,
                                            ethnicity="WBRI", first_language="ENG", eal=False, sen_status="K",
                                            sen_need="SLCN") for i in range(2)])


def test_r73_special_category_fields_are_withheld_without_a_policy_document(app, client, make):
    _, school, connection, token = _setup(make)
    _demographics(connection)
    body = s.get(client, token, s.records_path("pupil_tracking", school.id, "student_demographics", "demographics")).json
    for record in body["records"]:
        assert record["withheld"] == "no_policy_document"
        assert record["fields"]["ethnicity"] is None and record["fields"]["sen_status"] is None
        assert record["fields"]["eal"] is None and record["fields"]["first_language"] is None
        assert record["fields"]["fsm"] is True  # not special category: served


def test_r73_r74_with_a_policy_document_values_appear_except_for_an_objecting_pupil(make_app, make):
    app = make_app(SPECIAL_CATEGORY_POLICY_DOCUMENT="DPA-APD-2025-03")
    with app.app_context():
        client = app.test_client()
        _, school, connection, token = _setup(make, "self_evaluation_early_results")
        _demographics(connection)
        db.session.add(SubjectFlag(school_id=school.id, subject_kind=SubjectKind.pupil, external_id="p1",
                                   kind=FlagKind.special_category_objection))
        db.session.commit()
        path = s.records_path("self_evaluation_early_results", school.id, "student_demographics", "demographics")
        by_id = {r["external_id"]: r for r in s.get(client, token, path).json["records"]}
        assert by_id["p0"]["withheld"] is None
        assert by_id["p0"]["fields"]["ethnicity"] == "WBRI" and by_id["p0"]["fields"]["sen_need"] == "SLCN"
        assert by_id["p1"]["withheld"] == "objection"
        assert by_id["p1"]["fields"]["ethnicity"] is None and by_id["p1"]["fields"]["first_language"] is None
        assert by_id["p1"]["fields"]["fsm"] is True


def test_r72_user_provisioning_gets_no_demographics(app, client, make):
    _, school, connection, token = _setup(make, "user_provisioning")
    _demographics(connection)
    resp = s.get(client, token, s.records_path("user_provisioning", school.id, "student_demographics", "demographics"))
    assert resp.status_code == 403 and resp.json["error"]["category"] == "student_demographics"


def test_r68_every_read_is_audited_with_counts_and_no_personal_data(app, client, make):
    p, school, connection, token = _setup(make, "attendance_reporting")
    s.write(connection, s.pupils(1, prefix="x", upn=s.SENTINEL_UPN))
    s.write(connection, [AttendanceMarkRecord(external_id=f"m{i}", pupil_external_id="x0",
                                              session_date=date(2025, 9, 1) + timedelta(days=i // 2),
                                              session="AM" if i % 2 == 0 else "PM", code="/") for i in range(30)])
    s.get(client, token, s.records_path("attendance_reporting", school.id, "student_attendance_exclusions",
                                        "attendance_marks"))
    s.get(client, token, s.records_path("attendance_reporting", school.id, "student_basic", "pupils"))
    reads = list(db.session.execute(select(AuditEntry).where(AuditEntry.action == "api.read")
                                    .order_by(AuditEntry.id)).scalars())
    assert [(e.details["category"], e.details["count"]) for e in reads] == [
        ("student_attendance_exclusions", 30), ("student_basic", 1)]
    assert all(e.organisation_id == school.id and e.details["feature"] == "attendance_reporting"
               and e.target_id == str(p.id) for e in reads)
    dumped = json.dumps([e.details for e in reads])
    assert s.SENTINEL_UPN not in dumped and "Pupil0" not in dumped


def test_a_running_extract_whose_lease_lapsed_no_longer_holds_the_feed_back(app, client, make):
    _, school, connection, token = _setup(make)
    dead = s.run_for(connection, status=RunStatus.running)
    dead.lease_expires_at = utcnow() + timedelta(minutes=5)
    db.session.commit()
    s.write(connection, s.pupils(2), run=dead)
    path = s.records_path("pupil_tracking", school.id, "student_basic", "pupils")
    assert s.get(client, token, path).json["records"] == []
    dead.lease_expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert len(s.get(client, token, path).json["records"]) == 2


@pytest.fixture
def server_zone_not_london(monkeypatch):
    """Run with a server time zone whose date differs from London's right now; yield (server date, London date)."""
    import time
    from datetime import datetime
    from zoneinfo import ZoneInfo

    london = datetime.now(ZoneInfo("Europe/London")).date()
    zone = "Etc/GMT+12" if datetime.now(ZoneInfo("Etc/GMT+12")).date() != london else "Etc/GMT-14"
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        if date.today() == london:
            pytest.skip("no time zone gives a different date right now")
        yield date.today(), london
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_r13_on_roll_is_judged_on_londons_date_not_the_servers(app, client, make, server_zone_not_london):
    server_day, london_day = server_zone_not_london
    tracking = s.product("pupil_tracking")
    school, connection = s.connected_school(make, tracking)
    if server_day < london_day:
        # Left on London's today: off roll in London, still "on roll" by the server's yesterday.
        edge = s.pupils(1, prefix="edge", leaving_date=london_day)
    else:
        # Admitted on London's tomorrow (the server's today): not on roll yet.
        edge = s.pupils(1, prefix="edge", admission_date=server_day)
    s.write(connection, [*edge, *s.pupils(1, prefix="current")])
    body = s.get(client, s.token_for(tracking), s.records_path("pupil_tracking", school.id, "student_basic", "pupils")).json
    assert sorted(r["external_id"] for r in body["records"]) == ["current0"]
