"""The sweep's guarantees: on time (R24, R35), DfE deadlines (R28), preview = proof (R41), holds (R40), resuming, receipts."""
from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import date, timedelta

import pytest
from sqlalchemy import func, inspect, select

from portal import store
from portal.extensions import db
from portal.models import (
    ConnectionState,
    Feature,
    JobRun,
    Product,
    ProductAuthorisation,
    Role,
    RunStatus,
)
from portal.models.base import utcnow
from portal.models.mis import MisAssessmentResult, MisAttendanceMark, MisMembership, MisPupil
from portal.models.retention import DeletionOrder, DfeAgreement, RetentionProof, RetentionWorkItem
from portal.retention import schedule_category_deletion, schedule_connection_deletion
from portal.retention.preview import preview
from portal.retention.sweep import run_sweep
from tests.test_retention import at, exists, orphan_count, world, zero_window_app  # noqa: F401  (fixtures)


def leaver(world, conn, leaving: date, **kw) -> MisPupil:
    """A pupil whose MIS leaving date has passed (R29: deadline = leaving date + 6 months)."""
    return world.pupil(conn, year="3", extracted=date(2025, 1, 10), leaving=leaving, **kw)


def proofs() -> list[RetentionProof]:
    return db.session.execute(select(RetentionProof).order_by(RetentionProof.id)).scalars().all()


def test_r24_an_overdue_record_goes_at_the_next_sweep_and_is_flagged_late(zero_window_app, world):
    conn = world.school()
    pupil = leaver(world, conn, date(2025, 7, 23))  # deadline 2026-01-23
    db.session.commit()
    run_sweep(as_of=date(2026, 1, 22))
    assert exists(MisPupil, pupil)
    run = run_sweep(as_of=date(2026, 1, 24))  # no sweep ran on the 23rd
    assert run.status == RunStatus.succeeded
    assert not exists(MisPupil, pupil)
    [proof] = proofs()
    assert (proof.rule_id, proof.deadline, proof.late_days, proof.late) == ("R29", date(2026, 1, 23), 1, True)
    assert run.stats["late"] == 1


def test_r35_live_data_goes_backup_window_days_before_the_deadline(app, world):
    conn = world.school()
    pupil = leaver(world, conn, date(2025, 7, 23))  # deadline 2026-01-23, B = 30 by default
    db.session.commit()
    run_sweep(as_of=date(2025, 12, 23))
    assert exists(MisPupil, pupil)
    run_sweep(as_of=date(2025, 12, 24))
    assert not exists(MisPupil, pupil)
    assert proofs()[0].late_days == 0


def test_r28_dfe_agreement_ending_before_christmas_deletes_government_data_at_the_first_sweep_after(zero_window_app, world):
    conn = world.school()
    gov = world.pupil(conn, dob=date(2008, 1, 1), data_type="government")
    school_pupil = world.pupil(conn, year="3", extracted=date(2025, 10, 1))
    db.session.add(DfeAgreement(reference="DfE-2025", ends_on=date(2025, 12, 19)))
    db.session.commit()
    untimed = world.pupil(conn, dob=None, data_type="government")
    db.session.commit()
    run = run_sweep(as_of=date(2025, 12, 19))
    assert exists(MisPupil, gov) and run.stats["exceptions"] == 1  # R27: listed, never kept silently
    run_sweep(as_of=date(2025, 12, 20))
    assert not exists(MisPupil, gov) and not exists(MisPupil, untimed)
    assert exists(MisPupil, school_pupil)
    assert db.session.execute(select(func.count()).select_from(MisPupil).where(MisPupil.data_type == "government")).scalar() == 0
    [proof] = proofs()
    assert (proof.rule_id, proof.trigger_on, proof.deadline) == ("R28", date(2025, 12, 19), date(2026, 1, 21))
    assert proof.done_at.date() <= date(2026, 1, 21) or proof.as_of <= date(2026, 1, 21)


