"""Mapping tolerates the shapes the spec lists as possible: nulls, strings for bools, descriptions for codes."""
from __future__ import annotations

from datetime import date

import pytest
from portal_wonde.mapping import (
    map_class,
    map_deletion,
    map_demographics,
    map_employee,
    map_exclusion,
    map_lesson,
    map_pupil,
    map_result,
    normalise_bool,
    normalise_sen_status,
)


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), ("Y", True), ("true", True), ("1", True), (1, True),
    (False, False), ("N", False), ("false", False), ("0", False), (None, None), ("unknown", None),
])
def test_booleans_arrive_as_text_or_bools(value, expected):
    assert normalise_bool(value) is expected


@pytest.mark.parametrize(("value", "expected"), [
    ("K", "K"), ("e", "E"), ("N", "N"), ("SEN Support", "K"), ("Education, Health and Care Plan", "E"),
    ("EHC Plan", "E"), ("Statement", "E"), ("No Special Educational Need", "N"), (None, None), ("", None),
])
def test_sen_status_becomes_a_dfe_code(value, expected):
    assert normalise_sen_status(value) == expected


@pytest.mark.parametrize("year", [None, {"data": None}, {}])
def test_null_includes_in_any_form_are_accepted(year):
    student = {"id": "A1", "forename": "Ann", "surname": "Lee", "education_details": {"data": {"current_nc_year": None}},
               "registration": year, "year": year}
    pupil = map_pupil(student)
    assert (pupil.year_group, pupil.registration_group) == (None, None)
    # Without legal names the preferred names stand in.
    assert (pupil.legal_forename, pupil.legal_surname) == ("Ann", "Lee")


def test_registration_group_falls_back_to_groups_include():
    student = {"id": "A1", "groups": {"data": [{"name": "Y7 House", "type": "HOUSE"}, {"name": "7C", "type": "REGISTRATION"}]},
               "date_of_birth": "2013-04-02", "gender": "female"}
    pupil = map_pupil(student)
    assert (pupil.registration_group, pupil.date_of_birth, pupil.gender) == ("7C", date(2013, 4, 2), "F")


def test_demographics_missing_fields_stay_unknown_and_descriptions_become_codes():
    census = map_demographics({"id": "A1", "extended_details": {"data": {
        "ethnicity": "White - British", "first_language": "Polish", "english_as_additional_language_status": "EAL",
        "free_school_meals": "Y"}}})
    assert (census.ethnicity, census.first_language, census.eal, census.fsm) == ("WBRI", "POL", True, True)
    assert census.pupil_premium is None and census.looked_after is None and census.sen_status is None
    assert map_demographics({"id": "A2"}).fsm is None


def test_class_subject_may_be_a_bare_id_or_an_include():
    bare = list(map_class({"id": "C1", "name": "7A/Ma1", "subject": "S1"}))
    wrapped = list(map_class({"id": "C1", "name": "7A/Ma1", "subject": {"data": {"id": "S1", "name": "Maths"}},
                              "students": {"data": [{"id": "P1"}]}}))
    assert bare[0].subject_external_id == wrapped[0].subject_external_id == "S1"
    assert [(m.group_external_id, m.pupil_external_id) for m in wrapped[1:]] == [("C1", "P1")]


def test_lesson_without_period_include_uses_its_start_time():
    lesson = map_lesson({"id": "L1", "class": "C1", "period": "PER1",
                         "start_at": {"date": "2026-03-03 09:10:00.000000", "timezone_type": 3, "timezone": "Europe/London"}})
    assert (lesson.group_external_id, lesson.day_of_week, lesson.starts_at, lesson.lesson_date) == (
        "C1", 2, "09:10", date(2026, 3, 3))


@pytest.mark.parametrize(("kind", "expected"), [("Fixed Term", "fixed"), ("PERMANENT", "permanent"),
                                               ("suspension", "fixed"), (None, None)])
def test_exclusion_types(kind, expected):
    exclusion = map_exclusion({"id": "X1", "student": {"data": {"id": "P1"}}, "type": kind, "length": "4",
                               "reason": "PD", "comments": "text"})
    assert (exclusion.exclusion_type, exclusion.pupil_external_id, exclusion.sessions) == (expected, "P1", 4)


def test_result_stage_and_statutory_from_names():
    result = map_result({"id": "R1", "student": "P1", "result": "EXS",
                         "aspect": {"data": {"name": "Reading TA"}}, "resultset": {"data": {"name": "KS1 Statutory 2023"}}})
    assert (result.stage, result.statutory, result.template) == ("KS1", True, "KS1 Statutory 2023")
    current = map_result({"id": "R2", "student": "P1", "result": "B", "aspect": {"data": {"name": "A-level Maths"}}})
    assert (current.stage, current.statutory) == ("A-level", False)


def test_staff_role_falls_back_to_role_text_and_email_to_primary():
    staff = map_employee({"id": "E1", "forename": "Sam", "employment_details": {"data": {"current": "true", "role_text": "Cover Supervisor"}},
                          "contact_details": {"data": {"emails": {"primary": "s@x.example", "work": None}}}})
    assert (staff.roles, staff.email, staff.currently_employed) == (("Cover Supervisor",), "s@x.example", True)


def test_deletions_restored_or_of_other_categories_are_skipped():
    entry = {"type": "student", "id": "A1", "deleted_at": {"date": "2026-01-01 00:00:00.000000", "timezone_type": 3, "timezone": "UTC"}}
    assert map_deletion(entry, "student_basic").record_kind == "pupil"
    assert map_deletion(entry, "staff_basic") is None
    assert map_deletion({**entry, "restored_at": entry["deleted_at"]}, "student_basic") is None


def test_row_without_id_is_refused():
    with pytest.raises(ValueError):
        map_pupil({"forename": "No id"})


def test_mark_code_from_include_or_from_the_school_code_list():
    from portal_wonde.mapping import map_mark

    day = {"date": "2025-09-03 00:00:00.000000", "timezone_type": 3, "timezone": "Europe/London"}
    wrapped = map_mark({"student": "P1", "date": day, "session": "pm", "attendance_code": {"data": {"id": "C9", "code": "I"}},
                        "comment": "free text"})
    bare = map_mark({"student": "P1", "date": day, "session": "PM", "attendance_code": "C9"}, {"C9": "I"})
    assert wrapped == bare
    assert (bare.external_id, bare.code, bare.session_date) == ("P1:2025-09-03:PM", "I", date(2025, 9, 3))
