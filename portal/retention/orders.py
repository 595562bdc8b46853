"""Tracked deletions a school sets off: revoking a connection (at once or under the rules) and categories no grant needs."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from sqlalchemy import select

from portal import audit
from portal.extensions import db
from portal.models import Connection, Organisation, Product, ProductAuthorisation, User
from portal.models.base import utcnow
from portal.models.mis import STORE_MODELS
from portal.models.retention import DeletionOrder, RetentionRule
from portal.retention.calendar import london_date
from portal.retention.deadlines import RetentionContext

__all__ = [
    "REVOKE_NOW_RULE",
    "REVOKE_RULE",
    "GRANT_RULE",
    "cancel_category_deletion",
    "cancel_connection_deletion",
    "categories_still_needed",
    "category_deletion_date",
    "schedule",
    "schedule_category_deletion",
    "schedule_connection_deletion",
]

REVOKE_RULE = "R32"
REVOKE_NOW_RULE = "R32-now"
GRANT_RULE = "R31-grant"


def _due_on(rule_id: str, trigger: date) -> date:
    rule = db.session.get(RetentionRule, rule_id)
    if rule is None:
        raise LookupError(f"retention rule {rule_id} is missing; run the database migrations")
    return RetentionContext.load(trigger).due(rule, trigger).due_on


def _actor(user: User | None) -> dict[str, Any]:
    return {"actor": f"user:{user.id}", "actor_user_id": user.id} if user else {}


def schedule(*, school_id: int, connection_id: int | None, categories: list[str], reason: str, rule_id: str,
             trigger_on: date, due_on: date, details: Mapping[str, Any], fields: list[str] | None = None,
             requested_by_id: int | None = None, actor: Mapping[str, Any] | None = None) -> DeletionOrder:
    """Add a deletion order and its "retention.deletion_scheduled" audit entry (``details`` plus rule and due date).

    Every tracked deletion starts here: revocations, categories no grant needs, withdrawn permissions
    (portal.permissions). ``actor`` is audit.record's actor arguments; the caller commits.
    """
    order = DeletionOrder(
        school_id=school_id, connection_id=connection_id, categories=categories, reason=reason, rule_id=rule_id,
        trigger_on=trigger_on, due_on=due_on, fields=fields, requested_by_id=requested_by_id,
    )
    db.session.add(order)
    db.session.flush()
    audit.record("retention.deletion_scheduled", organisation_id=school_id, target=order,
                 details={**details, "rule": rule_id, "due_on": due_on.isoformat()}, **(actor or {}))
    return order


def schedule_connection_deletion(connection: Connection, *, immediate: bool, user: User | None) -> DeletionOrder:
    """Schedule the deletion of the connection's data: at the next sweep, or 6 months on unless re-authorised (R32).

    Called by portal.lifecycle.revoke inside its transaction; the caller commits.
    """
    today = london_date(utcnow())
    rule_id = REVOKE_NOW_RULE if immediate else REVOKE_RULE
    return schedule(
        school_id=connection.school_id, connection_id=connection.id, categories=[], reason="revocation",
        rule_id=rule_id, trigger_on=today, due_on=today if immediate else _due_on(rule_id, today),
        requested_by_id=user.id if user else None, details={"connection_id": connection.id}, actor=_actor(user),
    )


def cancel_connection_deletion(connection: Connection, *, user: User | None = None) -> int:
    """Cancel the connection's pending revocation deletions (re-authorised before the deadline, R32); the caller commits.

    A deletion the school asked for at once is never cancelled. The sweep also ignores such
    orders by itself once the connection is no longer revoked.
    """
    orders = db.session.execute(
        select(DeletionOrder).where(
            DeletionOrder.connection_id == connection.id, DeletionOrder.rule_id == REVOKE_RULE,
            DeletionOrder.cancelled_at.is_(None), DeletionOrder.completed_at.is_(None),
        )
    ).scalars().all()
    for order in orders:
        order.cancelled_at = utcnow()
        audit.record("retention.deletion_cancelled", organisation_id=order.school_id, target=order,
                     details={"connection_id": connection.id}, **_actor(user))
    return len(orders)


def cancel_category_deletion(school: Organisation, *, user: User | None = None) -> int:
    """Take the categories a product the school authorises (again) needs out of its pending R31-grant orders.

    Call after a product authorisation starts; the caller commits. An order left with no category is
    cancelled; one still partly unneeded is replaced by an order for the rest with the same dates, so
    its clock does not restart. A deletion the school asked for at once is never cancelled.
    """
    needed = categories_still_needed(school)
    pending = db.session.execute(
        select(DeletionOrder).where(
            DeletionOrder.school_id == school.id, DeletionOrder.rule_id == GRANT_RULE,
            DeletionOrder.cancelled_at.is_(None), DeletionOrder.completed_at.is_(None),
            # Data the provider stopped sharing is undone only by the provider sharing it again (portal.permissions).
            DeletionOrder.reason != "permission_withdrawn",
        )
    ).scalars().all()
    actor = _actor(user)
    changed = 0
    for order in pending:
        back = sorted(set(order.categories or ()) & needed)
        if not back:
            continue
        order.cancelled_at = utcnow()
        audit.record("retention.deletion_cancelled", organisation_id=school.id, target=order,
                     details={"categories": back}, **actor)
        rest = [c for c in order.categories if c not in needed]
        if rest:
            schedule(school_id=order.school_id, connection_id=order.connection_id, categories=rest, reason=order.reason,
                     rule_id=order.rule_id, trigger_on=order.trigger_on, due_on=order.due_on,
                     requested_by_id=order.requested_by_id, details={"categories": rest}, actor=actor)
        changed += 1
    return changed


def categories_still_needed(school: Organisation) -> set[str]:
    """Return the categories some feature of a product the school still authorises is granted (R31)."""
    products = db.session.execute(
        select(Product).join(ProductAuthorisation, ProductAuthorisation.product_id == Product.id).where(
            ProductAuthorisation.school_id == school.id, ProductAuthorisation.revoked_at.is_(None)
        )
    ).scalars().all()
    return set().union(*(p.categories() for p in products)) if products else set()


def category_deletion_date(trigger: date) -> date:
    """Return when categories no granted feature needs any more are deleted under the normal rule (R31-grant)."""
    return _due_on(GRANT_RULE, trigger)


def schedule_category_deletion(school: Organisation, *, user: User | None = None, immediate: bool = False,
                               within: Iterable[str] | None = None) -> DeletionOrder | None:
    """Schedule deletion of the school's categories no granted feature needs any more, 6 months on (R31).

    Call after a product authorisation ends or a feature loses a grant; the caller commits.
    ``immediate``: the school instructs deletion at the next sweep (R7); ``within``: only these categories
    (those the ended product read). Returns None when every stored category is still needed.
    """
    stored: set[str] = set()
    for model in STORE_MODELS.values():
        table = model.__table__
        stored.update(db.session.execute(select(table.c.category).where(table.c.school_id == school.id).distinct()).scalars())
    if within is not None:
        stored &= set(within)
    unneeded = sorted(stored - categories_still_needed(school))
    if not unneeded:
        return None
    today = london_date(utcnow())
    rule_id = REVOKE_NOW_RULE if immediate else GRANT_RULE
    return schedule(
        school_id=school.id, connection_id=None, categories=unneeded, reason="grant_removed", rule_id=rule_id,
        trigger_on=today, due_on=today if immediate else _due_on(rule_id, today), requested_by_id=user.id if user else None,
        details={"categories": unneeded}, actor=_actor(user),
    )
