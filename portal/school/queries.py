"""Read-only queries behind the school pages: connections, runs, freshness, data use; batched, never one query per row."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import selectinload

from portal import store
from portal.clock import LONDON, london_date
from portal.converters import MAX_ID
from portal.connectors import CATEGORIES
from portal.extensions import db
from portal.models import (
    AuditEntry,
    Category,
    Connection,
    Feature,
    JobRun,
    Organisation,
    Product,
    RunStatus,
    User,
)
from portal.models.api import ProductAuthorisation
from portal.models.base import UTCDateTime

EXTRACT_PREFIX = "extract:"
COUNT_KEYS = ("inserted", "updated", "unchanged", "tombstoned")


def today_london(now: datetime | None = None) -> date:
    return (now or datetime.now(LONDON)).astimezone(LONDON).date()


@dataclass
class Page:
    """One page of a paged list."""

    items: list[Any]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def paginate(query: Select, page: int, per_page: int, scalars: bool = True) -> Page:
    page = min(max(1, page), MAX_ID)  # a page number past any table's size would overflow the database's OFFSET
    total = db.session.execute(select(func.count()).select_from(query.order_by(None).subquery())).scalar_one()
    result = db.session.execute(query.limit(per_page).offset((page - 1) * per_page))
    items = list(result.scalars() if scalars else result.all())
    return Page(items, page, per_page, total)


# ---------------------------------------------------------------- connections


def connections_by_school(school_ids: list[int]) -> dict[int, dict[str, Connection]]:
    """Return {school id: {connector: Connection}} for the given schools, in one query."""
    out: dict[int, dict[str, Connection]] = {sid: {} for sid in school_ids}
    if not school_ids:
        return out
    rows = db.session.execute(select(Connection).where(Connection.school_id.in_(school_ids))).scalars()
    for conn in rows:
        out[conn.school_id][conn.connector] = conn
    return out


def users_by_id(ids: set[int | None]) -> dict[int, User]:
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    return {u.id: u for u in db.session.execute(select(User).where(User.id.in_(ids))).scalars()}


def latest_runs(connection_ids: list[int]) -> dict[int, JobRun]:
    """Return the newest extract run of each connection, in one query."""
    if not connection_ids:
        return {}
    newest = (
        select(func.max(JobRun.id))
        .where(JobRun.connection_id.in_(connection_ids), JobRun.job_id.startswith(EXTRACT_PREFIX))
        .group_by(JobRun.connection_id)
    )
    rows = db.session.execute(select(JobRun).where(JobRun.id.in_(newest))).scalars()
    return {r.connection_id: r for r in rows}


# ---------------------------------------------------------------- runs


def extract_runs_query(school_ids_query: Select | list[int]) -> Select:
    """Extract runs of the schools selected by a scope query (a SELECT of school ids) or listed by id, newest first."""
    return (
        select(JobRun)
        .join(Connection, JobRun.connection_id == Connection.id)
        .where(Connection.school_id.in_(school_ids_query), JobRun.job_id.startswith(EXTRACT_PREFIX))
        .options(selectinload(JobRun.connection).selectinload(Connection.school))
        .order_by(JobRun.id.desc())
    )


def run_counts(run: JobRun) -> dict[str, dict[str, int]]:
    cats = (run.stats or {}).get("categories") or {}
    return {cat: {k: int(v.get(k) or 0) for k in COUNT_KEYS} for cat, v in cats.items() if isinstance(v, dict)}


def run_records(run: JobRun) -> int:
    return sum(sum(c.values()) for c in run_counts(run).values())


def runs_since(school_id: int, since: datetime) -> list[JobRun]:
    """Extract runs of the school's connections created since the moment, oldest first."""
    return list(
        db.session.execute(
            select(JobRun)
            .join(Connection, JobRun.connection_id == Connection.id)
            .where(
                Connection.school_id == school_id,
                JobRun.job_id.startswith(EXTRACT_PREFIX),
                JobRun.created_at >= since,
            )
            .order_by(JobRun.id)
        ).scalars()
    )


# ---------------------------------------------------------------- freshness and data use


@dataclass
class Freshness:
    """When a category was last extracted successfully, and how many whole days were missed since (R22)."""

    category: str
    last_success: datetime | None = None
    missed_days: int = 0
    records: int | None = None