def test_r41_preview_counts_equal_what_the_sweep_deletes_and_the_proof_records(zero_window_app, world):
    conn = world.school()
    pupils = [leaver(world, conn, date(2025, 7, 22), rows=3) for _ in range(3)]
    stays = world.pupil(conn, year="3", extracted=date(2025, 10, 1))
    tomb = world.mark(stays, deleted=date(2026, 1, 15))  # deleted upstream: goes 7 days later
    db.session.commit()
    day = date(2026, 1, 22)

    lines = preview(day - timedelta(days=1), 1)
    planned = {(l.rule_id, l.category): l.count for l in lines if l.due_on == day}
    assert [(l.rule_id, l.trigger_on) for l in lines if l.category == "student_basic"] == [("R29", date(2025, 7, 22))]
    assert planned == {
        ("R29", "student_basic"): 3, ("R29", "student_demographics"): 3, ("R29", "student_assessment"): 9,
        ("R29", "student_attendance_exclusions"): 9, ("R29", "student_timetable"): 3,
        ("TOMB", "student_attendance_exclusions"): 1,
    }
    run = run_sweep(as_of=day)
    proven = {(p.rule_id, c): n for p in proofs() for c, n in p.counts.items()}
    assert proven == planned
    r29 = next(p for p in proofs() if p.rule_id == "R29")
    lines = "".join(f"mis_pupils:{i}\n" for i in sorted(inspect(p).identity[0] for p in pupils))
    assert r29.ids_sha256 == hashlib.sha256(lines.encode()).hexdigest()
    assert r29.records == 3 and r29.trigger_on == date(2025, 7, 22) and r29.deadline == day
    assert not exists(MisAttendanceMark, tomb) and exists(MisPupil, stays)
    assert orphan_count() == 0
    assert run.stats["records"] == 4
    # No proof (nor its audit entry) holds a name, UPN or date of birth.
    dump = json.dumps([{c.name: getattr(p, c.name) for c in RetentionProof.__table__.columns} for p in proofs()], default=str)
    for p in pupils:
        for value in ("Forename", "Surname", "A0000", "2012-05-05"):
            assert value not in dump
    assert db.session.execute(select(func.count()).select_from(RetentionWorkItem)).scalar() == 0


def test_r40_a_held_pupil_survives_is_listed_as_held_and_goes_when_the_hold_lapses(zero_window_app, world, make):
    conn = world.school()
    held = leaver(world, conn, date(2025, 1, 10))  # deadline 2025-07-10
    unapproved = leaver(world, conn, date(2025, 1, 10))
    support = make.user(support=True)
    world.hold("mis_pupils", held, date(2026, 6, 30), support)
    hold = world.hold("mis_pupils", unapproved, date(2026, 6, 30), support)
    hold.dpo_approved_at = None  # R40: a hold needs the DPO's approval
    db.session.commit()
    listed = [(l.rule_id, l.held, l.count) for l in preview(date(2026, 1, 1), 30) if l.category == "student_basic"]
    assert listed == [("R29", False, 1), ("R29", True, 1)]
    run = run_sweep(as_of=date(2026, 1, 1))
    assert exists(MisPupil, held) and not exists(MisPupil, unapproved)
    assert run.stats["held"] == 1
    run_sweep(as_of=date(2026, 6, 30))
    assert exists(MisPupil, held)
    run_sweep(as_of=date(2026, 7, 1))
    assert not exists(MisPupil, held)
    # The unapproved one was simply overdue; the held one was deleted the day its hold lapsed, on time.
    assert [p.late_days for p in proofs()] == [(date(2026, 1, 1) - date(2025, 7, 10)).days, 0]


class Killed(BaseException):
    """Stands for the process dying mid-sweep (not an error the sweep could record)."""


