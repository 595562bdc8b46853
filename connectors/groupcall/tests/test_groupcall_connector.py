"""GroupcallConnector over real HTTP: canonical records, scopes not granted, changesets as tombstones, resuming."""
from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

from portal.connectors import (
    AuthorisationLost,
    Checkpoint,
    DemographicsRecord,
    PupilRecord,
    SyncState,
    Tombstone,
)
from portal_groupcall import mapping
from portal_groupcall.connector import GroupcallConnector
from portal_groupcall.sandbox import DEFAULT_SCOPES

CHANGED_AT = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def connection_for(school):
    return SimpleNamespace(provider_school_id=None, school=SimpleNamespace(dfe_number=school.dfe_number))


def records(connector, school, category, since=None, checkpoint=None):
    """Extract as the engine does: a complete read stores the positions it reached for the next incremental one."""
    items = list(connector.extract(connection_for(school), [category], since, checkpoint))
    reached = {i.key: i.value for i in items if isinstance(i, SyncState)}
    connector.sync_state = {**connector.sync_state, **reached}
    return [i for i in items if not isinstance(i, (Checkpoint, SyncState))]


def by_id(items, cls):
    return {r.external_id: r for r in items if isinstance(r, cls)}


def test_pupils_map_to_canonical_records(connector, school):
    pupils = by_id(records(connector, school, "student_basic"), PupilRecord)
    assert len(pupils) == len(school.pupils)
    source = next(iter(school.pupils.values()))
    got = pupils[source.mis_id]
    assert (got.legal_surname, got.preferred_forename, got.date_of_birth, got.upn) == (
        source.legal_surname, source.preferred_forename, source.date_of_birth, source.upn)
    # XoD sends "Year  7" (two spaces); the canonical year group is "7".
    assert got.year_group == source.year_group
    assert got.registration_group == school.groups[source.registration_group].name
    assert got.updated_at.tzinfo is not None


def test_fields_of_scopes_not_granted_are_not_supplied_never_blank(sandbox, settings, school):
    narrowed = set(DEFAULT_SCOPES) - {"StudentFunding", "StudentFamily", "UPN", "StudentExtended", "SENTypes"}
    sandbox.schools[school.dfe_number].scopes = narrowed
    connector = GroupcallConnector(settings)
    pupils = by_id(records(connector, school, "student_basic"), PupilRecord)
    demographics = by_id(records(connector, school, "student_demographics"), DemographicsRecord)
    for pupil in school.pupils.values():
        basic, census = pupils[pupil.mis_id], demographics[pupil.mis_id]
        assert basic.upn is None and basic.date_of_birth is None and basic.legal_surname is None
        assert basic.preferred_surname == pupil.preferred_surname
        # Not granted: None ("not supplied"), never False or "".
        assert census.fsm is None and census.pupil_premium is None and census.looked_after is None
        assert census.service_child is None and census.sen_need is None
        # EAL comes with StudentDemographic as well as StudentFunding, so it is still supplied.
        assert census.eal is pupil.eal and census.ethnicity == pupil.ethnicity
        assert census.sen_status == pupil.sen_status


def test_sen_need_comes_from_the_sen_endpoint_alongside_the_students_row(connector, school):
    demographics = by_id(records(connector, school, "student_demographics"), DemographicsRecord)
    for pupil in school.pupils.values():
        got = demographics[pupil.mis_id]
        assert (got.sen_status, got.sen_need, got.fsm, got.service_child) == (
            pupil.sen_status, pupil.sen_need, pupil.fsm, pupil.service_child)


def test_absent_and_null_fields_differ_in_mapping():
    absent = mapping.demographics({"Id": "1"})
    blank = mapping.demographics({"Id": "1", "FSMEligible": 0, "SENProvision": None, "ServiceChild": "0"})
    assert (absent.fsm, absent.sen_status, absent.service_child) == (None, None, None)
    assert (blank.fsm, blank.sen_status, blank.service_child) == (False, "N", False)


def test_a_category_whose_scopes_are_not_granted_yields_nothing_and_asks_nothing(sandbox, settings, school):
    sandbox.schools[school.dfe_number].scopes = set(DEFAULT_SCOPES) - {"Attendance", "StudentExclusions"}
    items = records(GroupcallConnector(settings), school, "student_attendance_exclusions")
    assert [(i.code, i.confirmed, i.withheld) for i in items] == [("permission_missing", True, True)]
    assert sandbox.count("/AttendanceForDateRange") == 0 and sandbox.count("/StudentExclusions") == 0


def test_deleted_lists_of_a_changeset_become_tombstones(connector, sandbox, school):
    first = records(connector, school, "student_basic")
    assert not [r for r in first if isinstance(r, Tombstone)]
    done = school.mutate(CHANGED_AT, deleted=2, leavers=1)
    second = records(connector, school, "student_basic", since=CHANGED_AT)
    tombstones = {r.external_id for r in second if isinstance(r, Tombstone)}
    deleted_ids = {p.mis_id for p in school._deleted_pupils.values()}
    assert tombstones == deleted_ids and all(r.record_kind == "pupil" for r in second if isinstance(r, Tombstone))
    # The leaver moved from Students to Leavers: changed, not deleted.
    leaver = school.pupils[done["leavers"][0]]
    changed = by_id(second, PupilRecord)
    assert set(changed) == {leaver.mis_id} and changed[leaver.mis_id].leaving_date == leaver.leaving_date
    assert sandbox.requests()[-1].param("changedRows") != "*"


