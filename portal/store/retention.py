"""Retention deletes: pupils and their rows (R34, R36), single rows, cleared fields, subject exports, attendance counts."""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import JSON, Integer, case, cast, delete, func, select, update

from portal import audit
from portal.extensions import db
from portal.models import MisPupil
from portal.models.base import utcnow
from portal.models.dsr import SubjectExport, SubjectRequest
from portal.models.mis import STORE_MODELS, MisAttendanceMark
from portal.store.tables import KIND_CATEGORY, _META
from portal.store.walk import child_tables


def erase_subject_exports(subject_kind: str, subjects: Iterable[tuple[int, str]]) -> int:
    """Delete the prepared access exports (content and row) about these subjects, (school id, provider id) pairs (R34).

    An export is a copy of the subject's data: it goes with them, downloaded or not. The request stays in the register.
    """
    by_school: dict[int, set[str]] = defaultdict(set)
    for school_id, external_id in subjects:
        by_school[school_id].add(external_id)
    erased = 0
    for school_id, external_ids in by_school.items():
        requests = select(SubjectRequest.id).where(
            SubjectRequest.school_id == school_id, SubjectRequest.subject_type == subject_kind,
            SubjectRequest.subject_external_id.in_(sorted(external_ids)))
        erased += db.session.execute(delete(SubjectExport).where(SubjectExport.request_id.in_(requests))).rowcount or 0
    if erased:
        audit.record("store.exports_erased", details={"subject_kind": subject_kind, "exports": erased})
    return erased


def pupil_row_counts(pupil_ids: list[int]) -> dict[int, Counter]:
    """Return, per pupil, how many rows (the pupil's own included) each category holds about them."""
    pupils = MisPupil.__table__
    counts: dict[int, Counter] = defaultdict(Counter)
    for pupil_id, category in db.session.execute(select(pupils.c.id, pupils.c.category).where(pupils.c.id.in_(pupil_ids))):
        counts[pupil_id][category] += 1
    for table, fk in child_tables("pupil"):
        if "category" not in table.c:
            continue  # bookkeeping about the pupil (R30 year-group facts): deleted with them, not a category's rows
        rows = db.session.execute(
            select(fk.parent, table.c.category, func.count())
            .where(fk.parent.in_(pupil_ids))
            .group_by(fk.parent, table.c.category)
        )
        for pupil_id, category, n in rows:
            counts[pupil_id][category] += n
    return counts


def delete_pupils(pupil_ids: list[int], *, run_id: int | None = None) -> dict[int, Counter]:
    """Hard-delete pupils and every row about them (R34, R36); return rows deleted per pupil per category.

    Children are deleted explicitly before the pupils, so nothing is left behind on SQLite
    connections without foreign-key enforcement; the caller's transaction makes it all or nothing.
    """
    pupils = MisPupil.__table__
    if not pupil_ids:
        return {}
    counts = pupil_row_counts(pupil_ids)
    erase_subject_exports("pupil", db.session.execute(
        select(pupils.c.school_id, pupils.c.external_id).where(pupils.c.id.in_(pupil_ids))).all())
    for table, fk in child_tables("pupil"):
        db.session.execute(delete(table).where(fk.parent.in_(pupil_ids)))
    db.session.execute(delete(pupils).where(pupils.c.id.in_(pupil_ids)))
    total: Counter = Counter()
    for per_pupil in counts.values():
        total.update(per_pupil)
    audit.record("store.pupils_deleted", details={"run_id": run_id, "pupils": len(counts), "deleted": dict(total)})
    return counts


def delete_rows(table_name: str, ids: list[int], *, run_id: int | None = None) -> dict[int, str]:
    """Hard-delete single store rows (not pupils) by id; return each deleted row's category."""
    if table_name == MisPupil.__tablename__:
        raise ValueError("pupils are deleted with delete_pupils, which takes their rows with them")
    if not table_name.startswith("mis_"):
        raise ValueError(f"{table_name} is not a store table")
    if not ids:
        return {}
    table = db.metadata.tables[table_name]
    if table_name == "mis_staff":
        erase_subject_exports("staff", db.session.execute(
            select(table.c.school_id, table.c.external_id).where(table.c.id.in_(ids))).all())
    found = dict(db.session.execute(select(table.c.id, table.c.category).where(table.c.id.in_(ids))).all())
    db.session.execute(delete(table).where(table.c.id.in_(ids)))
    audit.record("store.rows_deleted", details={"run_id": run_id, "table": table_name, "deleted": dict(Counter(found.values()))})
    return found


def clearable_fields(category: str, names: Iterable[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Split field names into {store table of the category: its columns of those names} and the names none has.

    Only value columns can be cleared: never a key, link or provenance column, and a column that
    cannot hold NULL only if it is a JSON list (cleared to an empty list).
    """
    names = sorted(set(names))
    tables: dict[str, list[str]] = {}
    for kind, model in STORE_MODELS.items():
        if KIND_CATEGORY.get(kind) != category:
            continue
        table = model.__table__
        cols = [n for n in names if n in table.c and n not in _META
                and (table.c[n].nullable or isinstance(table.c[n].type, JSON))]
        if cols:
            tables[table.name] = cols
    known = {c for cols in tables.values() for c in cols}
    return tables, [n for n in names if n not in known]


def clear_fields(table_name: str, ids: list[int], columns: list[str], *, run_id: int | None = None) -> int:
    """Clear these columns (NULL; an empty list for a list column) of these store rows, which stay; return rows changed.

    The rows' content hash is reset, so the next read of values the provider shares again writes them.
    Special-category columns clear like any other (NULL is stored unencrypted). Audited with counts only.
    """
    if not table_name.startswith("mis_") or table_name not in db.metadata.tables:
        raise ValueError(f"{table_name} is not a store table")
    table = db.metadata.tables[table_name]
    if not ids or not columns:
        return 0
    values: dict[str, Any] = {}
    for name in columns:
        column = table.c[name]
        if name in _META:
            raise ValueError(f"{table_name}.{name} is not a value column")
        values[name] = None if column.nullable else []
    # A new extract time puts the rows back in the product feeds (products delete and fetch them again, R42).
    values["content_hash"] = ""
    values["extracted_at"] = utcnow()
    changed = db.session.execute(update(table).where(table.c.id.in_(ids)).values(**values)).rowcount
    audit.record("store.fields_cleared", details={"run_id": run_id, "table": table_name, "columns": sorted(columns),
                                                   "rows": changed})
    return changed


def attendance_cells(pupil_ids) -> list[tuple]:
    """Return attendance counted per (school, academic year, year group, DfE code): pupils and sessions (R36).

    ``pupil_ids`` is a SELECT of pupil ids. Only counts leave: no pupil id, UPN or other key.
    """
    marks, pupils = MisAttendanceMark.__table__, MisPupil.__table__
    year = cast(func.extract("year", marks.c.session_date), Integer)
    month = cast(func.extract("month", marks.c.session_date), Integer)
    academic_year = case((month >= 9, year), else_=year - 1)
    query = (
        select(pupils.c.school_id, academic_year.label("academic_year"), pupils.c.year_group, marks.c.code,
               func.count(func.distinct(marks.c.pupil_id)), func.count())
        .join(pupils, pupils.c.id == marks.c.pupil_id)
        .where(marks.c.pupil_id.in_(pupil_ids), marks.c.session_date.is_not(None))
        .group_by(pupils.c.school_id, academic_year, pupils.c.year_group, marks.c.code)
    )
    return [tuple(r) for r in db.session.execute(query)]
