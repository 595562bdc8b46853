"""Deletion orders for withdrawn field sets: which rows and columns they clear, for the sweep and the dry run."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import date

from sqlalchemy import Table, func, select

from portal import store
from portal.extensions import db
from portal.models.retention import DeletionOrder

__all__ = ["describe", "due_orders", "each_target", "label", "live_rows", "row_count", "targets"]

# Store column names in plain words for the school's Deletion page; others read as their name with spaces.
LABELS = {
    "upn": "UPN", "date_of_birth": "date of birth", "fsm": "free school meals", "fsm_ever6": "free school meals (Ever 6)",
    "sen_status": "SEN status", "sen_need": "SEN need", "eal": "EAL", "legal_forename": "legal first name",
    "legal_surname": "legal surname", "roles": "staff roles",
}


def label(fields: list[str] | None) -> str:
    """Return the field names of an order in plain words ("UPN, date of birth")."""
    return ", ".join(LABELS.get(f, f.replace("_", " ")) for f in fields or ())


def describe(order: DeletionOrder, names: dict[str, str]) -> str:
    """Return a field-set order for the school's Deletion page: the fields in plain words and their category."""
    where = ", ".join(names.get(c) or c for c in order.categories or ())
    return f"Fields the provider no longer shares: {label(order.fields)} ({where}; the records are kept)"


def due_orders(horizon: date, *, school_id: int | None = None) -> list[DeletionOrder]:
    """Return the open field-set orders due on or before the horizon, oldest first."""
    query = select(DeletionOrder).where(
        DeletionOrder.fields.is_not(None), DeletionOrder.connection_id.is_not(None),
        DeletionOrder.cancelled_at.is_(None), DeletionOrder.completed_at.is_(None), DeletionOrder.due_on <= horizon,
    ).order_by(DeletionOrder.id)
    if school_id is not None:
        query = query.where(DeletionOrder.school_id == school_id)
    return [o for o in db.session.execute(query).scalars() if o.fields is not None]


def targets(order: DeletionOrder) -> dict[str, list[str]]:
    """Return {store table: columns to clear} for the order; names no store table of its category has are left out."""
    tables: dict[str, list[str]] = {}
    for category in order.categories or ():
        for table, columns in store.clearable_fields(category, order.fields or ())[0].items():
            tables[table] = sorted(set(tables.get(table, [])) | set(columns))
    return tables


def _rows(table: Table, order: DeletionOrder):
    # Live rows only: a tombstoned row is deleted whole on its own clock.
    return (table.c.connection_id == order.connection_id, table.c.category.in_(order.categories or ()),
            table.c.deleted_at.is_(None))


def live_rows(table_name: str, order: DeletionOrder, *, after: int, batch: int) -> list[int]:
    """Return the next ids (after ``after``) of the connection's live rows of the order's categories in one table."""
    table = db.metadata.tables[table_name]
    return list(db.session.execute(
        select(table.c.id).where(*_rows(table, order), table.c.id > after).order_by(table.c.id).limit(batch)
    ).scalars())


def row_count(table_name: str, order: DeletionOrder) -> int:
    """Return how many rows the order would clear columns of in one table today."""
    table = db.metadata.tables[table_name]
    return db.session.execute(select(func.count()).select_from(table).where(*_rows(table, order))).scalar_one()


def each_target(orders: list[DeletionOrder]) -> Iterator[tuple[DeletionOrder, str, list[str]]]:
    """Yield (order, table, columns) for every table each order clears."""
    for order in orders:
        for table, columns in sorted(targets(order).items()):
            yield order, table, columns
