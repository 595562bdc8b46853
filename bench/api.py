"""Benchmark: product API reads per second for 10,000-record pages against PostgreSQL.

Run: .venv/bin/python bench/api.py [--records 100000] [--page 10000]
Uses PORTAL_TEST_POSTGRES_URL (default postgresql+psycopg://root@127.0.0.1:5432/test) to create a
private database, migrates it, writes attendance marks through the store as an extract does, then
pages through them with a real credential over the full stack (auth, purpose check, query, JSON,
audit entry, R42 receipts) via Flask's test client, then times the R42 receipts of a worst-case page
(10,000 distinct subjects). Prints Markdown table rows for docs/performance.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--page", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from portal import create_app, store
    from portal.api import authorisations, credentials
    from portal.api.products import register_product
    from portal.connectors import AttendanceMarkRecord, PupilRecord
    from portal.extensions import db
    from portal.models import Connection, ConnectionState, JobRun, Organisation, OrgKind, RunStatus
    from portal.models.base import utcnow
    from portal.testing.databases import base_config, migrate, postgres_available, private_postgres_database

    reason = postgres_available()
    if reason:
        sys.exit(reason)
    with private_postgres_database() as url:
        migrate(url)
        app = create_app(base_config(url, API_MAX_PAGE_SIZE=max(args.page, 10_000)))
        with app.app_context():
            school = Organisation(kind=OrgKind.school, name="Bench School", urn="999001", dfe_number="9994001")
            db.session.add(school)
            db.session.flush()
            connection = Connection(school_id=school.id, connector="fake", state=ConnectionState.approved)
            db.session.add(connection)
            product = register_product("Bench attendance", "Attendance reporting.", ["attendance_reporting"])
            authorisations.authorise_product(school, product, None)
            _, token = credentials.issue(product)
            now = utcnow()
            run = JobRun(job_id=f"extract:{connection.id}", kind="extract", scheduled_for=now,
                         connection_id=connection.id, status=RunStatus.succeeded, started_at=now)
            db.session.add(run)
            db.session.commit()

            pupils = max(1, args.records // 380)  # about one school year of sessions per pupil
            t0 = time.perf_counter()
            writer = store.Writer(connection, run.id, full=False, batch_size=20_000)
            for i in range(pupils):
                writer.add(PupilRecord(external_id=f"p{i}", admission_date=date(2020, 9, 1)))
            writer.flush()
            start = date(2025, 9, 1)
            for n in range(args.records):
                pupil, k = divmod(n, 380)
                pupil %= pupils
                writer.add(AttendanceMarkRecord(
                    external_id=f"m{n}", pupil_external_id=f"p{pupil}",
                    session_date=start + timedelta(days=k // 2), session="AM" if k % 2 == 0 else "PM", code="/"))
            writer.finish()
            db.session.commit()
            write_s = time.perf_counter() - t0

            client = app.test_client()
            path = (f"/api/v1/features/attendance_reporting/schools/{school.id}"
                    f"/categories/student_attendance_exclusions/attendance_marks")
            headers = {"Authorization": f"Bearer {token}"}
            rates, page_times = [], []
            profiler = None
            if os.environ.get("BENCH_PROFILE"):
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            for _ in range(args.rounds):
                cursor, total = None, 0
                t0 = time.perf_counter()
                while True:
                    p0 = time.perf_counter()
                    params = {"limit": args.page, **({"cursor": cursor} if cursor else {})}
                    resp = client.get(path, headers=headers, query_string=params)
                    assert resp.status_code == 200, resp.get_json()
                    body = resp.get_json()
                    page_times.append(time.perf_counter() - p0)
                    total += len(body["records"])
                    cursor = body["next_cursor"]
                    if not body["has_more"]:
                        break
                rates.append(total / (time.perf_counter() - t0))
                assert total == args.records, total
            if profiler is not None:
                import pstats

                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            # R42 receipts, worst case: a page of 10,000 distinct subjects (pupils, lessons), first read and re-read.
            from types import SimpleNamespace

            from portal import deletions

            grant = SimpleNamespace(product_id=product.id, school_id=school.id)
            first_ms, again_ms = [], []
            for trial in range(5):
                rows = [{"id": 10_000_000 * (trial + 1) + i, "deleted_at": None} for i in range(args.page)]
                for times in (first_ms, again_ms):
                    t0 = time.perf_counter()
                    deletions.record_received(grant, "pupils", rows)
                    db.session.commit()
                    times.append((time.perf_counter() - t0) * 1000)
            receipt_ms = [statistics.median(first_ms), statistics.median(again_ms)]
            db.session.remove()
            db.engine.dispose()
    print(f"records={args.records} page={args.page} rounds={args.rounds} (write {write_s:.1f}s)")
    print("| records read | page size | records/s (median) | page p50 ms | page max ms |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {args.records:,} | {args.page:,} | {statistics.median(rates):,.0f} | "
          f"{statistics.median(page_times) * 1000:.0f} | {max(page_times) * 1000:.0f} |")
    print()
    print("| R42 receipts for one page of 10,000 distinct subjects (median of 5) | first read ms | re-read ms | share of page p50 |")
    print("| --- | --- | --- | --- |")
    print(f"| {args.page:,} rows, INSERT … ON CONFLICT DO NOTHING | {receipt_ms[0]:.0f} | {receipt_ms[1]:.0f} | "
          f"{receipt_ms[0] / (statistics.median(page_times) * 1000):.0%} |")


if __name__ == "__main__":
    main()
