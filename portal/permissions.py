"""Permissions a provider stopped granting: a tracked withdrawal and a deletion order for exactly that data, undone if it returns."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select

from portal import audit, store
from portal.extensions import db
from portal.models import Connection, DeletionOrder, PermissionWithdrawal
from portal.models.base import utcnow
from portal.models.mis import STORE_MODELS
from portal.retention import orders
from portal.retention.calendar import london_date

__all__ = ["REASON", "apply_run_outcomes", "open_withdrawals", "restore", "withdraw"]

# The deletion order's reason (also the R42 notice reason for what it deletes).
REASON = "permission_withdrawn"


def open_withdrawals(connection: Connection) -> list[PermissionWithdrawal]:
    """Return the connection's withdrawals still in force, oldest first."""
    return list(db.session.execute(
        select(PermissionWithdrawal).where(
            PermissionWithdrawal.connection_id == connection.id, PermissionWithdrawal.restored_at.is_(None)
        ).order_by(PermissionWithdrawal.id)
    ).scalars())


def _open_withdrawals_of(connection: Connection, permission: str):
    """Return the query for the connection's withdrawals of this category or field set still in force."""
    return select(PermissionWithdrawal).where(
        PermissionWithdrawal.connection_id == connection.id, PermissionWithdrawal.permission == permission,
        PermissionWithdrawal.restored_at.is_(None),
    )


def _holds_category(connection: Connection, category: str) -> bool:
    for model in STORE_MODELS.values():
        table = model.__table__
        found = db.session.execute(
            select(table.c.id).where(table.c.connection_id == connection.id, table.c.category == category).limit(1)
        ).first()
        if found:
            return True
    return False


def _schedule(connection: Connection, permission: str, trigger) -> DeletionOrder | None:
    """Schedule the order for a withdrawn category or field set under R31-grant; None when there is nothing to delete.

    A field set ("student_basic:upn,date_of_birth") orders those columns cleared, the rows kept; names
    no store table of the category has are ignored (and audited).
    """
    owner, _, listed = permission.partition(":")
    fields, ignored = store.clearable_fields(owner, listed.split(",")) if listed else ({}, [])
    columns = sorted({c for cols in fields.values() for c in cols}) if listed else None
    if (listed and not columns) or not _holds_category(connection, owner):
        return None
    return orders.schedule(
        school_id=connection.school_id, connection_id=connection.id, categories=[owner], reason=REASON,
        rule_id=orders.GRANT_RULE, trigger_on=trigger, due_on=orders.category_deletion_date(trigger), fields=columns,
        details={"connection_id": connection.id, "categories": [owner], "reason": REASON,
                 **({"fields": columns, "ignored_fields": ignored} if listed else {})},
        actor={"actor": "provider"},
    )


def withdraw(connection: Connection, category: str, *, run_id: int | None = None,
             schedule: bool = True) -> PermissionWithdrawal | None:
    """Record that the provider confirmed it no longer grants a category; schedule the deletion of that data.

    ``category`` may be a field set ("student_basic:upn,date_of_birth"): the order then clears those
    columns of the category's rows, which stay. Idempotent: an open withdrawal of the same category is
    left as it is (its clock does not restart).
    The order runs under the normal rule for data no grant covers (R31-grant) and is visible on the
    school's Deletion page. The caller commits.
    """
    existing = db.session.execute(_open_withdrawals_of(connection, category)).scalars().first()
    if existing is not None:
        if schedule and existing.deletion_order_id is None and ":" in category:
            # A field set withdrawn before field orders existed: its order starts from the withdrawal's day.
            order = _schedule(connection, category, london_date(existing.withdrawn_at))
            existing.deletion_order_id = order.id if order else None
        return None
    order = _schedule(connection, category, london_date(utcnow())) if schedule else None
    withdrawal = PermissionWithdrawal(
        connection_id=connection.id, school_id=connection.school_id, permission=category, withdrawn_run_id=run_id,
        deletion_order_id=order.id if order else None,
    )
    db.session.add(withdrawal)
    db.session.flush()
    audit.record(
        "connection.permission_withdrawn", organisation_id=connection.school_id, target=connection, actor="provider",
        details={"connection_id": connection.id, "permission": category, "run_id": run_id,
                 "deletion_order_id": withdrawal.deletion_order_id},
    )
    return withdrawal


def restore(connection: Connection, category: str, *, run_id: int | None = None) -> int:
    """The provider grants a withdrawn category again: close the withdrawal and cancel its pending order. The caller commits."""
    found = db.session.execute(_open_withdrawals_of(connection, category)).scalars().all()
    now = utcnow()
    for withdrawal in found:
        withdrawal.restored_at = now
        order = db.session.get(DeletionOrder, withdrawal.deletion_order_id) if withdrawal.deletion_order_id else None
        if order is not None and order.cancelled_at is None and order.completed_at is None:
            order.cancelled_at = now
            audit.record("retention.deletion_cancelled", organisation_id=order.school_id, target=order, actor="provider",
                         details={"connection_id": connection.id, "categories": order.categories, "reason": REASON})
        audit.record(
            "connection.permission_restored", organisation_id=connection.school_id, target=connection, actor="provider",
            details={"connection_id": connection.id, "permission": category, "run_id": run_id},
        )
    return len(found)


def apply_run_outcomes(connection: Connection, run_id: int, categories: Iterable[str],
                       outcomes: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """After a run: withdraw categories the provider confirmed it does not grant; restore those read in full again.

    Only a confirmed answer withdraws (a refused request the provider does not confirm changes nothing),
    and only a category read without any refusal restores. The caller commits.
    """
    outcomes = list(outcomes)
    confirmed = {o["category"] for o in outcomes if o.get("confirmed") and o.get("code") == "permission_missing"}
    refused = {o["category"] for o in outcomes if o.get("withheld")}
    # Field sets ("student_basic:upn"): the stored values are kept as they are (absent is not NULL) and
    # an order clears just those columns under the same rule and dates, cancelled if the fields return.
    fields = {f"{o['category']}:{','.join(sorted(o['fields']))}" for o in outcomes
              if o.get("confirmed") and o.get("code") == "fields_withheld" and o.get("fields")}
    done = {"withdrawn": [], "restored": []}
    if not confirmed and not fields and not open_withdrawals(connection):
        # Nearly every run: nothing withdrawn, nothing to restore (one query instead of one per category).
        return done
    for category in sorted(confirmed):
        if withdraw(connection, category, run_id=run_id) is not None:
            done["withdrawn"].append(category)
    for field_set in sorted(fields):
        if withdraw(connection, field_set, run_id=run_id) is not None:
            done["withdrawn"].append(field_set)
    for category in sorted(set(categories) - refused):
        if restore(connection, category, run_id=run_id):
            done["restored"].append(category)
    # A field set comes back when a run of its category no longer reports it withheld.
    read = set(categories) - refused
    for withdrawal in open_withdrawals(connection):
        category, _, field_list = withdrawal.permission.partition(":")
        if field_list and category in read and withdrawal.permission not in fields:
            restore(connection, withdrawal.permission, run_id=run_id)
            done["restored"].append(withdrawal.permission)
    return done
