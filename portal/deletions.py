"""Deletions reach the products (R42): what each product received, deletion notices, acknowledgements, overdue alerts."""
from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, bindparam, delete, func, literal, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from portal import alerts, audit, store
from portal.errors import code_location
from portal.extensions import db
from portal.models import Organisation, Product
from portal.models.base import UTCDateTime, utcnow
from portal.models.deletions import DeletionNotice, ProductReceipt
from portal.models.retention import DeletionOrder, RetentionProof

__all__ = [
    "ACK_DAYS",
    "REASONS",
    "UnknownNotices",
    "acknowledge_by",
    "as_json",
    "acknowledge",
    "feed_page",
    "overdue_summary",
    "publish_authorisation_ended",
    "publish_erasure",
    "publish_fields_cleared",
    "publish_provider_deletion",
    "publish_sweep_batch",
    "record_received",
    "send_overdue_alerts",
]

log = logging.getLogger(__name__)

# R42: a notice not acknowledged this long after it was published is overdue.
ACK_DAYS = 7
REASONS = ("retention_rule", "erasure", "revocation", "grant_removed", "authorisation_ended", "tombstone_removed",
           "provider_deleted", "permission_withdrawn")
# The retention rule whose sweep removes rows the provider deleted (their tombstones served their time).
TOMBSTONE_RULE = "TOMB"
_CHUNK = 1000


# ---------------------------------------------------------------- record types


@functools.lru_cache(maxsize=None)
def _types() -> dict[str, tuple[str, str, bool]]:
    """Return per record type: (store table, category, whether its records are about one pupil)."""
    return {name: (model.__tablename__, category, "pupil_id" in model.__table__.c)
            for name, (model, category) in store.api_record_types().items()}


@functools.lru_cache(maxsize=None)
def _type_of_table() -> dict[str, str]:
    return {table: name for name, (table, _, _) in _types().items()}


def _pupil_types() -> list[str]:
    """Record types whose receipts name a pupil: the pupils themselves and every type about one pupil."""
    return sorted(name for name, (table, _, about) in _types().items() if about or table == "mis_pupils")


def _insert(table):
    return (postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert)(table)


# ---------------------------------------------------------------- what each product received


def record_received(grant, record_type: str, rows: Iterable) -> int:
    """Record, with one bulk insert, which subjects a page served to the grant's product; return how many ids it named.

    Called by the product API (portal.api.views) for each page portal.store.read_feed returns. Records about a pupil are recorded by their pupil,
    other records by their own id, so a page of 10,000 attendance marks writes a few dozen rows.
    Tombstones are not recorded: they hand the product nothing to keep.
    """
    about_pupil = _types()[record_type][2]
    key = "pupil_id" if about_pupil else "id"
    ids = sorted({r[key] for r in rows if r["deleted_at"] is None and r[key] is not None})
    if not ids:
        return 0
    # Sorted, so two readers inserting overlapping receipts take row locks in the same order.
    table = ProductReceipt.__table__
    if db.session.get_bind().dialect.name == "postgresql":
        # One statement over an array: a 10,000-row executemany took most of a page's time.
        source = select(literal(grant.product_id), literal(record_type),
                        func.unnest(bindparam("ids", ids, type_=postgresql.ARRAY(Integer))), literal(grant.school_id))
        db.session.execute(postgresql.insert(table).from_select(
            ["product_id", "record_type", "subject_id", "school_id"], source).on_conflict_do_nothing())
    else:
        db.session.execute(sqlite.insert(table).on_conflict_do_nothing(), [
            {"product_id": grant.product_id, "record_type": record_type, "subject_id": i, "school_id": grant.school_id}
            for i in ids])
    return len(ids)


