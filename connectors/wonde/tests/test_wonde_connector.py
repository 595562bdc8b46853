"""The Wonde connector over real HTTP: every category field by field, incremental runs, resumes and access."""
from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from datetime import datetime, timezone

import pytest
from portal_wonde.connector import SchoolNotFound

from portal.connectors import CATEGORIES, AuthorisationLost, BadResponse, Checkpoint, Tombstone

# After the synthetic school's own timestamps, before the sandbox clock's "now".
WATERMARK = datetime(2026, 8, 1, tzinfo=timezone.utc)


def run(connector, connection, categories=CATEGORIES, since=None, checkpoint=None):
    """Return the records by kind and the checkpoints of one extract."""
    records, checkpoints = defaultdict(dict), []
    for item in connector.extract(connection, categories, since, checkpoint):
        if isinstance(item, Checkpoint):
            checkpoints.append(item)
        else:
            key = (item.record_kind, item.external_id) if isinstance(item, Tombstone) else item.external_id
            records[item.kind][key] = item
    return records, checkpoints


def test_full_extract_matches_the_school_field_by_field(sandbox, school, connector, connection):
    records, _ = run(connector, connection)
    wid = lambda key: sandbox.wonde_id(school, key)  # noqa: E731

    pupils = records["pupil"]
    assert set(pupils) == {wid(k) for k in school.pupils}
    for pupil in school.pupils.values():
        got = pupils[wid(pupil.key)]
        assert (got.legal_forename, got.legal_surname, got.preferred_forename, got.preferred_surname) == (
            pupil.legal_forename, pupil.legal_surname, pupil.preferred_forename, pupil.preferred_surname)
        assert (got.date_of_birth, got.gender, got.upn, got.year_group) == (
            pupil.date_of_birth, pupil.gender, pupil.upn, pupil.year_group)
        assert got.registration_group == school.groups[pupil.registration_group].name
        assert (got.admission_date, got.leaving_date, got.updated_at) == (
            pupil.admission_date, pupil.leaving_date, pupil.updated_at)

    census = records["demographics"]
    assert set(census) == set(pupils)
    for pupil in school.pupils.values():
        got = census[wid(pupil.key)]
        assert dataclasses.asdict(got) | {"external_id": None, "updated_at": None} == {
            "external_id": None, "updated_at": None, "absent": frozenset(), "fsm": pupil.fsm, "fsm_ever6": pupil.fsm_ever6,
            "pupil_premium": pupil.pupil_premium, "sen_status": pupil.sen_status, "sen_need": pupil.sen_need,
            "first_language": pupil.first_language, "eal": pupil.eal, "ethnicity": pupil.ethnicity,
            "looked_after": pupil.looked_after, "ever_in_care": pupil.ever_in_care,
            "service_child": pupil.service_child}

    assert {k: (s.code, s.name) for k, s in records["subject"].items()} == {
        wid(s.key): (s.code, s.name) for s in school.subjects.values()}
    groups = records["group"]
    assert set(groups) == {wid(g.key) for g in school.groups.values()}
    for group in school.groups.values():
        got = groups[wid(group.key)]
        assert (got.name, got.group_type) == (group.name, group.group_type)
        assert got.subject_external_id == (wid(group.subject_key) if group.subject_key else None)
    assert {(m.group_external_id, m.pupil_external_id) for m in records["membership"].values()} == {
        (wid(g.key), wid(p)) for g in school.groups.values() for p in g.members}
    lessons = records["lesson"]
    assert set(lessons) == {wid(k) for k in school.lessons}
    for lesson in school.lessons.values():
        got = lessons[wid(lesson.key)]
        assert (got.group_external_id, got.period_name, got.day_of_week, got.starts_at, got.ends_at,
                got.lesson_date) == (wid(lesson.group_key), lesson.period_name, lesson.day_of_week,
                                     lesson.starts_at, lesson.ends_at, lesson.lesson_date)

    results = records["assessment_result"]
    assert set(results) == {wid(k) for k in school.results}
    for result in school.results.values():
        got = results[wid(result.key)]
        assert (got.pupil_external_id, got.stage, got.statutory, got.aspect, got.template, got.result,
                got.result_date) == (wid(result.pupil_key), result.stage, result.statutory, result.aspect,
                                     result.template, result.result, result.result_date)

    marks = records["attendance_mark"]
    expected = {(wid(m.pupil_key), m.session_date, m.session): m.code for m in school.marks()}
    assert {(m.pupil_external_id, m.session_date, m.session): m.code for m in marks.values()} == expected
    assert len(marks) == len(expected)
    exclusions = records["exclusion"]
    assert school.exclusions and set(exclusions) == {wid(k) for k in school.exclusions}
    for exclusion in school.exclusions.values():
        got = exclusions[wid(exclusion.key)]
        assert (got.pupil_external_id, got.exclusion_type, got.start_date, got.end_date, got.sessions) == (
            wid(exclusion.pupil_key), exclusion.exclusion_type, exclusion.start_date, exclusion.end_date,
            exclusion.sessions)

    staff = records["staff"]
    assert set(staff) == {wid(k) for k in school.staff}
    for member in school.staff.values():
        got = staff[wid(member.key)]
        assert (got.title, got.forename, got.surname, got.email, got.roles, got.currently_employed) == (
            member.title, member.forename, member.surname, member.email, member.roles, member.currently_employed)


