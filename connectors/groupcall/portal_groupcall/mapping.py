"""Map Xporter on Demand rows to the portal's canonical records; a field left out (scope not granted) is marked absent, not null."""
from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

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
    normalise_ethnicity,
    normalise_gender,
    normalise_language,
    normalise_sen_status,
    normalise_year_group,
)

# XoD date-times carry no offset; they are UK time (spec §4.3, INF).
UK = ZoneInfo("Europe/London")
MISSING = object()
GROUP_TYPES = {"yeargrp": "year", "reggrp": "registration", "teachinggrp": "class", "housegrp": "house"}
EXCLUSION_TYPES = {"FIXD": "fixed", "RFIX": "fixed", "LNCH": "fixed", "PERM": "permanent", "RPER": "permanent"}
STAGES = ("EYFS", "KS1", "KS2", "KS3", "KS4", "KS5", "GCSE", "A-level")


def field(row: Mapping[str, Any], *names: str) -> Any:
    """Return the first of the names present in the row (case-insensitive), or MISSING when none is.

    MISSING means "not supplied" (the scope was not granted); a present null is the MIS's own blank.
    """
    for name in names:
        if name in row:
            return row[name]
    lowered = {k.lower(): k for k in row}
    for name in names:
        key = lowered.get(name.lower())
        if key is not None:
            return row[key]
    return MISSING


def text(row: Mapping[str, Any], *names: str) -> str | None:
    value = field(row, *names)
    if value is MISSING or value is None:
        return None
    value = str(value).strip()
    return value or None


def flag(row: Mapping[str, Any], *names: str) -> bool | None:
    """XoD flags are 0/1 ints, except ServiceChild which arrives as "0"/"1"; absent or null is None."""
    value = field(row, *names)
    if value is MISSING or value is None or value == "":
        return None
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "y", "yes", "t")
    return bool(value)


def day(row: Mapping[str, Any], *names: str) -> date | None:
    value = text(row, *names)
    return date.fromisoformat(value[:10]) if value else None


def stamp(row: Mapping[str, Any]) -> datetime | None:
    """LastUpdated: naive UK time with 0..7 fractional digits."""
    value = text(row, "LastUpdated")
    if not value:
        return None
    value = value.rstrip("Z")
    if "." in value:
        head, frac = value.split(".", 1)
        value = f"{head}.{(frac + '000000')[:6]}"
    return datetime.fromisoformat(value).replace(tzinfo=UK)


# Canonical field -> the XoD keys that carry it. A field none of whose keys is in the row was left
# out by Groupcall (its scope is not granted): the record marks it absent, so the store keeps what
# it holds (spec §3.3: "left out of the record entirely. They are not sent as null").
PUPIL_SOURCES = {
    "legal_forename": ("LegalForename",), "legal_surname": ("LegalSurname",), "preferred_forename": ("Forename",),
    "preferred_surname": ("Surname",), "date_of_birth": ("DateofBirth", "DateOfBirth"), "gender": ("Gender",),
    "upn": ("UPN",), "year_group": ("YearGroup",), "registration_group": ("RegGroup",),
    "admission_date": ("EntryDate",), "leaving_date": ("LeavingDate",),
}
DEMOGRAPHICS_SOURCES = {
    "fsm": ("FSMEligible", "FsmEligible"), "fsm_ever6": ("FSMEver6",), "pupil_premium": ("PupilPremium",),
    "sen_status": ("SENProvision",), "first_language": ("FirstLanguageCode",), "eal": ("EAL",),
    "ethnicity": ("EthnicityCode",), "looked_after": ("InLeaCare",), "ever_in_care": ("EverInCare",),
    "service_child": ("ServiceChild",),
}
STAFF_SOURCES = {
    "title": ("Title",), "forename": ("Forename",), "surname": ("Surname",), "email": ("WorkEmail",),
    "roles": ("Roles",),
}


def absent_fields(row: Mapping[str, Any], sources: Mapping[str, tuple[str, ...]]) -> frozenset[str]:
    """Return the canonical fields whose XoD keys are all missing from the row (not granted, not null)."""
    return frozenset(name for name, keys in sources.items() if field(row, *keys) is MISSING)


