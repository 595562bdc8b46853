"""R59: portal users matched to their MIS staff record, and leavers' access suspended by the run that shows they left."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from portal import audit, store
from portal.extensions import db
from portal.models import Membership, Organisation, Role, User
from portal.models.base import utcnow

__all__ = ["Proposal", "STAFF_LEFT", "link_staff", "proposals", "suspend_leavers"]

STAFF_LEFT = "staff_left"
# Roles held by people working at the school; trust, LA and support users are not the school's staff.
_SCHOOL_ROLES = (Role.school_admin, Role.school_viewer)


@dataclass(frozen=True)
class Proposal:
    """A member of staff whose work email in the MIS is the user's email, for a school admin to confirm once."""

    membership_id: int
    staff_external_id: str
    staff_name: str


def _open_memberships(school_id: int):
    return select(Membership).where(
        Membership.organisation_id == school_id, Membership.role.in_(_SCHOOL_ROLES), Membership.removed_at.is_(None))


def proposals(school: Organisation) -> dict[int, Proposal]:
    """Return, per unlinked membership, the one staff record with the same work email (none when 0 or several match)."""
    unlinked = db.session.execute(
        _open_memberships(school.id).where(Membership.staff_external_id.is_(None))).scalars().all()
    if not unlinked:
        return {}
    matches = store.staff_matching_emails(school.id, [m.user.email for m in unlinked])
    out = {}
    for m in unlinked:
        found = matches.get(m.user.email.strip().lower(), [])
        if len(found) == 1:
            out[m.id] = Proposal(m.id, found[0][0], found[0][1])
    return out


def link_staff(membership: Membership, staff_external_id: str, by: User) -> None:
    """Record that a school admin confirmed this user is this member of staff; the caller commits."""
    if membership.staff_external_id is not None:
        raise ValueError("this user is already matched to a staff record")
    membership.staff_external_id, membership.staff_linked_at = staff_external_id, utcnow()
    audit.record("membership.staff_linked", organisation_id=membership.organisation_id, target=membership,
                 details={"user_id": membership.user_id}, actor=f"user:{by.id}", actor_user_id=by.id)


def suspend_leavers(school_id: int, run_id: int | None = None) -> int:
    """Suspend every linked membership whose staff record no longer shows the person as currently employed (R59).

    Runs inside the extract's transaction, after its removals are applied; the caller commits and then
    tells the school admins (portal.alerts.staff_access_suspended). Returns how many were suspended.
    """
    linked = db.session.execute(
        _open_memberships(school_id).where(Membership.staff_external_id.is_not(None), Membership.suspended_at.is_(None))
    ).scalars().all()
    if not linked:
        return 0
    gone = store.staff_no_longer_current(school_id, [m.staff_external_id for m in linked])
    now = utcnow()
    suspended = 0
    for m in linked:
        if m.staff_external_id in gone:
            m.suspended_at, m.suspended_reason = now, STAFF_LEFT
            audit.record("membership.suspended_staff_left", organisation_id=school_id, target=m,
                         details={"user_id": m.user_id, "run_id": run_id}, actor="system")
            suspended += 1
    db.session.flush()
    return suspended
