"""Wonde's shapes to the portal's canonical records; fields outside the usage matrix are dropped here (R10)."""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from portal.connectors import (
    AssessmentRecord,
    AttendanceMarkRecord,
    DemographicsRecord,
    ExclusionRecord,
    GroupRecord,
    LessonRecord,
    MembershipRecord,
    PupilRecord,
    StaffRecord,
    SubjectRecord,
    Tombstone,
    normalise_bool,
    normalise_ethnicity,
    normalise_gender,
    normalise_language,
    normalise_sen_status,
    normalise_year_group,
)
from portal_wonde.client import parse_wonde_date, parse_wonde_datetime

__all__ = [
    "map_class",
    "map_deletion",
    "map_demographics",
    "map_employee",
    "map_exclusion",
    "map_group",
    "map_lesson",
    "map_mark",
    "map_pupil",
    "map_result",
    "map_subject",
    "normalise_bool",
    "normalise_sen_status",
]

WEEKDAYS = {"monday": 1, "tuesday": 2, "wednesday": 3, "thursday": 4, "friday": 5, "saturday": 6, "sunday": 7}
STAGE_PATTERN = re.compile(r"\b(EYFS|KS[1-5]|GCSE|A[- ]?level)\b", re.IGNORECASE)
GROUP_TYPES = {"REGISTRATION": "registration", "YEAR": "year", "HOUSE": "house"}


# ---------------------------------------------------------------- tolerant readers


def included(obj: Mapping[str, Any], key: str) -> Any:
    """Return an include's payload: the object or list inside ``{"data": ...}``, or None when absent or null."""
    value = obj.get(key)
    # type() first: decoded JSON is plain dicts and strings (a bare id), and the ABC check costs more on the hot path.
    if type(value) is dict or (type(value) is not str and isinstance(value, Mapping)):
        return value.get("data") if "data" in value else value
    return None


def ref_id(obj: Mapping[str, Any], key: str) -> str | None:
    """Return the id a key refers to, whether it holds a bare id or an include wrapper."""
    value = obj.get(key)
    if type(value) is str:
        return value or None
    if type(value) is dict or isinstance(value, Mapping):
        data = value.get("data", value)
        return str(data["id"]) if isinstance(data, Mapping) and data.get("id") is not None else None
    if value is None or value == "":
        return None
    return str(value)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _updated(obj: Mapping[str, Any]) -> datetime | None:
    return parse_wonde_datetime(obj.get("updated_at"))


def _id(obj: Mapping[str, Any]) -> str:
    value = obj.get("id")
    if value is None or value == "":
        raise ValueError("record without an id")
    return str(value)


# ---------------------------------------------------------------- student_basic and student_demographics


def map_pupil(student: Mapping[str, Any], leaving: bool = False) -> PupilRecord:
    """Map a Wonde student (with education_details, registration, year) to a PupilRecord."""
    education = included(student, "education_details") or {}
    registration = included(student, "registration")
    year = included(student, "year")
    year_group = normalise_year_group(education.get("current_nc_year"))
    if year_group is None and isinstance(year, Mapping):
        year_group = normalise_year_group(year.get("code")) or normalise_year_group(year.get("name"))
    reg_name = _text(registration.get("name")) if isinstance(registration, Mapping) else None
    if reg_name is None:
        groups = included(student, "groups") or []
        reg_name = next((_text(g.get("name")) for g in groups if isinstance(g, Mapping)
                         and str(g.get("type", "")).upper() == "REGISTRATION"), None)
    absent = {f for f, key in (("date_of_birth", "date_of_birth"), ("gender", "gender")) if key not in student}
    absent.update(f for f, key in (("upn", "upn"), ("admission_date", "admission_date"), ("leaving_date", "leaving_date"))
                  if key not in education)
    return PupilRecord(
        external_id=_id(student),
        updated_at=_updated(student),
        # A key Wonde left out (a field permission the school has not approved) is absent, not null.
        absent=frozenset(absent),
        legal_forename=_text(student.get("legal_forename")) or _text(student.get("forename")),
        legal_surname=_text(student.get("legal_surname")) or _text(student.get("surname")),
        preferred_forename=_text(student.get("forename")),
        preferred_surname=_text(student.get("surname")),
        date_of_birth=parse_wonde_date(student.get("date_of_birth")),
        gender=normalise_gender(student.get("gender")),
        upn=_text(education.get("upn")),
        year_group=year_group,
        registration_group=reg_name,
        admission_date=parse_wonde_date(education.get("admission_date")),
        leaving_date=parse_wonde_date(education.get("leaving_date")),
    )