def freshness(school: Organisation, categories: list[str], today: date | None = None) -> dict[str, Freshness]:
    """Return freshness per category from the school's successful extract runs (newest first, bounded)."""
    today = today or today_london()
    out = {c: Freshness(c) for c in categories}
    if categories:
        runs = db.session.execute(
            select(JobRun)
            .join(Connection, JobRun.connection_id == Connection.id)
            .where(
                Connection.school_id == school.id,
                JobRun.job_id.startswith(EXTRACT_PREFIX),
                JobRun.status == RunStatus.succeeded,
                JobRun.finished_at.is_not(None),
            )
            .order_by(JobRun.finished_at.desc())
            .limit(500)
        ).scalars()
        missing = set(categories)
        for run in runs:
            for cat in run_counts(run):
                if cat in missing:
                    out[cat].last_success = run.finished_at
                    missing.discard(cat)
            if not missing:
                break
    counts = record_counts(school.id)
    for cat, item in out.items():
        if item.last_success:
            item.missed_days = max(0, (today - london_date(item.last_success)).days - 1)
        item.records = counts.get(cat) if counts is not None else None
    return out


def record_counts(school_id: int) -> dict[str, int] | None:
    """Records held per category, from the MIS store's read function when the store provides it."""
    # The store owns every read of MIS tables; it is asked, never queried here.
    return dict(store.category_counts(school_id))


@dataclass
class ProductUse:
    product: Product
    authorisation: ProductAuthorisation
    authorised_by: User | None
    features: list[tuple[Feature, list[str]]] = field(default_factory=list)
    # R8: when this product last read each category through the product API (from the audit trail).
    last_read: dict[str, datetime] = field(default_factory=dict)


def data_use(school: Organisation) -> tuple[list[ProductUse], dict[str, Category], set[str]]:
    """Return the school's live product authorisations with features and granted categories, all categories, used ids."""
    auths = list(
        db.session.execute(
            select(ProductAuthorisation)
            .where(ProductAuthorisation.school_id == school.id, ProductAuthorisation.revoked_at.is_(None))
            .options(
                selectinload(ProductAuthorisation.product)
                .selectinload(Product.features)
                .selectinload(Feature.grants)
            )
            .order_by(ProductAuthorisation.authorised_at)
        ).scalars()
    )
    users = users_by_id({a.authorised_by_id for a in auths})
    rows = db.session.execute(select(Category)).scalars()
    # The usage matrix order (pupils first, staff last), as schools read it in the matrix.
    categories = {c.id: c for c in sorted(rows, key=lambda c: (CATEGORIES.index(c.id) if c.id in CATEGORIES else 99, c.id))}
    today = today_london()
    used: set[str] = set()
    uses = []
    reads = last_reads(school.id)
    for auth in auths:
        use = ProductUse(auth.product, auth, users.get(auth.authorised_by_id), last_read=reads.get(auth.product_id, {}))
        for feature in sorted(auth.product.features, key=lambda f: f.id):
            cats = sorted(g.category_id for g in feature.grants if g.effective_from <= today)
            used.update(cats)
            use.features.append((feature, cats))
        uses.append(use)
    return uses, categories, used


def last_reads(school_id: int) -> dict[int, dict[str, datetime]]:
    """Return, per product id, when it last read each category of this school (R8), from the api.read audit entries."""

    category = AuditEntry.details["category"].as_string()
    rows = db.session.execute(
        select(AuditEntry.target_id, category, func.max(AuditEntry.at))
        .where(AuditEntry.action == "api.read", AuditEntry.organisation_id == school_id)
        .group_by(AuditEntry.target_id, category)
    ).all()
    out: dict[int, dict[str, datetime]] = {}
    for product_id, cat, at in rows:
        if product_id is None or cat is None:
            continue
        # max() loses the column type on SQLite; read it back as the column would.
        at = UTCDateTime().process_result_value(datetime.fromisoformat(at) if isinstance(at, str) else at, None)
        out.setdefault(int(product_id), {})[cat] = at
    return out


def features_using(school: Organisation) -> list[Feature]:
    """Features of the school's live product authorisations (they stop getting fresh data on revoke, R6)."""
    uses, _, _ = data_use(school)
    seen: dict[str, Feature] = {}
    for use in uses:
        for feature, _cats in use.features:
            seen[feature.id] = feature
    return sorted(seen.values(), key=lambda f: f.name)


# ---------------------------------------------------------------- history


def school_history_query(school_id: int) -> Select:
    return select(AuditEntry).where(AuditEntry.organisation_id == school_id).order_by(AuditEntry.id.desc())