def _receivers(record_types: list[str], subject_ids: Iterable[int]) -> list[tuple[int, str, int, int]]:
    """Return (product, record type, subject, school) for every receipt of these subjects, in bounded chunks."""
    subject_ids = sorted(set(subject_ids))
    found = []
    for start in range(0, len(subject_ids), _CHUNK):
        chunk = subject_ids[start:start + _CHUNK]
        found.extend(db.session.execute(
            select(ProductReceipt.product_id, ProductReceipt.record_type, ProductReceipt.subject_id, ProductReceipt.school_id)
            .where(ProductReceipt.record_type.in_(record_types), ProductReceipt.subject_id.in_(chunk))
        ).all())
    return found


def _forget(record_types: list[str], subject_ids: Iterable[int]) -> None:
    subject_ids = sorted(set(subject_ids))
    for start in range(0, len(subject_ids), _CHUNK):
        db.session.execute(delete(ProductReceipt).where(
            ProductReceipt.record_type.in_(record_types), ProductReceipt.subject_id.in_(subject_ids[start:start + _CHUNK])))


# ---------------------------------------------------------------- publishing


def _publish(notices: list[dict]) -> int:
    """Insert the notices (one open notice per product and id; a repeat is skipped); audit counts per school."""
    if not notices:
        return 0
    now = utcnow()
    per_school: dict[int, list[dict]] = {}
    for notice in notices:
        notice.setdefault("created_at", now)
        notice.setdefault("rule_id", None)
        per_school.setdefault(notice["school_id"], []).append(notice)
    db.session.execute(_insert(DeletionNotice.__table__).on_conflict_do_nothing(), notices)
    for school_id, mine in sorted(per_school.items()):
        audit.record("deletions.published", organisation_id=school_id, target_type="deletion_notices",
                     details={"reasons": sorted({n["reason"] for n in mine}), "notices": len(mine),
                              "products": sorted({n["product_id"] for n in mine})}, actor="system")
    return len(notices)


def _subject_notices(receipts, reason: str, rule_id: str | None) -> list[dict]:
    """One "subject" notice per product and pupil: delete the pupil and every record about them."""
    seen = {(product, subject): school for product, _, subject, school in receipts}
    return [{"product_id": product, "school_id": school, "record_type": "pupils", "category": _types()["pupils"][1],
             "record_id": subject, "scope": "subject", "reason": reason, "rule_id": rule_id}
            for (product, subject), school in sorted(seen.items())]


def _sweep_reasons(proof_ids: set[int]) -> dict[int, tuple[str, str, int | None]]:
    """Return per proof: (reason, rule, school), from the rule and the deletion order behind it."""
    proofs = db.session.execute(
        select(RetentionProof.id, RetentionProof.rule_id, RetentionProof.order_id, RetentionProof.school_id)
        .where(RetentionProof.id.in_(proof_ids))
    ).all()
    orders = dict(db.session.execute(
        select(DeletionOrder.id, DeletionOrder.reason).where(DeletionOrder.id.in_({p.order_id for p in proofs if p.order_id}))
    ).all())
    out = {}
    for p in proofs:
        if p.order_id in orders:
            reason = orders[p.order_id] if orders[p.order_id] in ("grant_removed", "permission_withdrawn") else "revocation"
        elif p.rule_id == TOMBSTONE_RULE:
            reason = "tombstone_removed"
        else:
            reason = "retention_rule"
        out[p.id] = (reason, p.rule_id, p.school_id)
    return out


def _record_receivers(table: str, record_type: str, about_pupil: bool, ids: list[int]) -> list[tuple[int, int, int]]:
    """Return (row, product, school) for each product that received these rows (a row about a pupil: by its pupil)."""
    if about_pupil:
        owner = store.deletion_notice_pupils(table, ids)
        receipts = _receivers([record_type], {p for p in owner.values() if p is not None})
        by_pupil: dict[int, list[tuple[int, int]]] = {}
        for product, _, pupil, school in receipts:
            by_pupil.setdefault(pupil, []).append((product, school))
        return [(row_id, product, school) for row_id, pupil in owner.items() for product, school in by_pupil.get(pupil, ())]
    return [(subject, product, school) for product, _, subject, school in _receivers([record_type], ids)]


