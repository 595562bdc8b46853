"""The store's write side: batched upserts, change detection without decrypting, pupil links, staged removals."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from sqlalchemy import select, text

from portal import deletions, store
from portal.connectors import AttendanceMarkRecord, DemographicsRecord, PupilRecord, StaffRecord, Tombstone
from portal.extensions import db
from portal.models import (
    AuditEntry, Connection, ConnectionState, JobRun, MisAttendanceMark, MisDemographics, MisPupil, MisStaff,
)
from portal.models.base import utcnow

T = datetime(2026, 9, 1, tzinfo=timezone.utc)


def _connection(make) -> tuple[Connection, JobRun]:
    school = make.school()
    conn = Connection(school_id=school.id, connector="fake", state=ConnectionState.approved)
    db.session.add(conn)
    db.session.flush()
    run = JobRun(job_id=f"extract:{conn.id}", kind="extract", scheduled_for=utcnow(), connection_id=conn.id)
    db.session.add(run)
    db.session.commit()
    return conn, run


def _demo(ext: str, **kw) -> DemographicsRecord:
    return DemographicsRecord(external_id=ext, updated_at=T, ethnicity="WBRI", sen_status="K", eal=True, **kw)


def test_rewriting_the_same_values_counts_unchanged_though_ciphertext_differs(app, make):
    conn, run = _connection(make)
    for _ in range(2):
        writer = store.Writer(conn, run.id, full=False)
        writer.add(PupilRecord(external_id="P1", updated_at=T, legal_surname="Example"))
        writer.add(_demo("P1"))
        writer.finish()
        db.session.commit()
    assert dict(writer.counts["student_demographics"]) == {"unchanged": 1}
    writer = store.Writer(conn, run.id, full=False)
    writer.add(_demo("P1", fsm=True))
    writer.finish()
    db.session.commit()
    assert dict(writer.counts["student_demographics"]) == {"updated": 1}


def test_duplicates_in_one_batch_keep_the_last_copy(app, make):
    conn, run = _connection(make)
    writer = store.Writer(conn, run.id, full=False)
    writer.add(PupilRecord(external_id="P1", updated_at=T, legal_surname="First"))
    writer.add(PupilRecord(external_id="P1", updated_at=T, legal_surname="Second"))
    writer.finish()
    db.session.commit()
    assert db.session.execute(select(MisPupil.legal_surname)).scalars().all() == ["Second"]
    assert dict(writer.counts["student_basic"]) == {"inserted": 1}


def test_a_first_import_counts_a_record_sent_again_in_a_later_batch_once(app, make):
    conn, run = _connection(make)
    writer = store.Writer(conn, run.id, full=True, batch_size=2)
    writer.add(PupilRecord(external_id="P1", updated_at=T, legal_surname="First"))
    writer.add(PupilRecord(external_id="P2", updated_at=T, legal_surname="Same"))
    # The next batches repeat both pupils (one as it was, one changed) beside a new one.
    writer.add(PupilRecord(external_id="P2", updated_at=T, legal_surname="Same"))
    writer.add(PupilRecord(external_id="P3", updated_at=T, legal_surname="Third"))
    writer.add(PupilRecord(external_id="P1", updated_at=T, legal_surname="Changed"))
    writer.finish()
    db.session.commit()
    assert dict(writer.counts["student_basic"]) == {"inserted": 3, "unchanged": 1, "updated": 1}
    stored = db.session.execute(select(MisPupil.external_id, MisPupil.legal_surname, MisPupil.seen_run_id)).all()
    assert sorted(stored) == [("P1", "Changed", run.id), ("P2", "Same", run.id), ("P3", "Third", run.id)]


def test_records_about_unknown_pupils_are_dropped_and_counted(app, make):
    conn, run = _connection(make)
    writer = store.Writer(conn, run.id, full=False, batch_size=2)
    writer.add(PupilRecord(external_id="P1", updated_at=T))
    for pupil in ("P1", "P404"):
        writer.add(AttendanceMarkRecord(external_id=f"{pupil}:AM", updated_at=T, pupil_external_id=pupil,
                                        session_date=date(2026, 9, 7), session="AM", code="/"))
    writer.finish()
    db.session.commit()
    marks = db.session.execute(select(MisAttendanceMark)).scalars().all()
    assert [(m.external_id, m.pupil_id) for m in marks] == [("P1:AM", db.session.execute(select(MisPupil.id)).scalar())]
    assert writer.skipped == {"student_attendance_exclusions": 1}


def test_deleting_a_pupil_row_deletes_everything_about_them(app, make):
    conn, run = _connection(make)
    writer = store.Writer(conn, run.id, full=False)
    writer.add(PupilRecord(external_id="P1", updated_at=T))
    writer.add(_demo("P1"))
    writer.add(AttendanceMarkRecord(external_id="P1:AM", updated_at=T, pupil_external_id="P1",
                                    session_date=date(2026, 9, 7), session="AM", code="/"))
    writer.finish()
    db.session.commit()
    if db.engine.dialect.name == "sqlite":
        db.session.execute(db.text("PRAGMA foreign_keys = ON"))
    db.session.execute(MisPupil.__table__.delete())
    db.session.commit()
    assert db.session.execute(select(MisAttendanceMark)).first() is None


def test_tombstones_are_staged_until_applied_then_audited(app, make):
    conn, run = _connection(make)
    writer = store.Writer(conn, run.id, full=False)
    writer.add(PupilRecord(external_id="P1", updated_at=T))
    writer.add(PupilRecord(external_id="P2", updated_at=T))
    writer.finish()
    db.session.commit()
    writer = store.Writer(conn, run.id, full=False)
    writer.add(Tombstone(external_id="P2", record_kind="pupil", record_category="student_basic", deleted_at=T))
    writer.finish()
    assert store.pending_pupil_removals(conn, run.id) == 1 and store.live_pupil_count(conn) == 2
    assert store.apply_removals(conn, run.id, publish=deletions.publish_provider_deletion) == {"student_basic": 1}
    db.session.commit()
    assert db.session.execute(select(MisPupil.deleted_at).where(MisPupil.external_id == "P2")).scalar() == T
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "store.records_tombstoned")).scalar_one()
    assert entry.details == {"run_id": run.id, "tombstoned": {"student_basic": 1}, "notices": 0}
    # A record that comes back is live again.
    writer = store.Writer(conn, run.id, full=False)
    writer.add(PupilRecord(external_id="P2", updated_at=T))
    writer.finish()
    db.session.commit()
    assert store.live_pupil_count(conn) == 2


def test_values_of_every_column_type_are_stored_as_given(app, make):
    """Dates, times in other zones, booleans, encrypted text, JSON lists, NULLs and awkward text survive a batch write."""
    conn, run = _connection(make)
    awkward = 'O\'Brien "Ní" \\ Zoë 😀'
    offset = datetime(2026, 9, 1, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=1)))
    writer = store.Writer(conn, run.id, full=True)
    writer.add(PupilRecord(external_id="P1", updated_at=offset, legal_surname=awkward, legal_forename=None,
                           date_of_birth=date(2012, 2, 29)))
    writer.add(_demo("P1", fsm=False, looked_after=None))
    writer.add(StaffRecord(external_id="S1", updated_at=T, surname=awkward, roles=("Teacher", "SENCo"),
                           currently_employed=True))
    writer.add(AttendanceMarkRecord(external_id="P1:2026-09-01:AM", updated_at=T, pupil_external_id="P1",
                                    session_date=date(2026, 9, 1), session="AM", code="/"))
    writer.finish()
    db.session.commit()
    db.session.expire_all()
    pupil = db.session.execute(select(MisPupil)).scalar_one()
    assert (pupil.legal_surname, pupil.legal_forename, pupil.date_of_birth) == (awkward, None, date(2012, 2, 29))
    assert pupil.provider_updated_at == offset  # the same instant, stored in UTC
    demo = db.session.execute(select(MisDemographics)).scalar_one()
    assert (demo.fsm, demo.looked_after, demo.eal, demo.ethnicity, demo.sen_status) == (False, None, True, "WBRI", "K")
    # R75: special-category values are encrypted at rest, not stored as sent.
    raw = db.session.execute(text("SELECT ethnicity, eal FROM mis_demographics")).one()
    assert "WBRI" not in raw.ethnicity and raw.eal not in ("true", "1", "t")
    staff = db.session.execute(select(MisStaff)).scalar_one()
    assert (staff.surname, staff.roles, staff.currently_employed) == (awkward, ["Teacher", "SENCo"], True)
    mark = db.session.execute(select(MisAttendanceMark)).scalar_one()
    assert (mark.session_date, mark.session, mark.code, mark.pupil_id) == (date(2026, 9, 1), "AM", "/", pupil.id)
    assert dict(writer.counts["student_basic"]) == {"inserted": 1}


def test_a_value_too_long_for_its_column_fails_the_write_and_is_never_cut_short(app, make):
    conn, run = _connection(make)
    long = "Y" * 50  # the column holds 10
    writer = store.Writer(conn, run.id, full=True)
    writer.add(PupilRecord(external_id="P1", updated_at=T, legal_surname="Example", year_group=long))
    if db.engine.dialect.name == "sqlite":
        # SQLite treats a declared length as advice: the value is kept whole, never cut.
        writer.finish()
        db.session.commit()
        assert db.session.execute(select(MisPupil.year_group)).scalar_one() == long
        return
    import psycopg  # the store writes through the driver's connection on PostgreSQL

    with pytest.raises(psycopg.errors.StringDataRightTruncation):
        writer.finish()
    db.session.rollback()
    assert db.session.execute(select(MisPupil)).first() is None


def test_each_category_keeps_its_own_latest_provider_time_when_records_share_one(app, make):
    """The next watermark of a category is the latest time of its own records, even where the same time ends another's."""
    conn, run = _connection(make)
    writer = store.Writer(conn, run.id, full=True)
    later = datetime(2026, 9, 2, tzinfo=timezone.utc)
    writer.add(PupilRecord(external_id="P1", updated_at=T))
    writer.add(PupilRecord(external_id="P2", updated_at=later))
    # The same time object (parsed times are shared) first ends student_basic, then starts the marks.
    writer.add(AttendanceMarkRecord(external_id="P1:2026-09-01:AM", updated_at=later, pupil_external_id="P1",
                                    session_date=date(2026, 9, 1), session="AM", code="/"))
    writer.add(AttendanceMarkRecord(external_id="P1:2026-09-01:PM", updated_at=T, pupil_external_id="P1",
                                    session_date=date(2026, 9, 1), session="PM", code="/"))
    assert writer.high_water == {"student_basic": later, "student_attendance_exclusions": later}
    assert writer.session_window == [date(2026, 9, 1), date(2026, 9, 1)]