# Canonical demographics field -> the extended_details keys that carry it (absent when none is sent).
DEMOGRAPHICS_KEYS = {
    "fsm": ("free_school_meals",), "fsm_ever6": ("free_school_meals_6",), "pupil_premium": ("premium_pupil_indicator",),
    "sen_status": ("sen_status",), "first_language": ("first_language", "home_language"),
    "eal": ("english_as_additional_language", "english_as_additional_language_status"), "ethnicity": ("ethnicity",),
    "looked_after": ("in_lea_care",), "ever_in_care": ("ever_in_care",),
    "service_child": ("service_children_indicator",),
}


def map_demographics(student: Mapping[str, Any]) -> DemographicsRecord:
    """Map a student's extended_details (and sen_needs) to a DemographicsRecord keyed by the student's id.

    Missing fields stay None: the school may not have granted that permission.
    """
    ext = included(student, "extended_details") or {}
    eal = normalise_bool(ext.get("english_as_additional_language"))
    if eal is None:
        status = _text(ext.get("english_as_additional_language_status"))
        if status:
            lowered = status.lower()
            eal = False if lowered.startswith(("not", "no", "english")) else True if "eal" in lowered else normalise_bool(status)
    needs = included(student, "sen_needs") or []
    sen_need = None
    if isinstance(needs, list) and needs:
        ranked = sorted((n for n in needs if isinstance(n, Mapping)), key=lambda n: n.get("rank") or 99)
        sen_need = _text(ranked[0].get("type") or ranked[0].get("code")) if ranked else None
    return DemographicsRecord(
        external_id=_id(student),
        updated_at=_updated(student),
        absent=frozenset(f for f, keys in DEMOGRAPHICS_KEYS.items() if not any(k in ext for k in keys))
        | (frozenset() if "sen_needs" in student else frozenset({"sen_need"})),
        fsm=normalise_bool(ext.get("free_school_meals")),
        fsm_ever6=normalise_bool(ext.get("free_school_meals_6")),
        pupil_premium=normalise_bool(ext.get("premium_pupil_indicator")),
        sen_status=normalise_sen_status(ext.get("sen_status")),
        sen_need=sen_need,
        first_language=normalise_language(ext.get("first_language") or ext.get("home_language")),
        eal=eal,
        ethnicity=normalise_ethnicity(ext.get("ethnicity")),
        looked_after=normalise_bool(ext.get("in_lea_care")),
        ever_in_care=normalise_bool(ext.get("ever_in_care")),
        service_child=normalise_bool(ext.get("service_children_indicator")),
    )


# ---------------------------------------------------------------- student_timetable


def map_subject(subject: Mapping[str, Any]) -> SubjectRecord:
    return SubjectRecord(external_id=_id(subject), updated_at=_updated(subject), code=_text(subject.get("code")),
                         name=_text(subject.get("name")))


def _members(group_id: str, owner: Mapping[str, Any], updated: datetime | None) -> Iterator[MembershipRecord]:
    for student in included(owner, "students") or []:
        if isinstance(student, Mapping) and student.get("id"):
            pupil_id = str(student["id"])
            yield MembershipRecord(external_id=f"{group_id}:{pupil_id}", updated_at=updated,
                                   group_external_id=group_id, pupil_external_id=pupil_id)


def map_class(cls: Mapping[str, Any]) -> Iterator[GroupRecord | MembershipRecord]:
    """Map a Wonde class (a teaching group, with its students include) to a group and its memberships."""
    class_id, updated = _id(cls), _updated(cls)
    yield GroupRecord(external_id=class_id, updated_at=updated, name=_text(cls.get("name")), group_type="class",
                      subject_external_id=ref_id(cls, "subject"))
    yield from _members(class_id, cls, updated)