def publish_fields_cleared(table: str, ids: list[int], rule_id: str | None) -> int:
    """Publish "record" notices for rows whose withdrawn fields the sweep clears (R42), before it clears them.

    The notice model names records, not fields: each product that received a row is told to delete
    that record and fetch it again (the row comes back in its feed without the cleared fields). The
    receipts are kept, since the rows stay. Reason "permission_withdrawn"; returns notices published.
    """
    record_type = _type_of_table().get(table)
    if record_type is None or not ids:
        return 0
    _, category, about_pupil = _types()[record_type]
    return _publish([
        {"product_id": product, "school_id": school, "record_type": record_type, "category": category,
         "record_id": row_id, "scope": "record", "reason": "permission_withdrawn", "rule_id": rule_id}
        for row_id, product, school in sorted(_record_receivers(table, record_type, about_pupil, ids))])


def publish_sweep_batch(items: Iterable) -> int:
    """Publish notices for one batch of the retention sweep, before it deletes (R42); return notices published.

    ``items`` are the sweep's work items (proof_id, record_table, record_id, category). A pupil goes
    to every product that received anything about them, as one "subject" notice; a single record
    goes to the products that received it (for a record about a pupil: that type about that pupil).
    Deletion orders (revocation, removed grants) are executed by the sweep, so they publish here too.
    """
    items = [i for i in items if i.record_table in _type_of_table()]
    if not items:
        return 0
    why = _sweep_reasons({i.proof_id for i in items})
    notices: list[dict] = []
    by_table: dict[str, list] = {}
    for item in items:
        by_table.setdefault(item.record_table, []).append(item)
    for table, group in by_table.items():
        record_type = _type_of_table()[table]
        _, category, about_pupil = _types()[record_type]
        reason_of = {i.record_id: why.get(i.proof_id, ("retention_rule", None, None)) for i in group}
        if table == "mis_pupils":
            receipts = _receivers(_pupil_types(), reason_of)
            for reason, rule_id in sorted({r[:2] for r in reason_of.values()}, key=str):
                notices += _subject_notices([r for r in receipts if reason_of[r[2]][:2] == (reason, rule_id)], reason, rule_id)
            _forget(_pupil_types(), reason_of)
            continue
        pairs = _record_receivers(table, record_type, about_pupil, list(reason_of))
        if not about_pupil:
            _forget([record_type], reason_of)
        for row_id, product, school in sorted(pairs):
            reason, rule_id, _ = reason_of[row_id]
            notices.append({"product_id": product, "school_id": school, "record_type": record_type, "category": category,
                            "record_id": row_id, "scope": "record", "reason": reason, "rule_id": rule_id})
    return _publish(notices)


def publish_erasure(school_id: int, subject_kind: str, external_id: str) -> int:
    """Publish notices for an erased pupil or staff member to the products that received them (R42, R50); before the erasure."""
    ids = store.subject_ids(school_id, subject_kind, external_id)
    if subject_kind == "pupil":
        notices = _subject_notices(_receivers(_pupil_types(), ids), "erasure", None)
        _forget(_pupil_types(), ids)
    else:
        category = _types()["staff"][1]
        notices = [{"product_id": product, "school_id": school, "record_type": "staff", "category": category,
                    "record_id": subject, "scope": "record", "reason": "erasure"}
                   for product, _, subject, school in _receivers(["staff"], ids)]
        _forget(["staff"], ids)
    return _publish(notices)


def publish_provider_deletion(school_id: int, pupil_ids: list[int], staff_ids: list[int]) -> int:
    """Publish notices for pupils and staff the provider deleted, as their rows are tombstoned (R42); return notices.

    A pupil goes to every product that received anything about them, as one "subject" notice; a
    staff member to the products that received them. Their receipts are forgotten, so the sweep that
    later removes the tombstones does not tell the same products twice.
    """
    notices = _subject_notices(_receivers(_pupil_types(), pupil_ids), "provider_deleted", None) if pupil_ids else []
    if pupil_ids:
        _forget(_pupil_types(), pupil_ids)
    if staff_ids:
        category = _types()["staff"][1]
        notices += [{"product_id": product, "school_id": school, "record_type": "staff", "category": category,
                     "record_id": subject, "scope": "record", "reason": "provider_deleted"}
                    for product, _, subject, school in _receivers(["staff"], staff_ids)]
        _forget(["staff"], staff_ids)
    return _publish(notices)