def test_removals_staged_in_numbers_are_applied_by_key_each_with_its_own_time(app, make, monkeypatch):
    """Every staged removal is applied whatever how many statements it takes; another connection's rows stay."""
    monkeypatch.setattr("portal.store.removals._KEYS_PER_STATEMENT", 3)
    conn, run = _connection(make)
    other, _ = _connection(make)
    for connection in (conn, other):
        writer = store.Writer(connection, run.id, full=False)
        for n in range(8):
            writer.add(PupilRecord(external_id=f"P{n}", updated_at=T))
        writer.finish()
    db.session.commit()
    writer = store.Writer(conn, run.id, full=False)
    gone = {f"P{n}": T.replace(day=2 + n) for n in range(7)}  # seven of eight, over three statements
    for ext, when in gone.items():
        writer.add(Tombstone(external_id=ext, record_kind="pupil", record_category="student_basic", deleted_at=when))
    writer.add(Tombstone(external_id="P99", record_kind="pupil", record_category="student_basic", deleted_at=T))
    writer.finish()
    assert store.apply_removals(conn, run.id, publish=deletions.publish_provider_deletion) == {"student_basic": 7}
    db.session.commit()
    rows = dict(db.session.execute(select(MisPupil.external_id, MisPupil.deleted_at).where(MisPupil.connection_id == conn.id)).all())
    assert rows == {**gone, "P7": None}
    assert store.live_pupil_count(other) == 8


