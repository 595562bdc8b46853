"""Retention over 8 simulated years of school life: every deadline met to the day, nothing a day early (R24–R40)."""
from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import date, datetime, time, timedelta

import pytest
from sqlalchemy import func, inspect, select

from portal.extensions import db
from portal.models import Connection, ConnectionState, User
from portal.models.mis import (
    MisAssessmentResult,
    MisAttendanceMark,
    MisDemographics,
    MisGroup,
    MisMembership,
    MisPupil,
    MisStaff,
)
from portal.models.retention import DfeAgreement, LegalHold, RetentionProof, SchoolRetentionSetting
from portal.retention.calendar import LONDON
from portal.retention.sweep import run_sweep
from portal.store import record_year_groups

_ids = itertools.count(1)


def at(day: date, hour: int = 3) -> datetime:
    """Return a London time on the day (extracts run in the small hours)."""
    return datetime.combine(day, time(hour), tzinfo=LONDON)


class World:
    """Builds schools, connections and MIS rows the way the extract engine leaves them."""

    def __init__(self, make) -> None:
        self.make = make

    def school(self, phase: str = "Primary", ends_on: date | None = None, connector: str = "fake",
               last_year_group: int | None = -1) -> Connection:
        """A school and its connection; its last year group (R30) confirmed as its phase suggests unless given."""
        school = self.make.school(phase=phase, starts_on=date(2019, 9, 1), ends_on=ends_on)
        conn = Connection(school_id=school.id, connector=connector, state=ConnectionState.approved,
                          state_changed_at=at(date(2019, 9, 1)))
        db.session.add(conn)
        if last_year_group == -1:
            last_year_group = {"Primary": 6, "Secondary with sixth form": 13}.get(phase)
        if last_year_group is not None:
            db.session.add(SchoolRetentionSetting(school_id=school.id, last_year_group=last_year_group))
        db.session.flush()
        return conn

    def _common(self, conn: Connection, category: str, extracted: date, **extra) -> dict:
        return dict(school_id=conn.school_id, connection_id=conn.id, category=category, external_id=f"x{next(_ids)}",
                    extracted_at=at(extracted), content_hash="0" * 64, **extra)

    def pupil(self, conn: Connection, *, year: str | None = "1", extracted: date = date(2019, 10, 1),
              leaving: date | None = None, dob: date | None = date(2012, 5, 5), data_type: str = "customer",
              rows: int = 2) -> MisPupil:
        n = next(_ids)
        pupil = MisPupil(**self._common(conn, "student_basic", extracted, data_type=data_type),
                         legal_forename=f"Forename{n}", legal_surname=f"Surname{n}", upn=f"A{n:012d}",
                         date_of_birth=dob, year_group=year, leaving_date=leaving)
        db.session.add(pupil)
        db.session.flush()
        if year is not None:
            # What the extract records beside the row: the pupil was in this year group that day (R30).
            record_year_groups(conn.id, {pupil.external_id: (year, None)}, at(extracted))
        # Rows about the pupil in every pupil-level category (R34).
        about = dict(pupil_id=pupil.id, pupil_external_id=pupil.external_id)
        db.session.add(MisDemographics(**self._common(conn, "student_demographics", extracted, data_type=data_type), **about, fsm=True, ethnicity="WBRI"))
        for i in range(rows):
            db.session.add(MisAttendanceMark(**self._common(conn, "student_attendance_exclusions", extracted, data_type=data_type), **about,
                                             session_date=extracted + timedelta(days=i), session="AM", code="/"))
            db.session.add(MisAssessmentResult(**self._common(conn, "student_assessment", extracted, data_type=data_type), **about, result="100"))
        db.session.add(MisMembership(**self._common(conn, "student_timetable", extracted, data_type=data_type), **about, group_external_id="g1"))
        db.session.flush()
        return pupil

    def staff(self, conn: Connection, *, employed: bool | None = True, changed: date = date(2019, 10, 1)) -> MisStaff:
        staff = MisStaff(**self._common(conn, "staff_basic", changed), provider_updated_at=at(changed),
                         forename="Staff", surname="Member", currently_employed=employed)
        db.session.add(staff)
        db.session.flush()
        return staff

    def group(self, conn: Connection) -> MisGroup:
        group = MisGroup(**self._common(conn, "student_timetable", date(2019, 10, 1)), name="6A")
        db.session.add(group)
        db.session.flush()
        return group

    def mark(self, pupil: MisPupil, *, deleted: date | None = None) -> MisAttendanceMark:
        conn = db.session.get(Connection, pupil.connection_id)
        mark = MisAttendanceMark(**self._common(conn, "student_attendance_exclusions", date(2019, 10, 1)),
                                 pupil_id=pupil.id, pupil_external_id=pupil.external_id,
                                 session_date=date(2019, 10, 2), session="PM", code="N",
                                 deleted_at=at(deleted) if deleted else None)
        db.session.add(mark)
        db.session.flush()
        return mark

    def hold(self, table: str, record, review_on: date, support: User) -> LegalHold:
        hold = LegalHold(school_id=record.school_id, record_table=table, record_id=record.id, reason="Tribunal claim",
                         review_on=review_on, dpo_approved_by_id=support.id, dpo_approved_at=at(date(2025, 1, 1)),
                         created_by_id=support.id)
        db.session.add(hold)
        db.session.flush()
        return hold