def pupil(row: Mapping[str, Any]) -> PupilRecord:
    return PupilRecord(
        external_id=str(row["Id"]),
        absent=absent_fields(row, PUPIL_SOURCES),
        updated_at=stamp(row),
        legal_forename=text(row, "LegalForename"),
        legal_surname=text(row, "LegalSurname"),
        preferred_forename=text(row, "Forename"),
        preferred_surname=text(row, "Surname"),
        date_of_birth=day(row, "DateofBirth", "DateOfBirth"),
        gender=normalise_gender(text(row, "Gender")),
        upn=text(row, "UPN"),
        year_group=normalise_year_group(text(row, "YearGroup")),
        registration_group=text(row, "RegGroup"),
        admission_date=day(row, "EntryDate"),
        leaving_date=day(row, "LeavingDate"),
    )


def demographics(row: Mapping[str, Any], sen_need: Any = MISSING) -> DemographicsRecord:
    """Census fields of a Students row; ``sen_need`` comes from the SEN endpoint when its scope is granted."""
    sen = field(row, "SENProvision")
    absent = absent_fields(row, DEMOGRAPHICS_SOURCES) | ({"sen_need"} if sen_need is MISSING else set())
    return DemographicsRecord(
        external_id=str(row["Id"]),
        absent=frozenset(absent),
        updated_at=stamp(row),
        fsm=flag(row, "FSMEligible", "FsmEligible"),
        fsm_ever6=flag(row, "FSMEver6"),
        pupil_premium=flag(row, "PupilPremium"),
        # Present but null: the MIS records no SEN provision, which DfE codes as N (README assumption).
        sen_status=None if sen is MISSING else normalise_sen_status(sen) if str(sen or "").strip() else "N",
        sen_need=None if sen_need is MISSING else sen_need,
        first_language=normalise_language(text(row, "FirstLanguageCode")),
        eal=flag(row, "EAL"),
        ethnicity=normalise_ethnicity(text(row, "EthnicityCode")),
        looked_after=flag(row, "InLeaCare"),
        ever_in_care=flag(row, "EverInCare"),
        service_child=flag(row, "ServiceChild"),
    )


def subject(row: Mapping[str, Any]) -> SubjectRecord:
    return SubjectRecord(external_id=str(row["Id"]), updated_at=stamp(row), code=text(row, "Code"), name=text(row, "Name"))


def group(row: Mapping[str, Any], subject_ids_by_code: Mapping[str, str]) -> GroupRecord:
    kind = (text(row, "Type") or "").lower()
    subject_id = text(row, "SubjectLocalId")
    if subject_id is None and text(row, "SubjectCode"):
        subject_id = subject_ids_by_code.get(text(row, "SubjectCode"))
    return GroupRecord(
        external_id=str(row["Id"]),
        updated_at=stamp(row),
        name=text(row, "Name"),
        group_type=GROUP_TYPES.get(kind, "other"),
        subject_external_id=subject_id,
    )


def membership(row: Mapping[str, Any]) -> MembershipRecord:
    group_id, pupil_id = str(row["GroupId"]), str(row["StudentId"])
    return MembershipRecord(
        external_id=membership_id(group_id, pupil_id),
        updated_at=stamp(row),
        group_external_id=group_id,
        pupil_external_id=pupil_id,
    )


def membership_id(group_id: str, pupil_id: str) -> str:
    return f"{group_id}:{pupil_id}"


def lesson_occurrence_id(lesson_id: Any, period_id: Any, on: Any) -> str:
    """The canonical id of one lesson occurrence: "<lesson Id>:<PeriodId>:<date>".

    XoD's ``Id`` names the lesson, shared by every week it is taught; ``PeriodId`` names the
    occurrence (spec §9.5). The date is kept too, so an MIS whose PeriodId names a weekly slot
    rather than one occurrence still gives one row per lesson taught.
    """
    return f"{lesson_id}:{period_id if period_id not in (None, '') else '-'}:{on if on else '-'}"


def lesson(row: Mapping[str, Any]) -> LessonRecord:
    starts = datetime.fromisoformat(row["StartDateTime"]) if row.get("StartDateTime") else None
    ends = datetime.fromisoformat(row["EndDateTime"]) if row.get("EndDateTime") else None
    period = text(row, "Period")
    # Period is "Mon:3" or "Mon:P3": the day, then the period's name.
    period_name = period.split(":", 1)[1] if period and ":" in period else period
    return LessonRecord(
        external_id=lesson_occurrence_id(row["Id"], row.get("PeriodId"), starts.date().isoformat() if starts else None),
        updated_at=stamp(row),
        group_external_id=text(row, "ClassId"),
        period_name=period_name,
        day_of_week=starts.isoweekday() if starts else None,
        starts_at=starts.strftime("%H:%M") if starts else None,
        ends_at=ends.strftime("%H:%M") if ends else None,
        lesson_date=starts.date() if starts else None,
    )


