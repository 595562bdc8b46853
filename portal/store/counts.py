"""School page counts: live records per category, counts only and no audit entry."""
from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select, union_all

from portal.extensions import db
from portal.models.mis import STORE_MODELS


def category_counts(school_id: int) -> dict[str, int]:
    """Return the live records held for a school per category (tombstoned rows excluded), for the data-use page.

    One statement: a grouped count per store table, joined with UNION ALL (a category may span tables,
    so the parts are summed here). Counts only: no record is read, so no audit entry is written (a page
    view is not a data access).
    """
    parts = [
        select(model.category.label("category"), func.count().label("n"))
        .where(model.school_id == school_id, model.deleted_at.is_(None))
        .group_by(model.category)
        for model in STORE_MODELS.values()
    ]
    totals: Counter = Counter()
    for category, n in db.session.execute(union_all(*parts)):
        totals[category] += n
    return dict(totals)
