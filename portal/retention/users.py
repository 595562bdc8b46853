"""User data under R37 and R38: each membership's deadline, and deleting a membership's data (and the login after the last)."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import date

from sqlalchemy import delete, func, select

from portal import audit, scope
from portal.extensions import db
from portal.models import Membership, User
from portal.retention.calendar import london_date
from portal.retention.deadlines import Due, RetentionContext, earliest
from portal.retention.items import Item, _keyset

__all__ = ["CATEGORY", "delete_memberships", "membership_dues", "user_items"]

# The category user data is counted under in previews and proofs: one per membership.
CATEGORY = "user_data"
MEMBERSHIPS = Membership.__table__


def membership_dues(ctx: RetentionContext, membership, ends: dict[int, date]) -> list[Due]:
    """Return a membership's deadlines: 7 years after its subscription ends (R37) or after the removal (R38)."""
    dues = ctx._each("user:subscription_end", ends.get(membership.organisation_id))
    if membership.removed_at is not None:
        dues += ctx._each("user:user_removed", london_date(membership.removed_at))
    return dues


def user_items(ctx: RetentionContext, horizon: date, *, organisation_id: int | None = None) -> Iterator:
    """Yield a sweep item for each membership whose user data is due by the horizon (R37, R38)."""
    if not (ctx.rules.get("user:subscription_end") or ctx.rules.get("user:user_removed")):
        return
    ends = scope.subscription_ends()
    query = select(MEMBERSHIPS.c.id, MEMBERSHIPS.c.organisation_id, MEMBERSHIPS.c.removed_at)
    if organisation_id is not None:
        query = query.where(MEMBERSHIPS.c.organisation_id == organisation_id)
    for m in _keyset(query, MEMBERSHIPS):
        due, _ = earliest(membership_dues(ctx, m, ends))
        if due is not None and due.due_on <= horizon:
            yield Item("memberships", m.id, m.organisation_id, None, CATEGORY, due)


def delete_memberships(ids: list[int], *, run_id: int | None = None) -> dict[int, str]:
    """Delete the user data of these memberships; return each deleted membership's category.

    A membership's usage (the user's references in audit entries of its organisation) becomes a
    placeholder; the membership row goes. The login identity (the user row, tokens, contact and
    profile, every remaining audit reference) goes with the user's last membership, unless the user
    is support staff, whose account is the operator's. Runs in the caller's transaction.
    """
    found = db.session.execute(
        select(MEMBERSHIPS.c.id, MEMBERSHIPS.c.user_id, MEMBERSHIPS.c.organisation_id).where(MEMBERSHIPS.c.id.in_(ids))
    ).all()
    rewritten = accounts = 0
    for membership_id, user_id, organisation_id in found:
        rewritten += audit.pseudonymise_user(user_id, organisation_id)
        db.session.execute(delete(MEMBERSHIPS).where(MEMBERSHIPS.c.id == membership_id))
    for user_id in {user_id for _, user_id, _ in found}:
        left = db.session.execute(select(func.count()).select_from(MEMBERSHIPS).where(MEMBERSHIPS.c.user_id == user_id)).scalar()
        user = db.session.get(User, user_id)
        if left or user is None or user.is_support:
            continue
        rewritten += audit.pseudonymise_user(user_id)
        # Tokens go by ON DELETE CASCADE; records naming the user as the one who acted keep a NULL.
        db.session.execute(delete(User.__table__).where(User.__table__.c.id == user_id))
        accounts += 1
    db.session.expire_all()
    if found:
        audit.record("retention.user_data_deleted", actor="system",
                     details={"run_id": run_id, "memberships": len(found), "accounts": accounts,
                              "audit_references": rewritten})
    return {membership_id: CATEGORY for membership_id, _, _ in found}
