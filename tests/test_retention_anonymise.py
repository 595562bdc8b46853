"""R36: an "anonymise" rule keeps attendance aggregates only, with cells about fewer pupils than the threshold suppressed."""
from __future__ import annotations

from datetime import date

from sqlalchemy import func, inspect, select

from portal.extensions import db
from portal.models import AttendanceAggregate, RetentionRule
from portal.models.mis import MisAttendanceMark, MisPupil
from portal.models.retention import RetentionAction
from portal.retention.sweep import run_sweep
from tests.test_retention import world, zero_window_app  # noqa: F401  (fixtures)

LEFT = date(2025, 7, 23)  # R29 deadline 2026-01-23


def cells() -> dict[tuple, tuple]:
    rows = db.session.execute(select(AttendanceAggregate)).scalars().all()
    return {(c.academic_year, c.year_group, c.code): (c.pupils, c.sessions, c.suppressed) for c in rows}


def test_r36_after_a_sweep_the_aggregates_identify_no_pupil_and_a_cell_of_3_is_suppressed(zero_window_app, world):
    db.session.get(RetentionRule, "R29").action = RetentionAction.anonymise
    conn = world.school()
    year6 = [world.pupil(conn, year="6", extracted=date(2025, 1, 10), leaving=LEFT) for _ in range(12)]
    for pupil in year6[:3]:
        world.mark(pupil)  # one N (unauthorised absence) mark each on 2019-10-02: academic year 2019/20
    for _ in range(3):
        world.pupil(conn, year="5", extracted=date(2025, 1, 10), leaving=LEFT)
    db.session.commit()
    school_id = conn.school_id

    run = run_sweep(as_of=date(2026, 1, 23))
    assert run.status.value == "succeeded" and run.stats["aggregate_cells"] == 3
    assert db.session.execute(select(func.count()).select_from(MisPupil)).scalar() == 0
    assert db.session.execute(select(func.count()).select_from(MisAttendanceMark)).scalar() == 0
    assert cells() == {
        (2024, "6", "/"): (12, 24, False),  # 12 pupils x 2 sessions
        (2019, "6", "N"): (None, None, True),  # 3 pupils: suppressed
        (2024, "5", "/"): (None, None, True),  # 3 pupils: suppressed
    }
    assert {c.school_id for c in db.session.execute(select(AttendanceAggregate)).scalars()} == {school_id}
    # No column can identify a pupil: no pupil key, UPN, provider id or hashed id.
    columns = {c["name"] for c in inspect(db.engine).get_columns("attendance_aggregates")}
    assert columns == {"id", "run_id", "rule_id", "school_id", "academic_year", "year_group", "code", "pupils",
                       "sessions", "suppressed", "created_at"}


def test_r36_a_delete_rule_keeps_no_aggregate(zero_window_app, world):
    conn = world.school()
    for _ in range(12):
        world.pupil(conn, year="6", extracted=date(2025, 1, 10), leaving=LEFT)
    db.session.commit()
    run_sweep(as_of=date(2026, 1, 23))
    assert db.session.execute(select(func.count()).select_from(MisPupil)).scalar() == 0
    assert cells() == {}


def test_r36_the_threshold_is_the_operators(make_app, world):
    app = make_app(RETENTION_BACKUP_WINDOW_DAYS=0, RETENTION_SUPPRESSION_THRESHOLD=3)
    with app.app_context():
        db.session.get(RetentionRule, "R29").action = RetentionAction.anonymise
        conn = world.school()
        for _ in range(3):
            world.pupil(conn, year="5", extracted=date(2025, 1, 10), leaving=LEFT)
        db.session.commit()
        run_sweep(as_of=date(2026, 1, 23))
        assert cells() == {(2024, "5", "/"): (3, 6, False)}