def map_group(group: Mapping[str, Any]) -> Iterator[GroupRecord | MembershipRecord]:
    """Map a Wonde group (registration, year, house...) to a group and its memberships; notes are dropped."""
    group_id, updated = _id(group), _updated(group)
    group_type = GROUP_TYPES.get(str(group.get("type") or "").upper(), "other")
    yield GroupRecord(external_id=group_id, updated_at=updated, name=_text(group.get("name")), group_type=group_type)
    yield from _members(group_id, group, updated)


def map_lesson(lesson: Mapping[str, Any]) -> LessonRecord:
    """Map a dated Wonde lesson with its period (and class) to a LessonRecord."""
    period = included(lesson, "period")
    start = parse_wonde_datetime(lesson.get("start_at"))
    end = parse_wonde_datetime(lesson.get("end_at"))
    period_name = day = starts = ends = None
    if isinstance(period, Mapping):
        period_name = _text(period.get("name"))
        day = WEEKDAYS.get(str(period.get("day") or "").strip().lower())
        starts = _hhmm(period.get("start_time"))
        ends = _hhmm(period.get("end_time"))
    return LessonRecord(
        external_id=_id(lesson),
        updated_at=_updated(lesson),
        group_external_id=ref_id(lesson, "class") or _text(lesson.get("class_id")),
        period_name=period_name,
        day_of_week=day or (start.isoweekday() if start else None),
        starts_at=starts or (start.strftime("%H:%M") if start else None),
        ends_at=ends or (end.strftime("%H:%M") if end else None),
        lesson_date=start.date() if start else None,
    )


def _hhmm(value: Any) -> str | None:
    text = _text(value)
    return text[:5] if text else None


# ---------------------------------------------------------------- student_assessment


def map_result(result: Mapping[str, Any]) -> AssessmentRecord:
    """Map a Wonde assessment result with its aspect, template and result set to an AssessmentRecord."""
    aspect = included(result, "aspect") or {}
    template = included(result, "template") or {}
    resultset = included(result, "resultset") or {}
    aspect_name = _text(aspect.get("name")) if isinstance(aspect, Mapping) else None
    template_name = _text(template.get("name")) if isinstance(template, Mapping) else None
    resultset_name = _text(resultset.get("name")) if isinstance(resultset, Mapping) else None
    stage = None
    for source in (aspect.get("key_stage") if isinstance(aspect, Mapping) else None, aspect_name, template_name,
                   resultset_name):
        if source and (match := STAGE_PATTERN.search(str(source))):
            stage = match.group(1).upper().replace("A LEVEL", "A-level").replace("A-LEVEL", "A-level")
            if stage == "ALEVEL":
                stage = "A-level"
            break
    statutory = bool(normalise_bool(template.get("statutory")) if isinstance(template, Mapping) else False) or any(
        "statutory" in (name or "").lower() for name in (template_name, resultset_name))
    return AssessmentRecord(
        external_id=_id(result),
        updated_at=_updated(result),
        pupil_external_id=ref_id(result, "student") or _text(result.get("student_id")) or "",
        stage=stage,
        statutory=statutory,
        aspect=aspect_name,
        template=template_name or resultset_name,
        result=_text(result.get("result") if result.get("result") is not None else result.get("grade")),
        result_date=parse_wonde_date(result.get("date") or result.get("collected_at") or result.get("created_at")),
    )


# ---------------------------------------------------------------- student_attendance_exclusions


