"""Data-subject requests: a subject's rows found by walking foreign keys, for search, export (R48) and erasure (R50)."""
from __future__ import annotations

from collections import defaultdict
from datetime import date

from sqlalchemy import and_, delete, func, select

from portal import audit
from portal.extensions import db
from portal.models import MisPupil
from portal.models.deletions import ProductReceipt
from portal.models.mis import STORE_MODELS
from portal.store.feed import api_record_types
from portal.store.retention import erase_subject_exports
from portal.store.walk import linked_rows, subject_ids, subject_table


# Bookkeeping that says nothing about the subject (a keyed hash of the row); left out of exports.
_DSR_INTERNAL = frozenset({"content_hash", "seen_run_id"})


def dsr_subject_rows(school_id: int, subject_kind: str, external_id: str, *, request_id: int | None = None) -> dict[str, list[dict]]:
    """Return every stored row about one subject of a school, table by table (R48); writes one audit entry (counts only)."""
    root = subject_table(subject_kind)
    root_ids = subject_ids(school_id, subject_kind, external_id)
    out: dict[str, list[dict]] = {
        root.name: [dict(r) for r in db.session.execute(select(root).where(root.c.id.in_(root_ids))).mappings()]
    }
    for table, fk, parent_ids, _ids in linked_rows(subject_kind, root_ids):
        out[table.name] = [dict(r) for r in db.session.execute(
            select(table).where(fk.parent.in_(parent_ids)).order_by(*table.primary_key.columns)
        ).mappings()] if parent_ids else []
    for rows in out.values():
        for row in rows:
            for name in _DSR_INTERNAL:
                row.pop(name, None)
    audit.record("store.dsr_read", organisation_id=school_id, target_type="subject_requests", target_id=request_id,
                 details={"subject_kind": subject_kind, "rows": {t: len(r) for t, r in out.items() if r}})
    return out


# Portal tables that hold no data about the subject worth exporting: copies (the exports themselves), work queues.
_DSR_PORTAL_SKIP = frozenset({"subject_exports", "retention_work_items", "extract_removals"})
# Columns of portal rows left out of an export: another person's contact details, or bookkeeping.
_DSR_PORTAL_HIDDEN = frozenset({"requester_contact", "token_hash", "content"})


def _pupil_record_types() -> list[str]:
    """Return the API record types whose product receipts name a pupil (their subject_id is the pupil's row id)."""
    return [name for name, (model, _category) in api_record_types().items()
            if model is MisPupil or "pupil_id" in model.__table__.c]


def dsr_portal_rows(school_id: int, subject_kind: str, external_id: str) -> dict[str, list[dict]]:
    """Return the portal's own rows about one subject (R48): flags, requests, holds, product receipts.

    Found by walking the schema for the shapes that name a subject: (school_id, subject_kind, external_id),
    (school_id, subject_type, subject_external_id), (record_table, record_id) and the product receipts.
    """
    root = subject_table(subject_kind)
    root_ids = subject_ids(school_id, subject_kind, external_id)
    out: dict[str, list[dict]] = {}
    for table in db.metadata.sorted_tables:
        if table.name.startswith("mis_") or table.name in _DSR_PORTAL_SKIP:
            continue
        c = table.c
        if {"school_id", "subject_kind", "external_id"} <= set(c.keys()):
            where = and_(c.school_id == school_id, c.subject_kind == subject_kind, c.external_id == external_id)
        elif {"school_id", "subject_type", "subject_external_id"} <= set(c.keys()):
            where = and_(c.school_id == school_id, c.subject_type == subject_kind, c.subject_external_id == external_id)
        elif {"record_table", "record_id"} <= set(c.keys()) and root_ids:
            where = and_(c.record_table == root.name, c.record_id.in_(root_ids))
        elif {"record_type", "subject_id", "product_id"} <= set(c.keys()) and root_ids:
            types = _pupil_record_types() if subject_kind == "pupil" else ["staff"]
            where = and_(c.school_id == school_id, c.subject_id.in_(root_ids), c.record_type.in_(types))
        else:
            continue
        rows = [{k: v for k, v in r.items() if k not in _DSR_PORTAL_HIDDEN}
                for r in db.session.execute(select(table).where(where)).mappings()]
        if rows:
            out[table.name] = rows
    return out