def test_nothing_outside_the_matrix_is_extracted(sandbox, connector, connection):
    records, _ = run(connector, connection)
    values = json.dumps([dataclasses.asdict(r) for kind in records.values() for r in kind.values()], default=str)
    # Free-text notes (R77), staff religion and ethnicity (R76) and other extended fields (R10) never arrive.
    for dropped in ("Free-text note", "Christian", "Muslim", "Not recorded", "British", "01632"):
        assert dropped not in values


def test_only_the_requested_categories_are_read(sandbox, connector, connection):
    records, checkpoints = run(connector, connection, categories=["staff_basic"])
    assert set(records) == {"staff"}
    assert {c.category for c in checkpoints} == {"staff_basic"}
    assert not sandbox.requests("/students") and not sandbox.requests("/attendance")
    assert sandbox.requests("/employees")[0].query["include"] == ["employment_details,contact_details,roles"]


def test_incremental_run_sends_updated_after_and_picks_up_changes_and_deletions(sandbox, school, connector, connection):
    changed = sandbox.mutate(updated=3, deleted=2, leavers=1, marks=2, staff_updated=1, staff_deleted=1)
    sandbox.clear_log()
    records, _ = run(connector, connection, since=WATERMARK)
    wid = lambda key: sandbox.wonde_id(school, key)  # noqa: E731

    list_requests = [r for r in sandbox.requests("/schools/") if r.path.count("/") > 3 and "attendance-codes" not in r.path]
    assert list_requests and all(r.param("updated_after") == "2026-08-01 00:00:00" for r in list_requests)
    assert {p for p in records["pupil"]} == {wid(k) for k in changed["updated"] + changed["leavers"]}
    leaver = records["pupil"][wid(changed["leavers"][0])]
    assert leaver.leaving_date == school.days[-1]
    assert all(records["demographics"][wid(k)].fsm == school.pupils[k].fsm for k in changed["updated"])
    assert {(m.pupil_external_id, m.session_date.isoformat(), m.session) for m in records["attendance_mark"].values()} == {
        (wid(k.split(":")[0]), *k.split(":")[1:]) for k in changed["marks"]}
    assert set(records["staff"]) == {wid(k) for k in changed["staff_updated"]}
    tombstones = {k: t for k, t in records["tombstone"].items() if t.record_kind != "membership"}
    assert {key for key in tombstones} == {("pupil", wid(k)) for k in changed["deleted"]} | {
        ("demographics", wid(k)) for k in changed["deleted"]} | {("staff", wid(k)) for k in changed["staff_deleted"]}
    assert all(t.deleted_at and t.deleted_at > WATERMARK for t in tombstones.values())
    # Groups the leavers and deleted pupils left were updated: their current memberships come again, and
    # the departed pupils' memberships of those groups are tombstoned (Wonde has no deletions for them).
    assert records["group"] and not records["lesson"]
    gone = {t.external_id for t in records["tombstone"].values() if t.record_kind == "membership"}
    departed = changed["deleted"] + changed["leavers"]
    assert {f"{g}:{wid(p)}" for g in records["group"] for p in departed} <= gone
    leaver = school.pupils[changed["leavers"][0]]
    assert f"{wid(leaver.registration_group)}:{wid(leaver.key)}" in gone
    assert set(records["membership"]).isdisjoint(gone)


