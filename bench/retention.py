"""Benchmark: the retention sweep deleting N attendance marks on PostgreSQL, against a plain batched DELETE.

Run: .venv/bin/python bench/retention.py [--marks 10000000] [--marks-per-pupil 380] [--baseline-batch 10000]
Uses PORTAL_TEST_POSTGRES_URL (default postgresql+psycopg://root@127.0.0.1:5432/test) to create a
private database and migrate it. It loads pupils who left long ago and their marks with COPY, then
(1) deletes exactly those marks with ``DELETE FROM mis_attendance_marks WHERE id IN (batch)``, one
commit per batch (the baseline), reloads the same rows (same ids), and (2) runs the real sweep,
which deletes every pupil with all their rows, counts them per category, writes work items, proofs
and audit entries. Peak memory is the process's resident set high-water mark during each phase
(reset through /proc/self/clear_refs). Prints a Markdown table for docs/performance.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LEFT = date(2020, 7, 22)
AS_OF = date(2026, 1, 22)


def reset_peak_rss() -> None:
    """Start a new resident-set high-water mark for this process (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(raw, school_id: int, connection_id: int, pupils: int, per_pupil: int) -> None:
    """COPY the pupils and their marks in, with fixed ids so both phases delete the same rows."""
    now = datetime(2020, 1, 10, tzinfo=timezone.utc)
    with raw.cursor() as cur:
        # Secondary indexes are dropped for the load and rebuilt after it, as a bulk load does.
        cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'mis_attendance_marks' "
                    "AND indexname NOT LIKE 'pk_%%'")
        indexes = cur.fetchall()
        cur.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE conrelid = 'mis_attendance_marks'::regclass AND contype = 'u'")
        uniques = cur.fetchall()
        # Foreign keys fire a check per row (three per mark); re-adding them checks all rows in one join.
        cur.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE conrelid = 'mis_attendance_marks'::regclass AND contype = 'f'")
        foreign = cur.fetchall()
        for name, _ in foreign:
            cur.execute(f'ALTER TABLE mis_attendance_marks DROP CONSTRAINT "{name}"')
        for name, _ in uniques:
            cur.execute(f'ALTER TABLE mis_attendance_marks DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            if name not in {u for u, _ in uniques}:
                cur.execute(f'DROP INDEX "{name}"')
        with cur.copy("COPY mis_pupils (id, school_id, connection_id, category, external_id, extracted_at, data_type, "
                      "content_hash, year_group, leaving_date) FROM STDIN") as copy:
            for p in range(1, pupils + 1):
                copy.write_row((p, school_id, connection_id, "student_basic", f"p{p}", now, "customer", "0" * 64, "5", LEFT))
        # The marks go in as pre-formatted COPY text, one write per pupil: per-row Python calls would
        # make the client, not PostgreSQL, the bottleneck at 10 million rows.
        start = date(2019, 9, 2)
        days = [(start + timedelta(days=s // 2)).isoformat() for s in range(per_pupil)]
        halves = ["AM" if s % 2 == 0 else "PM" for s in range(per_pupil)]
        fixed = f"\t{school_id}\t{connection_id}\tstudent_attendance_exclusions\t"
        tail = f"\t{now.isoformat()}\tcustomer\t{'0' * 64}\t"
        mark_id = 0
        with cur.copy("COPY mis_attendance_marks (id, school_id, connection_id, category, external_id, extracted_at, "
                      "data_type, content_hash, pupil_external_id, pupil_id, session_date, session, code) FROM STDIN") as copy:
            for p in range(1, pupils + 1):
                pupil = f"p{p}\t{p}\t"
                copy.write("".join(
                    f"{m}{fixed}m{m}{tail}{pupil}{days[s]}\t{halves[s]}\t/\n"
                    for s, m in enumerate(range(mark_id + 1, mark_id + per_pupil + 1))
                ))
                mark_id += per_pupil
        for name, definition in indexes:
            if name not in {u for u, _ in uniques}:
                cur.execute(definition)
        for name, definition in uniques + foreign:
            cur.execute(f'ALTER TABLE mis_attendance_marks ADD CONSTRAINT "{name}" {definition}')
        cur.execute("SELECT setval(pg_get_serial_sequence('mis_pupils', 'id'), %s)", (pupils,))
        cur.execute("SELECT setval(pg_get_serial_sequence('mis_attendance_marks', 'id'), %s)", (mark_id,))
    raw.commit()


def vacuum(engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        from sqlalchemy import text

        conn.execute(text("VACUUM ANALYZE mis_pupils"))
        conn.execute(text("VACUUM ANALYZE mis_attendance_marks"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--marks", type=int, default=10_000_000)
    parser.add_argument("--marks-per-pupil", type=int, default=380, help="about one school year of sessions")
    parser.add_argument("--baseline-batch", type=int, default=10_000, help="ids per DELETE ... WHERE id IN (batch)")
    parser.add_argument("--sweep-batch", type=int, default=500, help="pupils per sweep transaction (RETENTION_BATCH_SIZE)")
    args = parser.parse_args()

    from sqlalchemy import bindparam, func, select, text

    from portal import create_app
    from portal.extensions import db
    from portal.models import Connection, ConnectionState, Organisation, OrgKind
    from portal.models.mis import MisAttendanceMark, MisPupil
    from portal.models.retention import RetentionProof
    from portal.retention.sweep import run_sweep
    from portal.testing.databases import base_config, migrate, postgres_available, private_postgres_database

    reason = postgres_available()
    if reason:
        sys.exit(reason)
    pupils = max(1, args.marks // args.marks_per_pupil)
    marks = pupils * args.marks_per_pupil
    with private_postgres_database() as url:
        migrate(url)
        # The sweep's deletion ledger (R35) goes to a throw-away file, not the portal's instance folder.
        ledger_file = tempfile.NamedTemporaryFile(prefix="bench-ledger-", suffix=".jsonl", delete=False).name
        app = create_app(base_config(url, RETENTION_BACKUP_WINDOW_DAYS=0, RETENTION_BATCH_SIZE=args.sweep_batch,
                                     RETENTION_LEDGER_PATH=ledger_file))
        with app.app_context():
            school = Organisation(kind=OrgKind.school, name="Bench School", urn="999002", dfe_number="9994002", phase="Primary")
            db.session.add(school)
            db.session.flush()
            connection = Connection(school_id=school.id, connector="fake", state=ConnectionState.approved)
            db.session.add(connection)
            db.session.commit()
            school_id, connection_id = school.id, connection.id
            # End the read transaction: the load alters the marks' foreign keys, which needs these tables unlocked.
            db.session.commit()
            engine = db.engine

            def raw_connection():
                return engine.raw_connection().driver_connection

            t = time.perf_counter()
            raw = raw_connection()
            load(raw, school_id, connection_id, pupils, args.marks_per_pupil)
            raw.close()
            vacuum(engine)
            load_s = time.perf_counter() - t
            print(f"loaded {pupils:,} pupils and {marks:,} marks in {load_s:.0f} s", file=sys.stderr)

            # (1) Baseline: the same marks by id, one commit per batch.
            reset_peak_rss()
            t = time.perf_counter()
            delete_by_ids = text("DELETE FROM mis_attendance_marks WHERE id IN :ids").bindparams(bindparam("ids", expanding=True))
            with engine.connect() as conn:
                last = 0
                while True:
                    ids = conn.execute(text("SELECT id FROM mis_attendance_marks WHERE id > :last ORDER BY id LIMIT :n"),
                                       {"last": last, "n": args.baseline_batch}).scalars().all()
                    if not ids:
                        break
                    conn.execute(delete_by_ids, {"ids": ids})
                    conn.commit()
                    last = ids[-1]
            base_s = time.perf_counter() - t
            base_mb = peak_rss_mb()
            print(f"baseline: {marks / base_s:,.0f} rows/s, peak RSS {base_mb:.0f} MB", file=sys.stderr)

            # Reload the same rows (the pupils are still there; drop them first to reuse the ids).
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM mis_pupils"))
            raw = raw_connection()
            load(raw, school_id, connection_id, pupils, args.marks_per_pupil)
            raw.close()
            vacuum(engine)

            # (2) The sweep: every pupil is due (left in 2020), marks go with them.
            reset_peak_rss()
            t = time.perf_counter()
            run = run_sweep(as_of=AS_OF)
            sweep_s = time.perf_counter() - t
            sweep_mb = peak_rss_mb()
            left = db.session.execute(select(func.count()).select_from(MisAttendanceMark)).scalar()
            left += db.session.execute(select(func.count()).select_from(MisPupil)).scalar()
            proof = db.session.execute(select(RetentionProof)).scalar_one()
            assert run.status.value == "succeeded" and left == 0, (run.status, left)
            assert proof.counts == {"student_attendance_exclusions": marks, "student_basic": pupils}, proof.counts
            print(f"sweep: {marks / sweep_s:,.0f} marks/s, peak RSS {sweep_mb:.0f} MB", file=sys.stderr)
        Path(ledger_file).unlink(missing_ok=True)

    print(f"| Rows | Method | Seconds | Marks deleted / s | Peak RSS (MB) |")
    print(f"| --- | --- | ---: | ---: | ---: |")
    print(f"| {marks:,} marks, {pupils:,} pupils | baseline `DELETE … WHERE id IN` ({args.baseline_batch:,} ids per batch) "
          f"| {base_s:.1f} | {marks / base_s:,.0f} | {base_mb:.0f} |")
    print(f"| {marks:,} marks, {pupils:,} pupils | retention sweep ({args.sweep_batch} pupils per batch, "
          f"with counts, proof, audit) | {sweep_s:.1f} | {marks / sweep_s:,.0f} | {sweep_mb:.0f} |")


if __name__ == "__main__":
    main()