def stage_of(aspect: Mapping[str, Any], result_set: Mapping[str, Any]) -> str | None:
    """The key stage of a result: the aspect's description when it names one, else a stage named in the names."""
    for candidate in (text(aspect, "Description"), text(aspect, "Name"), text(result_set, "Name")):
        if not candidate:
            continue
        if candidate in STAGES:
            return candidate
        for stage in STAGES:
            if re.search(rf"\b{re.escape(stage)}\b", candidate):
                return stage
    return None


def assessment(row: Mapping[str, Any], aspects: Mapping[str, Mapping[str, Any]], result_sets: Mapping[str, Mapping[str, Any]]) -> AssessmentRecord:
    aspect = aspects.get(str(row.get("AspectId")), {})
    result_set = result_sets.get(str(row.get("ResultSetId")), {})
    supplier = (text(result_set, "Supplier") or "").lower()
    return AssessmentRecord(
        external_id=str(row["Id"]),
        updated_at=stamp(row),
        pupil_external_id=str(row["StudentId"]),
        stage=stage_of(aspect, result_set),
        # Statutory results are the DfE's (key stage tests and assessments); README explains the rule.
        statutory=supplier in ("dfe", "sta", "statutory") or "statutory" in (text(result_set, "Name") or "").lower(),
        aspect=text(aspect, "Name"),
        template=text(result_set, "Name"),
        result=text(row, "Result"),
        result_date=day(row, "ResultDate"),
    )


def attendance_mark(row: Mapping[str, Any]) -> AttendanceMarkRecord:
    pupil_id, on, session = str(row["StudentId"]), day(row, "Date"), (text(row, "Session") or "AM").upper()
    return AttendanceMarkRecord(
        external_id=mark_id(pupil_id, on, session),
        updated_at=stamp(row),
        pupil_external_id=pupil_id,
        session_date=on,
        session=session,
        code=str(row.get("Mark") or ""),
    )


def mark_id(pupil_id: str, on: date | None, session: str) -> str:
    return f"{pupil_id}:{on.isoformat() if on else ''}:{session}"


def mark_id_from_xod(xod_id: str) -> str:
    """XoD's mark id "9919.2016-08-26.AM" -> the canonical "9919:2016-08-26:AM"."""
    pupil_id, on, session = xod_id.rsplit(".", 2)
    return f"{pupil_id}:{on}:{session}"


def membership_id_from_xod(xod_id: str) -> str | None:
    """XoD's membership id "GC-8811.PL-9660" -> the canonical "8811:9660"."""
    try:
        group_part, pupil_part = xod_id.split(".", 1)
        return membership_id(group_part.split("-", 1)[1], pupil_part.split("-", 1)[1])
    except (IndexError, ValueError):
        return None


def exclusion(row: Mapping[str, Any]) -> ExclusionRecord:
    code = (text(row, "ExclusionTypeCode") or "").upper()
    label = (text(row, "ExclusionType") or "").lower()
    kind = EXCLUSION_TYPES.get(code) or ("permanent" if "perm" in label else "fixed" if label else None)
    sessions = field(row, "ExclusionSessions")
    return ExclusionRecord(
        external_id=str(row["Id"]),
        updated_at=stamp(row),
        pupil_external_id=str(row["StudentId"]),
        exclusion_type=kind,
        start_date=day(row, "StartDate"),
        end_date=day(row, "EndDate"),
        sessions=int(sessions) if sessions not in (MISSING, None, "") else None,
    )


def staff(row: Mapping[str, Any]) -> StaffRecord:
    roles = text(row, "Roles")
    status = text(row, "StaffStatus")
    ended = day(row, "EmploymentEnd")
    employed: bool | None
    if status:
        employed = status.lower() == "current"
    elif field(row, "EmploymentEnd") is not MISSING:
        employed = ended is None or ended >= date.today()
    else:
        employed = None
    absent = set(absent_fields(row, STAFF_SOURCES))
    if field(row, "StaffStatus") is MISSING and field(row, "EmploymentEnd") is MISSING:
        absent.add("currently_employed")
    return StaffRecord(
        external_id=str(row["Id"]),
        absent=frozenset(absent),
        updated_at=stamp(row),
        title=text(row, "Title"),
        forename=text(row, "Forename"),
        surname=text(row, "Surname"),
        email=text(row, "WorkEmail"),
        roles=tuple(r.strip() for r in roles.split(",") if r.strip()) if roles else (),
        currently_employed=employed,
    )