def test_a_resumed_run_ends_with_the_same_records_as_an_uninterrupted_one(sandbox, make_connector, connection):
    whole, checkpoints = run(make_connector(per_page=25), connection)
    for stop_after in (1, 5, len(checkpoints) // 2, len(checkpoints) - 2):
        resumed = defaultdict(dict)
        seen = 0
        for item in make_connector(per_page=25).extract(connection, CATEGORIES, None, None):
            if isinstance(item, Checkpoint):
                seen += 1
                if seen == stop_after:
                    saved = item
                    break
            else:
                resumed[item.kind][item.external_id] = item
        rest, _ = run(make_connector(per_page=25), connection, checkpoint=saved)
        for kind, items in rest.items():
            resumed[kind].update(items)
        assert resumed == whole, stop_after


def test_checkpoints_follow_every_page(sandbox, make_connector, connection):
    _, checkpoints = run(make_connector(per_page=25), connection, categories=["student_basic"])
    assert len(checkpoints) == len(sandbox.requests("/students"))
    assert json.loads(checkpoints[-1].cursor) == {"step": 2}


def test_revocation_mid_run_stops_at_once(sandbox, make_connector, connection):
    connector = make_connector(per_page=25)
    sandbox.add_fault(match="/students", action="revoke", skip=2)
    seen = []
    with pytest.raises(AuthorisationLost) as caught:
        for item in connector.extract(connection, CATEGORIES, None, None):
            seen.append(item)
    assert caught.value.endpoint == "students" and caught.value.page == 3
    assert sum(isinstance(i, Checkpoint) for i in seen) == 2
    assert connector.retries == 0 and not sandbox.requests("/classes")


def test_bad_row_fails_with_endpoint_and_page(sandbox, connector, connection):
    sandbox.add_fault(match="/employees", body="bad_shape")
    with pytest.raises(BadResponse, match=r"employees \(page 1\)"):
        run(connector, connection, categories=["staff_basic"])


def test_school_is_matched_by_urn_then_by_dfe_number(sandbox, school, connector, connection):
    assert connector.find_school(connection.school)["id"] == sandbox.school_id()
    assert sandbox.requests("/schools/all")[0].param("urn") == school.urn
    by_dfe = connector.find_school({"urn": "999999", "dfe_number": school.dfe_number})
    assert by_dfe["id"] == sandbox.school_id()
    assert sandbox.requests("/schools/all")[-1].query == {"per_page": ["200"], "la_code": ["201"],
                                                          "establishment_number": ["4001"]}
    with pytest.raises(SchoolNotFound) as caught:
        connector.access_status({"urn": "999999", "dfe_number": "9999999"})
    assert caught.value.kind == "school_action"


def test_request_access_then_approval_then_revocation(sandbox, connector, connection):
    school_id = sandbox.school_id()
    sandbox.set_state(school_id, "none")
    assert connector.access_status(connection.school).state == "not_connected"
    status = connector.request_access(connection.school, contacts=[{"name": "Dana Manager", "email": "dm@school.example"}])
    assert (status.state, status.provider_school_id) == ("pending", school_id)
    # Provider-neutral contacts go to Wonde in its own shape.
    assert sandbox.access_requests[school_id] == [{"contacts": [{
        "first_name": "Dana", "last_name": "Manager", "email_address": "dm@school.example", "phone_number": None,
        "notes": "Requested through the MIS connection portal"}]}]
    assert connector.access_status(connection.school).state == "pending"
    sandbox.set_state(school_id, "approved")
    assert connector.access_status(connection.school).state == "approved"
    connector.revoke_access(connection)
    assert sandbox.states[school_id] == "revoked"
    assert connector.access_status(connection.school).state == "revoked"
    with pytest.raises(AuthorisationLost):
        run(connector, connection, categories=["staff_basic"])


def test_a_stored_provider_school_id_skips_matching(sandbox, connector, connection):
    connection.provider_school_id = sandbox.school_id()
    run(connector, connection, categories=["staff_basic"])
    assert not sandbox.requests("/schools/all")


def test_date_of_birth_as_plain_string_is_read(school):
    from portal_wonde.connector import WondeConnector
    from portal_wonde.sandbox import WondeSandbox

    with WondeSandbox([school], dob_as_string=True) as sandbox:
        connector = WondeConnector(sandbox.settings)
        connection = type("C", (), {"provider_school_id": sandbox.school_id(), "school": None})()
        records, _ = run(connector, connection, categories=["student_basic"])
        connector.client.close()
    assert {p.date_of_birth for p in records["pupil"].values()} == {p.date_of_birth for p in school.pupils.values()}


def test_attendance_is_read_page_by_page_at_the_largest_page_size(sandbox, school, make_connector, connection):
    connector = make_connector(per_page=200)
    run(connector, connection, categories=["student_attendance_exclusions"])
    marks = sum(1 for _ in school.marks())
    assert len(sandbox.requests("/attendance/session")) == -(-marks // 200)
    assert connector.pages_read == len(sandbox.requests("/attendance/session")) + len(sandbox.requests("/exclusions"))
    assert connector.requests_made == len(sandbox.requests())
