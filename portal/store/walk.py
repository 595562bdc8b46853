"""The subject walk: every table linked by foreign keys to a pupil or staff table, and the row ids found along it."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Table, select

from portal.extensions import db

# The table each kind of data subject is (R34, R48, R50); every table holding their rows hangs off it.
DSR_SUBJECT_TABLES = {"pupil": "mis_pupils", "staff": "mis_staff"}


def subject_table(subject_kind: str) -> Table:
    """Return the table whose rows are the subjects of this kind (mis_pupils or mis_staff)."""
    return db.metadata.tables[DSR_SUBJECT_TABLES[subject_kind]]


def linked_tables(subject_kind: str) -> list[tuple[Table, Table, Any]]:
    """Return (table, parent table, foreign key) for every table linked, directly or through others, to the subject's table.

    Found by walking the schema breadth-first, parents before children, so a new linked table is never missed.
    """
    root = subject_table(subject_kind)
    found: list[tuple[Table, Table, Any]] = []
    seen, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop(0)
        for table in db.metadata.sorted_tables:
            for fk in table.foreign_keys:
                if fk.column.table is parent and table not in seen:
                    seen.add(table)
                    found.append((table, parent, fk))
                    frontier.append(table)
    return found


def child_tables(subject_kind: str) -> list[tuple[Table, Any]]:
    """Return (table, foreign key) for the tables whose rows point straight at a subject row (pupil_id, R34)."""
    root = subject_table(subject_kind)
    return [(table, fk) for table, parent, fk in linked_tables(subject_kind) if parent is root]


def subject_ids(school_id: int, subject_kind: str, external_id: str) -> list[int]:
    """Return the row ids of one subject of a school (one per connection that holds them)."""
    root = subject_table(subject_kind)
    return list(db.session.execute(
        select(root.c.id).where(root.c.school_id == school_id, root.c.external_id == external_id)
    ).scalars())


def linked_rows(subject_kind: str, root_ids: list[int]) -> Iterator[tuple[Table, Any, list[int], list[int]]]:
    """Yield (table, foreign key, parent row ids, the table's row ids) for every linked table, parents first.

    The rows of a table are those whose foreign key names a parent row found before them; a table none of
    whose parents had rows yields empty lists.
    """
    ids_by_table = {subject_table(subject_kind).name: list(root_ids)}
    for table, parent, fk in linked_tables(subject_kind):
        parent_ids = ids_by_table.get(parent.name, [])
        ids = list(db.session.execute(
            select(*table.primary_key.columns).where(fk.parent.in_(parent_ids))).scalars()) if parent_ids else []
        ids_by_table[table.name] = ids
        yield table, fk, parent_ids, ids
