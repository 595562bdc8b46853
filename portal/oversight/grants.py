"""R58: time-boxed support access. A school admin grants one support user at most 24 hours of access to the
school's pupil and staff records, with a ticket reference and reason; portal.scope honours the expiry."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from portal import audit
from portal.extensions import db
from portal.models import Organisation, SupportGrant, User
from portal.models.base import utcnow

MAX_HOURS = 24


class GrantError(ValueError):
    """A grant the rules refuse; the message is shown to the school admin as it is."""


def grant(school: Organisation, support_email: str, hours: int, ticket_ref: str, reason: str, by: User) -> SupportGrant:
    """Grant support access for ``hours`` (1 to 24) to the support user with this email; audited in the school's history."""
    ticket_ref, reason = (ticket_ref or "").strip(), (reason or "").strip()
    if not isinstance(hours, int) or not 1 <= hours <= MAX_HOURS:
        raise GrantError(f"Support access lasts between 1 and {MAX_HOURS} hours.")
    if not ticket_ref:
        raise GrantError("Enter the support ticket reference.")
    if not reason:
        raise GrantError("Enter the reason support staff need to see pupil data.")
    user = db.session.execute(select(User).where(func.lower(User.email) == (support_email or "").strip().lower())).scalar()
    if user is None or not user.is_support or not user.active:
        raise GrantError("No active support staff account has that email address.")
    if user.confidentiality_agreed_on is None:
        raise GrantError("That support account has no recorded confidentiality agreement, so it cannot receive access.")
    now = utcnow()
    item = SupportGrant(school_id=school.id, support_user_id=user.id, granted_by_id=by.id, ticket_ref=ticket_ref[:60],
                        reason=reason[:500], granted_at=now, expires_at=now + timedelta(hours=hours))
    db.session.add(item)
    db.session.flush()
    audit.record("support.access_granted", organisation_id=school.id, target=item,
                 details={"support_user_id": user.id, "hours": hours, "ticket_ref": item.ticket_ref})
    return item


def end(item: SupportGrant, by: User) -> None:
    """End a grant before it expires (idempotent)."""
    if item.ended_at is not None or item.expires_at <= utcnow():
        return
    item.ended_at = utcnow()
    audit.record("support.access_ended", organisation_id=item.school_id, target=item,
                 details={"support_user_id": item.support_user_id, "ended_by": by.id})


def of_school(school_id: int) -> list[SupportGrant]:
    """The school's grants, newest first."""
    return list(db.session.execute(select(SupportGrant).where(SupportGrant.school_id == school_id)
                                   .order_by(SupportGrant.granted_at.desc(), SupportGrant.id.desc()).limit(50)).scalars())


def is_live(item: SupportGrant) -> bool:
    now = utcnow()
    return item.ended_at is None and item.granted_at <= now < item.expires_at
