"""Deletion notices: the ids read before a deletion so the products that received the records can be told (R42)."""
from __future__ import annotations

from sqlalchemy import select

from portal.extensions import db


def deletion_notice_pupils(table_name: str, ids: list[int]) -> dict[int, int | None]:
    """Return the pupil id of each of these rows of a table about pupils (rows already gone are left out)."""
    table = db.metadata.tables[table_name]
    if "pupil_id" not in table.c or not table_name.startswith("mis_"):
        raise ValueError(f"{table_name} is not a store table about pupils")
    return dict(db.session.execute(select(table.c.id, table.c.pupil_id).where(table.c.id.in_(ids))).all()) if ids else {}