def _surnames_stored(make, pupils: list[tuple[str, str]]) -> tuple[dict[str, str], store.Writer]:
    """Write these (external id, surname) pupils in one full-run batch and return the surnames stored, by id."""
    conn, run = _connection(make)
    writer = store.Writer(conn, run.id, full=True)
    for external_id, surname in pupils:
        writer.add(PupilRecord(external_id=external_id, updated_at=T, legal_surname=surname))
    writer.finish()
    db.session.commit()
    return dict(db.session.execute(select(MisPupil.external_id, MisPupil.legal_surname)).all()), writer


def test_a_provider_value_holding_u0000_is_stored_without_it_on_postgresql_and_the_batch_is_kept(app, make):
    """PostgreSQL's text cannot hold U+0000: the character is dropped, never the batch (which would fail the run)."""
    stored, writer = _surnames_stored(make, [("P1", "Ann\x00e"), ("P2", "Clean")])
    # SQLite stores the value as sent; PostgreSQL without the character it cannot hold.
    expected = "Ann\x00e" if db.engine.dialect.name == "sqlite" else "Anne"
    assert stored == {"P1": expected, "P2": "Clean"}
    assert writer.counts["student_basic"]["inserted"] == 2


def test_two_provider_ids_that_differ_only_by_u0000_are_one_pupil_on_postgresql_and_the_batch_is_kept(app, make):
    stored, _ = _surnames_stored(make, [("P\x009", "First"), ("P9", "Second")])
    # SQLite keeps both ids as sent; on PostgreSQL they are one key and the later record is kept.
    assert stored == ({"P\x009": "First", "P9": "Second"} if db.engine.dialect.name == "sqlite" else {"P9": "Second"})
