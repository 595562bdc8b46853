"""People with access: the roll for a viewer allowed pupil data (R57, R58), staff matched by email and leavers (R59)."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from typing import Any

from sqlalchemy import func, or_, select

from portal import audit
from portal.extensions import db
from portal.models import FlagKind, MisPupil, SubjectFlag, SubjectKind
from portal.models.mis import MisStaff


def roll_for_viewer(school_id: int, on: date, *, viewer: str, feature: str | None = None) -> list[dict[str, Any]]:
    """Return the school's pupils on roll on a day (basic fields only) for a user allowed to see pupil data, audited.

    ``viewer`` says why the user may see it ("school", "link" (R57) or "support_grant" (R58)); links and support
    grants never see restricted pupils (R51). Special-category fields are never returned here (R72).
    """
    query = select(MisPupil.id, MisPupil.external_id, MisPupil.preferred_forename, MisPupil.legal_forename,
                   MisPupil.preferred_surname, MisPupil.legal_surname, MisPupil.year_group,
                   MisPupil.registration_group).where(
        MisPupil.school_id == school_id, MisPupil.deleted_at.is_(None),
        or_(MisPupil.admission_date.is_(None), MisPupil.admission_date <= on),
        or_(MisPupil.leaving_date.is_(None), MisPupil.leaving_date > on))
    restricted = set(db.session.execute(select(SubjectFlag.external_id).where(
        SubjectFlag.school_id == school_id, SubjectFlag.subject_kind == SubjectKind.pupil,
        SubjectFlag.kind == FlagKind.restricted, SubjectFlag.lifted_at.is_(None))).scalars())
    rows = []
    for row in db.session.execute(query.order_by(MisPupil.legal_surname, MisPupil.id)).mappings():
        if row["external_id"] in restricted and viewer != "school":
            continue
        rows.append({"id": row["id"], "forename": row["preferred_forename"] or row["legal_forename"],
                     "surname": row["preferred_surname"] or row["legal_surname"], "year_group": row["year_group"],
                     "registration_group": row["registration_group"], "restricted": row["external_id"] in restricted})
    audit.record("store.pupils_viewed", organisation_id=school_id,
                 details={"viewer": viewer, "feature": feature, "category": "student_basic", "count": len(rows)})
    return rows


# ---------------------------------------------------------------- staff leavers (owner: portal.staff_access, R59)


def staff_matching_emails(school_id: int, emails: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """Return {lower-cased email: [(provider id, "Forename Surname")]} of live staff of the school with these work emails.

    For a school admin to confirm a user is that member of staff; one audit entry with the count.
    """
    wanted = sorted({e.strip().lower() for e in emails if e})
    if not wanted:
        return {}
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    rows = db.session.execute(
        select(MisStaff.email, MisStaff.external_id, MisStaff.forename, MisStaff.surname).where(
            MisStaff.school_id == school_id, MisStaff.deleted_at.is_(None), func.lower(MisStaff.email).in_(wanted))
        .order_by(MisStaff.external_id)
    ).all()
    for email, external_id, forename, surname in rows:
        pair = (external_id, " ".join(p for p in (forename, surname) if p))
        if pair not in out[email.lower()]:
            out[email.lower()].append(pair)
    audit.record("store.staff_matched", organisation_id=school_id, details={"emails": len(wanted), "matches": len(rows)})
    return dict(out)


def staff_no_longer_current(school_id: int, external_ids: Iterable[str]) -> set[str]:
    """Return the provider ids (of these) the store holds only as not currently employed or removed at source.

    Evidence only: an id with no row at all is not returned (nothing shows they left).
    """
    ids = sorted(set(external_ids))
    if not ids:
        return set()
    seen: set[str] = set()
    current: set[str] = set()
    for external_id, deleted_at, employed in db.session.execute(
        select(MisStaff.external_id, MisStaff.deleted_at, MisStaff.currently_employed)
        .where(MisStaff.school_id == school_id, MisStaff.external_id.in_(ids))
    ):
        seen.add(external_id)
        if deleted_at is None and employed is not False:
            current.add(external_id)
    return seen - current
