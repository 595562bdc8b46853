"""What the sweep works through: one due record (Item), and the keyset walk that reads tables in bounded batches."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Table

from portal.extensions import db
from portal.retention.deadlines import Due

__all__ = ["BATCH", "Item"]

BATCH = 1000


@dataclass(frozen=True)
class Item:
    """One record the sweep deletes (a pupil takes every row about them with it), and why."""

    table: str
    id: int
    school_id: int | None
    connection_id: int | None
    category: str
    due: Due
    order_id: int | None = None
    held: bool = False


def _keyset(query, table: Table, batch: int = BATCH) -> Iterator:
    """Yield rows of the query in id order, one bounded batch at a time."""
    last = 0
    while True:
        rows = db.session.execute(query.where(table.c.id > last).order_by(table.c.id).limit(batch)).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].id
