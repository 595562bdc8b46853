"""School page counts: live records per category, counts only and no audit entry."""
from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select

from portal.extensions import db
from portal.models.mis import STORE_MODELS


def category_counts(school_id: int) -> dict[str, int]:
    """Return the live records held for a school per category (tombstoned rows excluded), for the data-use page.

    Counts only: no record is read, so no audit entry is written (a page view is not a data access).
    """
    totals: Counter = Counter()
    for model in STORE_MODELS.values():
        rows = db.session.execute(
            select(model.category, func.count())
            .where(model.school_id == school_id, model.deleted_at.is_(None))
            .group_by(model.category)
        )
        for category, n in rows:
            totals[category] += n
    return dict(totals)