def publish_authorisation_ended(school_id: int, product_id: int) -> int:
    """Publish every id the product received from the school when its authorisation ends (R42, R4); the caller commits."""
    pupil_types = set(_pupil_types())
    total = 0
    last: tuple[str, int] = ("", -1)
    while True:
        rows = db.session.execute(
            select(ProductReceipt.record_type, ProductReceipt.subject_id)
            .where(ProductReceipt.product_id == product_id, ProductReceipt.school_id == school_id,
                   tuple_(ProductReceipt.record_type, ProductReceipt.subject_id) > tuple_(*last))
            .order_by(ProductReceipt.record_type, ProductReceipt.subject_id)
            .limit(_CHUNK)
        ).all()
        if not rows:
            break
        last = tuple(rows[-1])
        notices = []
        for record_type, subject in rows:
            if record_type in pupil_types:
                notices += _subject_notices([(product_id, record_type, subject, school_id)], "authorisation_ended", None)
            else:
                notices.append({"product_id": product_id, "school_id": school_id, "record_type": record_type,
                                "category": _types()[record_type][1], "record_id": subject, "scope": "record",
                                "reason": "authorisation_ended"})
        total += _publish(notices)
    db.session.execute(delete(ProductReceipt).where(ProductReceipt.product_id == product_id,
                                                    ProductReceipt.school_id == school_id))
    return total


# ---------------------------------------------------------------- the product's feed and acknowledgements


class UnknownNotices(Exception):
    """Some ids given are not notices of this product (or do not exist)."""

    def __init__(self, ids: list[int]) -> None:
        super().__init__(f"{len(ids)} unknown notice ids")
        self.ids = ids


def acknowledge_by(notice: DeletionNotice) -> datetime:
    return notice.created_at + timedelta(days=ACK_DAYS)


def as_json(notice: DeletionNotice) -> dict:
    return {
        "id": notice.id,
        "school_id": notice.school_id,
        "record_type": notice.record_type,
        "category": notice.category,
        "record_id": notice.record_id,
        "scope": notice.scope,
        "reason": notice.reason,
        "rule": notice.rule_id,
        "created_at": notice.created_at.isoformat(),
        "acknowledge_by": acknowledge_by(notice).isoformat(),
        "acknowledged_at": notice.acknowledged_at.isoformat() if notice.acknowledged_at else None,
    }


def feed_page(product_id: int, *, after: int | None, limit: int, pending_only: bool) -> tuple[list[DeletionNotice], bool]:
    """Return one page of the product's notices in id order after ``after``, and whether more follow."""
    query = select(DeletionNotice).where(DeletionNotice.product_id == product_id)
    if after is not None:
        query = query.where(DeletionNotice.id > after)
    if pending_only:
        query = query.where(DeletionNotice.acknowledged_at.is_(None))
    rows = list(db.session.execute(query.order_by(DeletionNotice.id).limit(limit + 1)).scalars())
    return rows[:limit], len(rows) > limit


