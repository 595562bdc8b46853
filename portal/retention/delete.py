"""Delete records by table, for the sweep and the ledger replay: pupils with their rows, store rows, memberships, run logs."""
from __future__ import annotations

from collections import Counter

from sqlalchemy import delete, select

from portal import store
from portal.extensions import db
from portal.models import JobRun, Membership
from portal.models.mis import MisPupil
from portal.retention import users
from portal.retention.plan import RUN_LOGS

__all__ = ["delete_records"]


def delete_records(table: str, ids: list[int], *, run_id: int | None = None) -> dict[int, Counter]:
    """Hard-delete these records of one table; return, per record found and deleted, its rows deleted per category.

    A pupil takes every row about them (R34); any other record counts one row of its category.
    ``run_id`` is the sweep's run: its audit entries name it, and its own run log is never deleted.
    Runs in the caller's transaction.
    """
    if table == MisPupil.__tablename__:
        return store.delete_pupils(ids, run_id=run_id)
    if table == Membership.__tablename__:
        found = users.delete_memberships(ids, run_id=run_id)
    elif table == JobRun.__tablename__:
        found = _delete_run_logs([i for i in ids if i != run_id])
    else:
        found = store.delete_rows(table, ids, run_id=run_id)
    return {record_id: Counter({category: 1}) for record_id, category in found.items()}


def _delete_run_logs(ids: list[int]) -> dict[int, str]:
    """Delete finished run logs; return the ids found."""
    found = set(db.session.execute(select(JobRun.id).where(JobRun.id.in_(ids))).scalars())
    if found:
        db.session.execute(delete(JobRun.__table__).where(JobRun.id.in_(found)))
    return dict.fromkeys(found, RUN_LOGS)