def exists(model, row) -> bool:
    """Return whether the row (or row id) is still in the database, without loading a deleted object."""
    row_id = row if isinstance(row, int) else inspect(row).identity[0]
    return db.session.execute(select(model.id).where(model.id == row_id)).first() is not None


def orphan_count() -> int:
    """Rows about a pupil whose pupil row is gone (R34)."""
    total = 0
    for model in (MisDemographics, MisAttendanceMark, MisAssessmentResult, MisMembership):
        total += db.session.execute(
            select(func.count()).select_from(model).where(model.pupil_id.not_in(select(MisPupil.id)))
        ).scalar_one()
    return total


@pytest.fixture
def world(make):
    """Test-data builder for MIS rows."""
    return World(make)


@pytest.fixture
def zero_window_app(make_app):
    """The app with no backup window (B = 0), as in privacy-rules.md group D's examples."""
    app = make_app(RETENTION_BACKUP_WINDOW_DAYS=0)
    with app.app_context():
        yield app


@pytest.mark.slow
def test_eight_years_of_school_life_meet_every_deadline_to_the_day(zero_window_app, world, make):
    support = make.user(support=True)
    a = world.school("Primary")
    b = world.school("Secondary with sixth form", ends_on=date(2027, 3, 31))
    c = world.school("Primary")
    d = world.school("Primary")

    expected: dict[tuple, date | None] = {}
    events: list[tuple[date, Callable[[], None]]] = []

    def expect(model, row, day: date | None) -> None:
        expected[(model, row.id)] = day

    # School A, primary (last year group 6).
    p1 = world.pupil(a, year="3")  # R30: Year 6 in 2022/23 -> 31 Aug 2023 + 6 months = 29 Feb 2024
    expect(MisPupil, p1, date(2024, 2, 29))
    stale = world.mark(p1, deleted=date(2020, 3, 10))  # deleted upstream: the tombstone stays 7 days
    expect(MisAttendanceMark, stale, date(2020, 3, 17))
    p2 = world.pupil(a, year="4")  # leaves 22 Jul 2021 (R29), earlier than R30's 28 Feb 2023
    expect(MisPupil, p2, date(2022, 1, 22))
    events.append((date(2021, 5, 1), lambda: setattr(p2, "leaving_date", date(2021, 7, 22))))
    p3 = world.pupil(a, year="1")  # missing from the full extract of 1 Oct 2022 (R29, no leaving date)
    expect(MisPupil, p3, date(2023, 4, 1))
    events.append((date(2022, 10, 1), lambda: setattr(p3, "deleted_at", at(date(2022, 10, 1)))))
    p4 = world.pupil(a, year="2")  # leaving date set, then removed (re-admitted): R30 decides
    expect(MisPupil, p4, date(2025, 2, 28))
    events.append((date(2023, 1, 10), lambda: setattr(p4, "leaving_date", date(2023, 3, 31))))
    events.append((date(2023, 6, 1), lambda: setattr(p4, "leaving_date", None)))

    def join_p5():
        p5 = world.pupil(a, year="2", extracted=date(2023, 10, 1))
        expect(MisPupil, p5, date(2024, 8, 29))  # left 29 Feb 2024 + 6 months
        events.append((date(2024, 1, 15), lambda: setattr(p5, "leaving_date", date(2024, 2, 29))))
    events.append((date(2023, 10, 1), join_p5))

    # DfE pupil data (R27, R28): 23rd birthdays, and the agreement ending before Easter 2026.
    g1 = world.pupil(a, dob=date(2003, 2, 14), data_type="government")
    expect(MisPupil, g1, date(2026, 2, 14))
    g2 = world.pupil(a, dob=date(2004, 2, 29), data_type="government")
    expect(MisPupil, g2, date(2026, 4, 3))  # first sweep after Thu 2 Apr 2026, well before 28 Feb 2027
    g3 = world.pupil(a, dob=None, data_type="government")
    expect(MisPupil, g3, date(2026, 4, 3))
    events.append((date(2026, 3, 1), lambda: db.session.add(DfeAgreement(reference="DfE-1", ends_on=date(2026, 4, 2)))))
    s1 = world.staff(a, employed=False, changed=date(2025, 10, 1))  # R39
    expect(MisStaff, s1, date(2026, 4, 1))
    s2 = world.staff(a)
    expect(MisStaff, s2, None)

    # School B, 11-18, subscription ends 31 Mar 2027 (R31).
    b1 = world.pupil(b, year="11", extracted=date(2024, 10, 1))  # stays into the sixth form: R31 wins
    expect(MisPupil, b1, date(2027, 9, 30))
    b2 = world.pupil(b, year="13", extracted=date(2024, 10, 1))  # R30 with Year 13
    expect(MisPupil, b2, date(2026, 2, 28))
    bg = world.group(b)
    expect(MisGroup, bg, date(2027, 9, 30))

    # School C: revoked 6 Oct 2025 and not restored (R32); one pupil under a legal hold (R40).
    c1 = world.pupil(c, year="1", extracted=date(2024, 10, 1))
    expect(MisPupil, c1, date(2026, 4, 6))
    ch = world.pupil(c, year="1", extracted=date(2024, 10, 1))
    expect(MisPupil, ch, date(2026, 7, 1))
    world.hold("mis_pupils", ch, date(2026, 6, 30), support)

    def revoke(conn):
        conn.state, conn.state_changed_at = ConnectionState.revoked, at(date(2025, 10, 6), 10)
    events.append((date(2025, 10, 6), lambda: revoke(c)))
    # School D: revoked on the same day, re-authorised on 1 Mar 2026: nothing is deleted under R32.
    d1 = world.pupil(d, year="1", extracted=date(2024, 10, 1))
    expect(MisPupil, d1, None)
    events.append((date(2025, 10, 6), lambda: revoke(d)))

    def restore():
        d.state, d.state_changed_at = ConnectionState.approved, at(date(2026, 3, 1), 10)
    events.append((date(2026, 3, 1), restore))
    db.session.commit()

    start, end = date(2019, 9, 1), date(2028, 3, 31)
    days = {day for due in [*expected.values(), date(2024, 8, 29)] if due for day in (due - timedelta(days=1), due)}
    days |= {day for day, _ in events} | {date(2024, 1, 15)}
    days |= {date(y, m, 1) for y in range(2019, 2029) for m in (1, 4, 7, 10) if start <= date(y, m, 1) <= end}
    pending = events
    for day in sorted(days):
        pending.sort(key=lambda e: e[0])  # a joining pupil adds events of its own
        while pending and pending[0][0] <= day:
            pending.pop(0)[1]()
            db.session.commit()
        run = run_sweep(as_of=day)
        assert run.status.value == "succeeded", run.error_message
        for (model, row_id), due in list(expected.items()):
            gone = due is not None and day >= due
            assert exists(model, row_id) is not gone, f"{model.__tablename__} {row_id} due {due}, swept {day}"
        assert orphan_count() == 0

    late = db.session.execute(select(RetentionProof).where(RetentionProof.late_days > 0)).scalars().all()
    assert [(p.rule_id, p.deadline, p.as_of) for p in late] == []
    rules = {p.rule_id for p in db.session.execute(select(RetentionProof)).scalars()}
    assert {"R27", "R28", "R29", "R30", "R31", "R32", "R39", "TOMB"} <= rules
