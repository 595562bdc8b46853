"""R36: what an "anonymise" rule keeps of the pupils it deletes: attendance cells, small ones suppressed."""
from __future__ import annotations

from flask import current_app
from sqlalchemy import delete, select

from portal import store
from portal.extensions import db
from portal.models import JobRun
from portal.models.retention import AttendanceAggregate, RetentionAction, RetentionProof, RetentionRule, RetentionWorkItem

__all__ = ["aggregate_planned"]


def aggregate_planned(run: JobRun) -> int:
    """Store the aggregates of the pupils this run will delete under an "anonymise" rule; return cells stored.

    Called at the end of planning, before anything is deleted, in the plan's transaction: a plan
    made again (a resumed run) replaces the run's cells. Each cell counts pupils and sessions; a
    cell about fewer pupils than RETENTION_SUPPRESSION_THRESHOLD keeps neither count.
    """
    db.session.execute(delete(AttendanceAggregate).where(AttendanceAggregate.run_id == run.id))
    rules = db.session.execute(
        select(RetentionRule.id).where(RetentionRule.action == RetentionAction.anonymise)
    ).scalars().all()
    threshold = int(current_app.config.get("RETENTION_SUPPRESSION_THRESHOLD", 10))
    items, proofs = RetentionWorkItem.__table__, RetentionProof.__table__
    stored = 0
    for rule_id in rules:
        pupil_ids = (
            select(items.c.record_id)
            .join(proofs, proofs.c.id == items.c.proof_id)
            .where(items.c.run_id == run.id, items.c.record_table == "mis_pupils", proofs.c.rule_id == rule_id)
        )
        cells = [
            dict(run_id=run.id, rule_id=rule_id, school_id=school_id, academic_year=academic_year,
                 year_group=year_group, code=code, suppressed=pupils < threshold,
                 pupils=None if pupils < threshold else pupils, sessions=None if pupils < threshold else sessions)
            for school_id, academic_year, year_group, code, pupils, sessions in store.attendance_cells(pupil_ids)
        ]
        if cells:
            db.session.execute(AttendanceAggregate.__table__.insert(), cells)
            stored += len(cells)
    return stored