def acknowledge(product_id: int, ids: list[int], *, now: datetime | None = None) -> tuple[int, int]:
    """Mark the product's notices acknowledged (idempotent); return (newly, already). Nothing changes if any id is not its own."""
    now = now or utcnow()
    wanted = sorted(set(ids))
    found = {i: (at, school) for i, at, school in db.session.execute(
        select(DeletionNotice.id, DeletionNotice.acknowledged_at, DeletionNotice.school_id)
        .where(DeletionNotice.product_id == product_id, DeletionNotice.id.in_(wanted))
    ).all()}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise UnknownNotices(missing)
    fresh = [i for i, (at, _) in found.items() if at is None]
    if fresh:
        db.session.execute(update(DeletionNotice).where(DeletionNotice.id.in_(fresh)).values(acknowledged_at=now))
    # Each school's history shows that the product confirmed (R9), with counts only.
    per_school: dict[int, int] = {}
    for i in fresh:
        per_school[found[i][1]] = per_school.get(found[i][1], 0) + 1
    for school_id, count in sorted(per_school.items()):
        audit.record("deletions.acknowledged", organisation_id=school_id, target_type="products", target_id=product_id,
                     details={"notices": count}, actor=f"product:{product_id}")
    return len(fresh), len(wanted) - len(fresh)


# ---------------------------------------------------------------- overdue acknowledgements


def overdue_cutoff(now: datetime | None = None) -> datetime:
    """Notices published at or before this time and not acknowledged are overdue (exactly ACK_DAYS days)."""
    return (now or utcnow()) - timedelta(days=ACK_DAYS)


@dataclass
class Overdue:
    """Overdue notices of one product for one school."""

    school_id: int
    school_name: str
    product_id: int
    product_name: str
    count: int
    oldest: datetime


def _as_utc(value) -> datetime:
    # min() loses the column type on SQLite; read it back as the column would.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return UTCDateTime().process_result_value(value, None)


def overdue_summary(school_id: int | None = None, *, now: datetime | None = None, limit: int = 200) -> list[Overdue]:
    """Return overdue notices grouped by school and product (oldest first), optionally for one school."""
    query = (
        select(DeletionNotice.school_id, Organisation.name, DeletionNotice.product_id, Product.name,
               func.count(), func.min(DeletionNotice.created_at))
        .join(Organisation, Organisation.id == DeletionNotice.school_id)
        .join(Product, Product.id == DeletionNotice.product_id)
        .where(DeletionNotice.acknowledged_at.is_(None), DeletionNotice.created_at <= overdue_cutoff(now))
        .group_by(DeletionNotice.school_id, Organisation.name, DeletionNotice.product_id, Product.name)
        .order_by(func.min(DeletionNotice.created_at), DeletionNotice.school_id, DeletionNotice.product_id)
        .limit(limit)
    )
    if school_id is not None:
        query = query.where(DeletionNotice.school_id == school_id)
    return [Overdue(s, sn, p, pn, n, _as_utc(oldest)) for s, sn, p, pn, n, oldest in db.session.execute(query).all()]


def send_overdue_alerts(now: datetime | None = None) -> dict:
    """Email the school's admins and support staff once per batch of newly overdue notices (R42); return counts."""
    now = now or utcnow()
    cutoff = overdue_cutoff(now)
    due = (DeletionNotice.acknowledged_at.is_(None), DeletionNotice.alerted_at.is_(None), DeletionNotice.created_at <= cutoff)
    groups = db.session.execute(
        select(DeletionNotice.school_id, DeletionNotice.product_id, func.count())
        .where(*due).group_by(DeletionNotice.school_id, DeletionNotice.product_id)
        .order_by(DeletionNotice.school_id, DeletionNotice.product_id)
    ).all()
    sent = 0
    for school_id, product_id, count in groups:
        school, product = db.session.get(Organisation, school_id), db.session.get(Product, product_id)
        db.session.execute(update(DeletionNotice).where(
            *due, DeletionNotice.school_id == school_id, DeletionNotice.product_id == product_id).values(alerted_at=now))
        audit.record("deletions.overdue_alerted", organisation_id=school_id, target_type="products", target_id=product_id,
                     details={"notices": count}, actor="system")
        db.session.commit()
        try:
            sent += alerts.deletion_acknowledgements_overdue(school, product, count)
        except Exception as exc:  # an email failure must not undo the record that the batch was reported on the pages
            log.error("overdue deletion alert for school %s, product %s failed with %s at %s", school_id, product_id,
                      type(exc).__name__, code_location(exc))
    return {"batches": len(groups), "emails": sent}
