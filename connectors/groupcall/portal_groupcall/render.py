"""Render a portal.sandbox.synthetic school in Xporter on Demand's wire format (ids, names and quirks as XoD sends them)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from portal.sandbox.synthetic import ACADEMIC_YEAR_START, SyntheticSchool
from portal_groupcall.mapping import lesson_occurrence_id

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
GROUP_TYPES = {"year": "YearGrp", "registration": "RegGrp", "class": "TeachingGrp", "house": "HouseGrp"}
EXCLUSION_TYPES = {"fixed": ("FIXD", "Fixed Term"), "permanent": ("PERM", "Permanent")}


def number_for(key: str) -> str:
    """A stable numeric MIS-style id for a synthetic key (XoD ids are strings of digits)."""
    return str(int(hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:8], 16) % 9_000_000 + 1_000_000)


def year_label(year_group: str) -> str:
    # Observed data carries odd spacing ("Year  4"); the connector must cope.
    return "Reception" if year_group == "R" else f"Year  {year_group}"


@dataclass
class Rendered:
    name: str
    sets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # provider id (as the connector's external ids use it) -> synthetic key
    id_map: dict[str, str] = field(default_factory=dict)


def render(school: SyntheticSchool) -> Rendered:
    """Return every data set the sandbox serves for the school, plus the provider-id -> synthetic-key map."""
    out = Rendered(name=school.name)
    ids = out.id_map
    groups = school.groups
    group_id = {k: number_for(k) for k in groups}
    subject_id = {k: number_for(k) for k in school.subjects}
    staff_id = {k: s.mis_id for k, s in school.staff.items()}
    ids.update({v: k for k, v in group_id.items()})
    ids.update({v: k for k, v in subject_id.items()})
    ids.update({v: k for k, v in staff_id.items()})

    students, leavers = [], []
    for pupil in list(school.pupils.values()):
        ids[pupil.mis_id] = pupil.key
        reg = groups.get(pupil.registration_group)
        year_key = f"G-Y{pupil.year_group}"
        row = {
            "Id": pupil.mis_id, "XID": f"x{pupil.mis_id}", "ExternalId": None, "IdaasId": f"PL-{pupil.mis_id}",
            "Forename": pupil.preferred_forename, "Surname": pupil.preferred_surname,
            "DisplayName": f"{pupil.preferred_forename} {pupil.preferred_surname}",
            "Gender": pupil.gender, "AdmissionNo": f"{int(pupil.mis_id):06d}",
            "RegGroupId": group_id.get(pupil.registration_group), "RegGroup": reg.name if reg else None,
            "YearGroupId": group_id.get(year_key), "YearGroup": year_label(pupil.year_group),
            "HouseGroupId": None, "HouseGroup": None,
            "StudentStatus": "OnRoll" if pupil.on_roll else "Leaver",
            "DateofBirth": pupil.date_of_birth.isoformat(), "LegalForename": pupil.legal_forename,
            "LegalSurname": pupil.legal_surname, "MiddleName": None, "EntryDate": pupil.admission_date.isoformat(),
            "LeavingDate": pupil.leaving_date.isoformat() if pupil.leaving_date else None,
            "EnrolmentStatus": "C", "UPN": pupil.upn, "FormerUPN": None,
            "SENProvision": pupil.sen_status, "EAL": int(pupil.eal),
            "FirstLanguage": None, "FirstLanguageCode": pupil.first_language,
            "EthnicityCode": pupil.ethnicity, "Ethnicity": None,
            "FSMEligible": int(pupil.fsm), "FSMEver6": int(pupil.fsm_ever6), "PupilPremium": int(pupil.pupil_premium),
            "InLeaCare": int(pupil.looked_after), "EverInCare": int(pupil.ever_in_care),
            # Observed as a string, unlike the other flags.
            "ServiceChild": "1" if pupil.service_child else "0",
            "_updated": pupil.updated_at,
        }
        (students if pupil.on_roll else leavers).append(row)
    out.sets["Students"] = students
    out.sets["Leavers"] = leavers

    out.sets["StudentSENTypeHistory"] = [
        {"Id": number_for(f"sen:{p.key}"), "StudentMis_Id": p.mis_id, "NeedTypeCode": p.sen_need,
         "NeedTypeDescription": None, "Rank": 1, "Active": 1, "_updated": p.updated_at}
        for p in school.pupils.values() if p.sen_need
    ]

    out.sets["Staff"] = [
        {
            "Id": s.mis_id, "XID": f"x{s.mis_id}", "ExternalId": None, "IdaasId": f"PWT-{s.mis_id}",
            "Title": s.title, "StaffCode": (s.forename[0] + s.surname[0]).upper(),
            "StaffStatus": "Current" if s.currently_employed else "Previous",
            "Forename": s.forename, "Surname": s.surname, "DisplayName": f"{s.title} {s.forename[0]} {s.surname}",
            "WorkEmail": s.email, "IsTeacher": int(s.teaching), "IsSupport": int(not s.teaching),
            "Gender": s.gender, "LegalForename": s.forename, "LegalSurname": s.surname,
            "DateOfBirth": s.date_of_birth.isoformat(), "EmploymentStart": s.employment_start.isoformat(),
            "EmploymentEnd": None if s.currently_employed else (ACADEMIC_YEAR_START - timedelta(days=3)).isoformat(),
            "Roles": ",".join(s.roles), "_updated": s.updated_at,
        }
        for s in school.staff.values()
    ]

    out.sets["TTSubjects"] = [
        {"Id": subject_id[k], "Code": s.code, "Name": s.name, "_updated": s.updated_at} for k, s in school.subjects.items()
    ]
    group_rows, members = [], []
    for key, g in groups.items():
        subject = school.subjects.get(g.subject_key) if g.subject_key else None
        group_rows.append({
            "Id": group_id[key], "XID": f"x{group_id[key]}", "ExternalId": None,
            "IdaasId": f"{'GY' if g.group_type == 'year' else 'GC'}-{group_id[key]}",
            "Type": GROUP_TYPES.get(g.group_type, "Other"), "Code": g.name, "Name": g.name,
            "PrimaryStaffId": staff_id.get(g.staff_key), "NumStudents": len(g.members),
            "SubjectLocalId": subject_id.get(g.subject_key) if subject else None,
            "SubjectCode": subject.code if subject else None, "SubjectName": subject.name if subject else None,
            "_updated": g.updated_at,
        })
        for pupil_key in g.members:
            pupil = school.pupils[pupil_key]
            members.append({
                "Id": f"GC-{group_id[key]}.PL-{pupil.mis_id}", "GroupId": group_id[key], "StudentId": pupil.mis_id,
                "GroupIdaasId": f"GC-{group_id[key]}", "StudentIdaasId": f"PL-{pupil.mis_id}", "_updated": g.updated_at,
            })
    out.sets["Group"] = group_rows
    out.sets["StudentMembers"] = members

    lessons = []
    for key, lesson in school.lessons.items():
        # As in XoD, Id names the class's lesson (shared by all its occurrences) and PeriodId the occurrence.
        lid = number_for(f"lesson:{lesson.group_key}")
        period_id = number_for(f"period:{key}")
        g = groups[lesson.group_key]
        subject = school.subjects.get(g.subject_key) if g.subject_key else None
        day = lesson.lesson_date.isoformat()
        ids[lesson_occurrence_id(lid, period_id, day)] = key
        lessons.append({
            "Id": lid, "PeriodId": period_id, "ClassId": group_id[lesson.group_key], "JoinedId": None,
            "ClassName": g.name, "Period": f"{DAY_NAMES[lesson.day_of_week - 1]}:{lesson.period_name}",
            "StartDateTime": f"{day}T{lesson.starts_at}:00", "EndDateTime": f"{day}T{lesson.ends_at}:00",
            "StaffCodes": None, "RoomCodes": lesson.room,
            "SubjectCode": subject.code if subject else None, "SubjectName": subject.name if subject else None,
            "_updated": lesson.updated_at,
        })
    out.sets["Lessons"] = lessons

    aspects: dict[tuple[str, str], str] = {}
    result_sets: dict[tuple[str, bool], str] = {}
    results = []
    for key, r in school.results.items():
        aid = aspects.setdefault((r.aspect, r.stage), number_for(f"aspect:{r.aspect}:{r.stage}"))
        rsid = result_sets.setdefault((r.template, r.statutory), number_for(f"resultset:{r.template}:{r.statutory}"))
        rid = number_for(key)
        ids[rid] = key
        pupil = school.pupils.get(r.pupil_key)
        if pupil is None:
            continue
        results.append({"Id": rid, "StudentId": pupil.mis_id, "AspectId": aid, "ResultDate": r.result_date.isoformat(),
                        "ResultSetId": rsid, "Result": r.result, "Notes": None, "_updated": r.updated_at})
    out.sets["Aspects"] = [
        # Stage goes in Description; real schools name aspects freely (the connector also reads the name).
        {"Id": aid, "ExternalId": None, "AspectType": "Grade", "Name": aspect, "Description": stage, "Supplier": None}
        for (aspect, stage), aid in aspects.items()
    ]
    out.sets["ResultSets"] = [
        {"Id": rsid, "ExternalId": None, "Name": template, "Supplier": "DfE" if statutory else "School"}
        for (template, statutory), rsid in result_sets.items()
    ]
    out.sets["AsmResults"] = results

    exclusions = []
    for key, e in school.exclusions.items():
        pupil = school.pupils.get(e.pupil_key)
        if pupil is None:
            continue
        eid = number_for(key)
        ids[eid] = key
        code, label = EXCLUSION_TYPES[e.exclusion_type]
        exclusions.append({
            "Id": eid, "StudentId": pupil.mis_id, "ExclusionType": label, "ExclusionTypeCode": code,
            "ExclusionReason": None, "ExclusionReasonCode": e.reason, "ExclusionSessions": e.sessions,
            "StartDate": e.start_date.isoformat(), "EndDate": e.end_date.isoformat(), "StartSession": "AM",
            "EndSession": "PM", "ExclusionDays": e.sessions / 2, "_updated": e.updated_at,
        })
    out.sets["StudentExclusions"] = exclusions
    out.sets["SchoolInfo"] = [{"Id": "1", "Name": school.name, "EstabId": school.establishment_number,
                               "Phase": school.phase.capitalize(), "CurrentAcademicYear": str(ACADEMIC_YEAR_START.year)}]
    return out


def marks_between(school: SyntheticSchool, start: date, end: date) -> list[dict[str, Any]]:
    """AttendMarks rows for session marks from start to end inclusive (XoD composite ids: pupil.date.session)."""
    rows = []
    for mark in school.marks():
        if mark.session_date < start:
            continue
        if mark.session_date > end:
            break
        pupil = school.pupils.get(mark.pupil_key)
        if pupil is None:
            continue
        day = mark.session_date.isoformat()
        rows.append({
            "Id": f"{pupil.mis_id}.{day}.{mark.session}", "Date": day, "StudentId": pupil.mis_id,
            "Mark": mark.code, "Type": "S", "Session": mark.session, "_updated": mark.updated_at,
        })
    return rows