def test_a_killed_sweep_resumed_completes_with_no_orphan_rows(make_app, world, monkeypatch):
    app = make_app(RETENTION_BACKUP_WINDOW_DAYS=0, RETENTION_BATCH_SIZE=2)
    with app.app_context():
        conn = world.school()
        pupils = [leaver(world, conn, date(2025, 7, 22)) for _ in range(5)]
        db.session.commit()
        expected = {(l.rule_id, l.category): l.count for l in preview(date(2026, 1, 22), 0)}
        real = store.delete_pupils
        calls = []

        def dies_on_second_batch(ids, **kw):
            calls.append(ids)
            if len(calls) == 2:
                raise Killed()
            return real(ids, **kw)

        monkeypatch.setattr(store, "delete_pupils", dies_on_second_batch)
        with pytest.raises(Killed):
            run_sweep(as_of=date(2026, 1, 22))
        db.session.rollback()
        run = db.session.execute(select(JobRun).where(JobRun.job_id == "retention:sweep")).scalar_one()
        assert run.status == RunStatus.running  # as a dead process leaves it
        assert sum(exists(MisPupil, p) for p in pupils) == 3
        assert orphan_count() == 0

        monkeypatch.setattr(store, "delete_pupils", real)
        resumed = run_sweep(run_id=run.id)
        assert resumed.status == RunStatus.succeeded
        assert not any(exists(MisPupil, p) for p in pupils)
        assert orphan_count() == 0
        proven = {(p.rule_id, c): n for p in proofs() for c, n in p.counts.items()}
        assert proven == expected
        assert [p.records for p in proofs()] == [5]


def test_revoking_with_delete_now_deletes_at_the_next_sweep_and_gives_a_receipt(app, world, make, client, auth):
    conn = world.school()
    other = world.school()
    pupil = world.pupil(conn, year="3", extracted=date(2025, 10, 1))
    kept = world.pupil(other, year="3", extracted=date(2025, 10, 1))
    admin = make.user(Role.school_admin, conn.school)
    conn.state, conn.state_changed_at = ConnectionState.revoked, utcnow()
    order = schedule_connection_deletion(conn, immediate=True, user=admin)
    db.session.commit()
    assert order.due_on == order.trigger_on
    run_sweep(as_of=order.due_on)
    assert not exists(MisPupil, pupil) and exists(MisPupil, kept)
    db.session.refresh(order)
    assert order.completed_at is not None

    auth.login(admin)
    page = client.get(f"/schools/{conn.school_id}/retention")
    assert page.status_code == 200 and f'data-order="{order.id}"'.encode() in page.data
    resp = client.get(f"/schools/{conn.school_id}/retention/receipts.csv?order={order.id}")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert {r["category"]: int(r["rows_deleted"]) for r in rows}["student_basic"] == 1
    assert {r["rule"] for r in rows} == {"R32-now"}
    assert client.get(f"/schools/{other.school_id}/retention").status_code == 404
    assert client.get(f"/schools/{conn.school_id}/retention/receipts.csv?order=x").status_code == 400


def test_revoking_under_the_normal_rules_is_cancelled_by_re_authorising(zero_window_app, world):
    conn = world.school()
    pupil = world.pupil(conn, year="1", extracted=date(2025, 10, 1))
    conn.state, conn.state_changed_at = ConnectionState.revoked, at(date(2025, 10, 6))
    order = schedule_connection_deletion(conn, immediate=False, user=None)
    db.session.commit()
    conn.state = ConnectionState.approved
    db.session.commit()
    run_sweep(as_of=order.due_on + timedelta(days=1))
    assert exists(MisPupil, pupil)