def test_memberships_and_marks_of_a_deleted_pupil_are_tombstoned_with_canonical_ids(connector, school):
    records(connector, school, "student_timetable")
    records(connector, school, "student_attendance_exclusions")
    done = school.mutate(CHANGED_AT, deleted=1)
    pupil = school._deleted_pupils[done["deleted"][0]]
    timetable = records(connector, school, "student_timetable", since=CHANGED_AT)
    attendance = records(connector, school, "student_attendance_exclusions", since=CHANGED_AT)
    memberships = {r.external_id for r in timetable if isinstance(r, Tombstone) and r.record_kind == "membership"}
    marks = {r.external_id for r in attendance if isinstance(r, Tombstone) and r.record_kind == "attendance_mark"}
    assert memberships and all(m.endswith(f":{pupil.mis_id}") for m in memberships)
    assert marks and all(m.startswith(f"{pupil.mis_id}:") and m.count(":") == 2 for m in marks)


def test_an_interrupted_category_resumes_from_its_checkpoint(connector, sandbox, school):
    items = list(connector.extract(connection_for(school), ["student_basic"], None, None))
    checkpoints = [i for i in items if isinstance(i, Checkpoint) and i.cursor]
    assert len(checkpoints) >= 3
    sandbox.clear_log()
    resumed = [i for i in connector.extract(connection_for(school), ["student_basic"], None, checkpoints[0])
               if isinstance(i, PupilRecord)]
    first_page = {r.external_id for r in items[: items.index(checkpoints[0])] if isinstance(r, PupilRecord)}
    assert {r.external_id for r in resumed} == {r.external_id for r in items if isinstance(r, PupilRecord)} - first_page
    assert sandbox.count("/Students") == len({c.cursor for c in checkpoints}) - 1  # one page a cursor


def test_r5_revoked_school_stops_the_extract_with_authorisation_lost(connector, sandbox, school):
    extract = connector.extract(connection_for(school), ["student_attendance_exclusions"], None, None)
    next(extract)
    sandbox.revoke(school.dfe_number)
    try:
        for _ in extract:
            pass
    except AuthorisationLost as exc:
        assert exc.kind == "school_action"
    else:
        raise AssertionError("the extract went on after the school revoked")


def test_access_status_reflects_groupcall(connector, sandbox, school):
    org = SimpleNamespace(dfe_number=school.dfe_number)
    assert connector.access_status(org).state == "approved"
    sandbox.pause(school.dfe_number)
    assert connector.access_status(org).detail == {"paused": True}
    sandbox.revoke(school.dfe_number)
    assert connector.access_status(org).state == "revoked"
    assert GroupcallConnector({"relying_party": "x"}).request_access(org).state == "pending"


def test_r76_staff_special_category_data_is_never_read(connector, school):
    staff = records(connector, school, "staff_basic")
    assert len(staff) == len(school.staff)
    assert all(set(s.values()) == set(staff[0].values()) for s in staff)
    assert not any("ethnicity" in s.values() or "religion" in s.values() for s in staff)


def test_a_category_that_fails_half_way_asks_again_from_the_old_snapshot(connector, sandbox, school):
    from portal.connectors import ProviderUnavailable

    records(connector, school, "student_timetable")
    school.mutate(CHANGED_AT, deleted=1)
    sandbox.add_fault("http_503", "/Timetable", times=100)  # Groups is read, then Timetable fails
    try:
        records(connector, school, "student_timetable", since=CHANGED_AT)
    except ProviderUnavailable:
        pass
    else:
        raise AssertionError("the Timetable fault did not stop the category")
    sandbox.faults.clear()
    again = records(connector, school, "student_timetable", since=CHANGED_AT)
    assert [r for r in again if isinstance(r, Tombstone) and r.record_kind == "membership"]


def test_lessons_are_stored_per_occurrence_although_they_share_the_lesson_id(connector, sandbox, school):
    from portal.connectors import LessonRecord

    served = sandbox._render(sandbox.schools[school.dfe_number])["sets"]["Lessons"]
    assert len({r["Id"] for r in served}) < len(served), "the sandbox serves several occurrences per lesson Id"
    lessons = [r for r in records(connector, school, "student_timetable") if isinstance(r, LessonRecord)]
    assert len(lessons) == len(served) == len(school.lessons)
    assert len({r.external_id for r in lessons}) == len(lessons)
    # An incremental read reads the timetable whole (no changeset): still one record per occurrence.
    again = [r for r in records(connector, school, "student_timetable", since=CHANGED_AT) if isinstance(r, LessonRecord)]
    assert {r.external_id for r in again} == {r.external_id for r in lessons}
    assert not [r for r in sandbox.requests() if r.path.endswith("/Timetable/") or r.path.endswith("/Timetable")
                if r.param("changedrows") is not None]


def test_a_lesson_occurrence_id_keeps_lesson_period_and_date():
    row = {"Id": "576", "PeriodId": "9001", "ClassId": "12", "Period": "Mon:3",
           "StartDateTime": "2026-01-05T09:00:00", "EndDateTime": "2026-01-05T10:00:00"}
    week_later = {**row, "PeriodId": "9101", "StartDateTime": "2026-01-12T09:00:00", "EndDateTime": "2026-01-12T10:00:00"}
    first, second = mapping.lesson(row), mapping.lesson(week_later)
    assert first.external_id == "576:9001:2026-01-05" and second.external_id == "576:9101:2026-01-12"
    # A PeriodId that names a weekly slot, not one occurrence: the date still tells the weeks apart.
    same_slot = mapping.lesson({**week_later, "PeriodId": "9001"})
    assert same_slot.external_id != first.external_id
    assert (first.lesson_date.isoformat(), first.starts_at, first.period_name) == ("2026-01-05", "09:00", "3")