def map_mark(mark: Mapping[str, Any], codes: Mapping[str, str] | None = None) -> AttendanceMarkRecord:
    """Map a session mark; the code comes from the attendance_code include or the school's code list.

    Comments are free text and never extracted (R77). The external id is pupil:date:session, which
    stays the same if Wonde re-issues the mark's own id.
    """
    pupil = ref_id(mark, "student") or _text(mark.get("student_id")) or ""
    day = parse_wonde_date(mark.get("date"))
    session = str(mark.get("session") or "").strip().upper() or "AM"
    code_obj = included(mark, "attendance_code")
    if isinstance(code_obj, Mapping):
        code = _text(code_obj.get("code")) or ""
    else:
        code_ref = ref_id(mark, "attendance_code") or _text(mark.get("attendance_code_id"))
        code = (codes or {}).get(code_ref or "", "") if code_ref else ""
    return AttendanceMarkRecord(
        external_id=f"{pupil}:{day.isoformat() if day else ''}:{session}",
        updated_at=_updated(mark),
        pupil_external_id=pupil,
        session_date=day,
        session=session,
        code=code,
    )


def map_exclusion(exclusion: Mapping[str, Any]) -> ExclusionRecord:
    """Map a Wonde exclusion; the reason and comments are dropped (R77)."""
    kind = str(exclusion.get("type") or exclusion.get("exclusion_type") or "").strip().lower()
    exclusion_type = "permanent" if "perm" in kind else "fixed" if kind else None
    sessions = exclusion.get("sessions", exclusion.get("session_count", exclusion.get("length")))
    try:
        sessions = int(sessions) if sessions not in (None, "") else None
    except (TypeError, ValueError):
        sessions = None
    return ExclusionRecord(
        external_id=_id(exclusion),
        updated_at=_updated(exclusion),
        pupil_external_id=ref_id(exclusion, "student") or _text(exclusion.get("student_id")) or "",
        exclusion_type=exclusion_type,
        start_date=parse_wonde_date(exclusion.get("start_date")),
        end_date=parse_wonde_date(exclusion.get("end_date")),
        sessions=sessions,
    )


# ---------------------------------------------------------------- staff_basic


def map_employee(employee: Mapping[str, Any]) -> StaffRecord:
    """Map a Wonde employee; only title, name, email, roles and current employment are kept (R76)."""
    employment = included(employee, "employment_details") or {}
    contact = included(employee, "contact_details") or {}
    emails = contact.get("emails") if isinstance(contact, Mapping) else None
    email = None
    if isinstance(emails, Mapping):
        email = _text(emails.get("work")) or _text(emails.get("primary")) or _text(emails.get("email"))
    roles: list[str] = []
    for role in included(employee, "roles") or []:
        name = _text(role.get("name") or role.get("role")) if isinstance(role, Mapping) else _text(role)
        if name and name not in roles:
            roles.append(name)
    if not roles and isinstance(employment, Mapping) and _text(employment.get("role_text")):
        roles.append(_text(employment.get("role_text")))
    return StaffRecord(
        external_id=_id(employee),
        updated_at=_updated(employee),
        title=_text(employee.get("title")),
        forename=_text(employee.get("forename")),
        surname=_text(employee.get("surname")),
        email=email,
        roles=tuple(roles),
        currently_employed=normalise_bool(employment.get("current")) if isinstance(employment, Mapping) else None,
    )


# ---------------------------------------------------------------- deletions

# Wonde deletion type -> the records it removes, per category.
DELETION_KINDS: dict[str, tuple[tuple[str, str], ...]] = {
    "student": (("pupil", "student_basic"), ("demographics", "student_demographics")),
    "employee": (("staff", "staff_basic"),),
    "class": (("group", "student_timetable"),),
    "group": (("group", "student_timetable"),),
    "subject": (("subject", "student_timetable"),),
}


def map_deletion(entry: Mapping[str, Any], category: str) -> Tombstone | None:
    """Map a deletions-feed entry to a tombstone for the category, or None (restored, or not this category)."""
    if entry.get("restored_at"):
        return None  # the record is back and arrives with its list, updated
    kinds = DELETION_KINDS.get(str(entry.get("type") or "").strip().lower(), ())
    for record_kind, record_category in kinds:
        if record_category == category:
            deleted = parse_wonde_datetime(entry.get("deleted_at"))
            return Tombstone(external_id=_id(entry), updated_at=deleted, record_kind=record_kind,
                             record_category=record_category, deleted_at=deleted)
    return None