def test_r31_categories_no_remaining_product_needs_go_six_months_after_the_grant_ended(zero_window_app, world):
    conn = world.school()
    pupil = world.pupil(conn, year="1", extracted=date(2025, 1, 10))
    tracking = Product(name="Tracker", purpose="Pupil tracking", features=[db.session.get(Feature, "pupil_tracking")])
    attendance = Product(name="Attendance", purpose="Attendance", features=[db.session.get(Feature, "attendance_reporting")])
    db.session.add_all([tracking, attendance])
    db.session.flush()
    dropped = ProductAuthorisation(school_id=conn.school_id, product_id=tracking.id)
    db.session.add_all([dropped, ProductAuthorisation(school_id=conn.school_id, product_id=attendance.id)])
    db.session.commit()
    dropped.revoked_at = at(date(2025, 6, 30))
    order = schedule_category_deletion(conn.school)
    db.session.commit()
    assert order.categories == ["student_assessment", "student_timetable"]
    order.trigger_on, order.due_on = date(2025, 6, 30), date(2025, 12, 30)  # as if scheduled on the day it ended
    db.session.commit()

    def count(model):
        return db.session.execute(select(func.count()).select_from(model)).scalar()

    run_sweep(as_of=date(2025, 12, 29))
    assert (count(MisAssessmentResult), count(MisMembership)) == (2, 1)
    run_sweep(as_of=date(2025, 12, 30))
    assert (count(MisAssessmentResult), count(MisMembership)) == (0, 0)
    assert exists(MisPupil, pupil) and count(MisAttendanceMark) == 2
    [proof] = proofs()
    assert (proof.rule_id, proof.order_id, proof.counts) == (
        "R31-grant", order.id, {"student_assessment": 2, "student_timetable": 1})
    assert orphan_count() == 0


def test_old_run_logs_go_after_24_months(zero_window_app):
    old = JobRun(job_id="extract:1", kind="extract", scheduled_for=at(date(2023, 1, 1)), status=RunStatus.succeeded,
                 finished_at=at(date(2023, 1, 1)), params={}, stats={})
    recent = JobRun(job_id="extract:1", kind="extract", scheduled_for=at(date(2025, 1, 1)), status=RunStatus.succeeded,
                    finished_at=at(date(2025, 1, 1)), params={}, stats={})
    db.session.add_all([old, recent])
    db.session.commit()
    old_id, recent_id = old.id, recent.id
    run = run_sweep(as_of=date(2025, 1, 2))
    assert db.session.get(JobRun, old_id) is None
    # The sweep's own row survives.
    assert db.session.get(JobRun, recent_id) is not None and db.session.get(JobRun, run.id) is not None


def test_cli_dry_run_lists_due_counts_and_deletes_nothing(zero_window_app, world):
    conn = world.school()
    pupil = leaver(world, conn, date(2025, 7, 22))
    db.session.commit()
    runner = zero_window_app.test_cli_runner()
    result = runner.invoke(args=["portal", "retention", "--dry-run", "--as-of", "2026-01-01"])
    assert result.exit_code == 0, result.output
    assert "2026-01-22" in result.output and "R29" in result.output and "student_basic" in result.output
    assert "2025-07-22" in result.output
    assert exists(MisPupil, pupil)
    bad = runner.invoke(args=["portal", "retention", "--dry-run", "--as-of", "22/01/2026"])
    assert bad.exit_code != 0 and "YYYY-MM-DD" in bad.output
    done = runner.invoke(args=["portal", "retention", "--as-of", "2026-01-22"])
    assert done.exit_code == 0 and "1 records" in done.output
    assert not exists(MisPupil, pupil)


def test_the_connection_lifecycle_schedules_the_deletion_when_a_school_revokes(app, world, make):
    from portal import lifecycle

    conn = world.school()
    pupil = world.pupil(conn, year="3", extracted=date(2025, 10, 1))
    admin = make.user(Role.school_admin, conn.school)
    db.session.commit()
    lifecycle.revoke(conn, admin, delete_now=True)
    order = db.session.execute(select(DeletionOrder)).scalar_one()
    assert (order.connection_id, order.rule_id, order.requested_by_id) == (conn.id, "R32-now", admin.id)
    run_sweep(as_of=order.due_on)
    assert not exists(MisPupil, pupil)