def dsr_recipients(school_id: int, subject_kind: str, external_id: str) -> dict[int, set[str]]:
    """Return {product id: record types} of the products that received this subject's data (R48, from receipts)."""
    root_ids = subject_ids(school_id, subject_kind, external_id)
    if not root_ids:
        return {}
    types = _pupil_record_types() if subject_kind == "pupil" else ["staff"]
    out: dict[int, set[str]] = defaultdict(set)
    for product_id, record_type in db.session.execute(
        select(ProductReceipt.product_id, ProductReceipt.record_type).where(
            ProductReceipt.school_id == school_id, ProductReceipt.subject_id.in_(root_ids),
            ProductReceipt.record_type.in_(types))
    ):
        out[product_id].add(record_type)
    return dict(out)


def dsr_count_rows(school_id: int, subject_kind: str, external_id: str) -> int:
    """Return how many rows the store still holds about the subject (the proof re-query after erasure)."""
    root_ids = subject_ids(school_id, subject_kind, external_id)
    total = len(root_ids) + sum(len(ids) for _table, _fk, _parents, ids in linked_rows(subject_kind, root_ids))
    # Rows that name the pupil by provider id only (a row whose pupil link was never resolved) count too.
    if subject_kind == "pupil":
        for model in STORE_MODELS.values():
            if "pupil_external_id" in model.__table__.c:
                total += db.session.execute(select(func.count()).select_from(model).where(
                    model.school_id == school_id, model.pupil_external_id == external_id)).scalar()
    return total


def dsr_search_pupils(school_ids: list[int], *, external_id: str | None = None, upn: str | None = None,
                      surname: str | None = None, date_of_birth: date | None = None) -> list[dict]:
    """Return pupils of the given schools matching a provider id, a UPN, or a surname plus date of birth.

    Rows carry what a school needs to choose between matches; one audit entry with the count.
    """
    query = select(MisPupil.school_id, MisPupil.external_id, MisPupil.legal_forename, MisPupil.legal_surname,
                   MisPupil.date_of_birth, MisPupil.year_group).where(MisPupil.school_id.in_(school_ids))
    if external_id:
        query = query.where(MisPupil.external_id == external_id.strip())
    elif upn:
        query = query.where(MisPupil.upn == upn.strip().upper())
    elif surname and date_of_birth:
        query = query.where(func.lower(MisPupil.legal_surname) == surname.strip().lower(),
                            MisPupil.date_of_birth == date_of_birth)
    else:
        raise ValueError("search by provider id, UPN, or surname and date of birth")
    rows = [dict(r) for r in db.session.execute(query.distinct().order_by(MisPupil.school_id, MisPupil.external_id)).mappings()]
    audit.record("store.dsr_search", details={"schools": len(school_ids), "matches": len(rows)})
    return rows


def dsr_erase(school_id: int, subject_kind: str, external_id: str, *, request_id: int | None = None) -> dict[str, int]:
    """Hard-delete one subject of a school and everything linked to them (R50); return rows deleted per table.

    Deepest tables first, so nothing is left behind where the database does not enforce foreign keys.
    """
    root = subject_table(subject_kind)
    root_ids = subject_ids(school_id, subject_kind, external_id)
    plan = list(linked_rows(subject_kind, root_ids))
    counts: dict[str, int] = {}
    for table, fk, parent_ids, _ids in reversed(plan):
        if parent_ids:
            counts[table.name] = db.session.execute(delete(table).where(fk.parent.in_(parent_ids))).rowcount
    if subject_kind == "pupil":
        for model in STORE_MODELS.values():
            table = model.__table__
            if "pupil_external_id" in table.c:
                n = db.session.execute(delete(table).where(
                    table.c.school_id == school_id, table.c.pupil_external_id == external_id)).rowcount
                counts[table.name] = counts.get(table.name, 0) + n
    counts[root.name] = db.session.execute(delete(root).where(root.c.id.in_(root_ids))).rowcount
    counts["subject_exports"] = erase_subject_exports(subject_kind, [(school_id, external_id)])
    counts = {t: n for t, n in counts.items() if n}
    audit.record("store.dsr_erased", organisation_id=school_id, target_type="subject_requests", target_id=request_id,
                 details={"subject_kind": subject_kind, "deleted": counts})
    return counts
