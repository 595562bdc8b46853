"""A class the provider deletes takes its memberships and lessons with it; restored (Wonde's restored_at), it gets them back."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.extract import run_extract
from portal.jobs.claims import REQUESTED
from portal.jobs.scheduler import fire_job
from portal.models import AuditEntry, JobRun, RunStatus
from portal.models.base import utcnow
from portal.models.mis import MisGroup, MisLesson, MisMembership
from portal.sandbox import synthetic
from portal.testing import conformance
from portal.testing.plugin import installed_providers


def _live(model, group: str | None = None) -> int:
    where = [model.deleted_at.is_(None)]
    if group is not None:
        where.append((model.external_id if model is MisGroup else model.group_external_id) == group)
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def _queued() -> list[JobRun]:
    return list(db.session.scalars(select(JobRun).where(JobRun.status == RunStatus.queued)))


@pytest.mark.parametrize("provider", [p for p in sorted(installed_providers()) if p in ("groupcall", "wonde")])
def test_a_deleted_class_stops_its_memberships_and_lessons_and_a_restored_one_gets_them_back(provider, make_app):
    school = synthetic.generate_school(33, pupils=30, days=5, phase="secondary")
    with conformance.serve_school(installed_providers()[provider](), school, make_app) as served:
        assert run_extract(served.connection_id, mode="full").status == RunStatus.succeeded
        # The class as the store knows it: Wonde's by its Wonde id, Groupcall's by its own.
        group = next(g for g in school.groups.values() if g.group_type == "class" and g.members
                     and any(lesson.group_key == g.key for lesson in school.lessons.values()))
        stored = db.session.scalars(select(MisGroup.external_id).where(MisGroup.name == group.name)).all()
        assert len(stored) == 1
        class_id = stored[0]
        members, lessons = _live(MisMembership, class_id), _live(MisLesson, class_id)
        assert members > 0 and lessons > 0
        totals = (_live(MisGroup), _live(MisMembership), _live(MisLesson))
        at = datetime.now(timezone.utc) + timedelta(seconds=1)

        school.delete_group(group.key, at)
        gone = run_extract(served.connection_id, mode="incremental")
        assert gone.status == RunStatus.succeeded, gone.error_message
        # Wonde lists no deletion entries for them (they vanish with the class): they go with it all the same.
        assert (_live(MisGroup, class_id), _live(MisMembership, class_id), _live(MisLesson, class_id)) == (0, 0, 0)
        assert (_live(MisGroup), _live(MisMembership), _live(MisLesson)) == (
            totals[0] - 1, totals[1] - members, totals[2] - lessons)
        assert _queued() == []

        school.restore_group(group.key, at + timedelta(seconds=1))
        back = run_extract(served.connection_id, mode="incremental")
        assert back.status == RunStatus.succeeded, back.error_message
        assert (_live(MisGroup, class_id), _live(MisMembership, class_id)) == (1, members)
        # Its lessons keep their older stamps: the run that saw the class return queued a full run for them.
        (queued,) = _queued()
        assert (queued.params[REQUESTED]["mode"], queued.params["reason"]) == ("full", "groups_restored")
        entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "extract.resync_queued")).scalar_one()
        assert entry.details == {"connection_id": served.connection_id, "groups_restored": 1, "queued_run_id": queued.id}
        fire_job("jobs:recover", utcnow())
        db.session.refresh(queued)
        assert queued.status == RunStatus.succeeded, queued.error_message
        assert (_live(MisGroup), _live(MisMembership), _live(MisLesson)) == totals
