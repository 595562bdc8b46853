"""A pupil the provider deletes and then restores (Wonde's restored_at) comes back with every record, not only their own row."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.extract import engine, run_extract
from portal.jobs.claims import REQUESTED
from portal.jobs.scheduler import fire_job
from portal.models import AuditEntry, JobRun, RunStatus
from portal.models.base import utcnow
from portal.models.mis import MisAttendanceMark, MisPupil
from portal.sandbox import synthetic
from portal.testing import conformance
from portal.testing.plugin import installed_providers


def _live(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(model.deleted_at.is_(None)))


def _a_pupil_deleted_after_a_full_run(served, school) -> tuple[int, int, str, datetime]:
    """A full run, then the provider deletes a pupil and an incremental run sees it: (pupils, marks) live
    after the full run, the pupil's key and when they were deleted."""
    assert run_extract(served.connection_id, mode="full").status == RunStatus.succeeded
    pupils, marks = _live(MisPupil), _live(MisAttendanceMark)
    key = next(iter(school.pupils))
    at = datetime.now(timezone.utc) + timedelta(seconds=1)
    school.delete_pupil(key, at)
    assert run_extract(served.connection_id, mode="incremental").status == RunStatus.succeeded
    return pupils, marks, key, at


# The two real providers' sandboxes (the example connector's models no restore).
@pytest.mark.parametrize("provider", [p for p in sorted(installed_providers()) if p in ("groupcall", "wonde")])
def test_a_restored_pupil_gets_their_registers_back_from_a_full_run_queued_by_the_run_that_saw_them_return(provider, make_app):
    school = synthetic.generate_school(31, pupils=12, days=5, phase="primary")
    with conformance.serve_school(installed_providers()[provider](), school, make_app) as served:
        pupils, marks, key, at = _a_pupil_deleted_after_a_full_run(served, school)
        assert _live(MisPupil) == pupils - 1
        removed_marks = marks - _live(MisAttendanceMark)
        assert removed_marks > 0, "the pupil's registers went with them"
        assert db.session.scalar(select(func.count()).select_from(JobRun).where(JobRun.status == RunStatus.queued)) == 0

        school.restore_pupil(key, at + timedelta(seconds=1))
        back = run_extract(served.connection_id, mode="incremental")
        assert back.status == RunStatus.succeeded, back.error_message
        assert _live(MisPupil) == pupils, "the pupil is back"
        # Wonde: their registers are older than the watermark, so no incremental run asks for them
        # (Groupcall's changeset may list them again); the run that saw the pupil return queued a full run.
        assert _live(MisAttendanceMark) == (marks - removed_marks if provider == "wonde" else marks)
        queued = db.session.execute(select(JobRun).where(JobRun.status == RunStatus.queued)).scalar_one()
        assert (queued.connection_id, queued.params[REQUESTED]["mode"], queued.params["reason"]) == (
            served.connection_id, "full", "pupils_restored")
        entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "extract.resync_queued")).scalar_one()
        assert entry.details == {"connection_id": served.connection_id, "pupils_restored": 1, "queued_run_id": queued.id}

        # A scheduling process's housekeeping starts it, as it does support's.
        fire_job("jobs:recover", utcnow())
        db.session.refresh(queued)
        assert queued.status == RunStatus.succeeded, queued.error_message
        assert (_live(MisPupil), _live(MisAttendanceMark)) == (pupils, marks)
        # An ordinary night after that queues nothing more.
        assert run_extract(served.connection_id, mode="incremental").status == RunStatus.succeeded
        assert db.session.scalar(select(func.count()).select_from(JobRun).where(JobRun.status == RunStatus.queued)) == 0


class _ProcessEnded(BaseException):
    """The worker's process ending between the run's commit and the queueing of the full run."""


def test_a_full_run_is_still_owed_when_the_process_ended_before_queueing_it(make_app, monkeypatch):
    school = synthetic.generate_school(32, pupils=12, days=4, phase="primary")
    with conformance.serve_school(installed_providers()["wonde"](), school, make_app) as served:
        pupils, marks, key, at = _a_pupil_deleted_after_a_full_run(served, school)
        school.restore_pupil(key, at + timedelta(seconds=1))

        def ended(*args, **kwargs):
            raise _ProcessEnded()

        monkeypatch.setattr(engine, "_resync", ended)
        with pytest.raises(_ProcessEnded):
            run_extract(served.connection_id, mode="incremental")
        monkeypatch.undo()
        back = db.session.execute(select(JobRun).order_by(JobRun.id.desc())).scalars().first()
        assert back.status == RunStatus.succeeded and back.stats["pupils_restored"] == 1
        assert db.session.scalar(select(func.count()).select_from(JobRun).where(JobRun.status == RunStatus.queued)) == 0
        assert _live(MisAttendanceMark) < marks, "the restored pupil's registers are still removed"

        # The next night's run, asked as incremental, is the full run owed.
        owed = run_extract(served.connection_id, mode="incremental")
        assert owed.status == RunStatus.succeeded, owed.error_message
        assert (owed.params["mode"], owed.params["mode_reason"]) == ("full", "pupils_restored")
        assert (_live(MisPupil), _live(MisAttendanceMark)) == (pupils, marks)
        # Paid: the night after is incremental again.
        after = run_extract(served.connection_id, mode="incremental")
        assert (after.params["mode"], after.params["mode_reason"]) == ("incremental", "asked")
