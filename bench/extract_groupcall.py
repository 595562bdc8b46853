"""Benchmark: a full then an incremental extract of one synthetic school through the Groupcall sandbox.

Run: .venv/bin/python bench/extract_groupcall.py [--pupils 600] [--days 60] [--backend postgresql|sqlite]
The school is served over real HTTP by portal_groupcall's sandbox and extracted by the real engine
into a private database (PostgreSQL from PORTAL_TEST_POSTGRES_URL, or a temporary SQLite file).
Prints Markdown table rows for docs/performance.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@contextmanager
def database(backend: str):
    from portal.testing.databases import migrate, postgres_available, private_postgres_database

    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.sqlite3"
            migrate(url)
            yield url
        return
    reason = postgres_available()
    if reason:
        sys.exit(reason)
    with private_postgres_database() as url:
        migrate(url)
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pupils", type=int, default=600)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    args = parser.parse_args()

    from portal import create_app
    from portal.extract import run_extract
    from portal.sandbox import synthetic
    from portal.testing.conformance import connect_synthetic_school, school_window
    from portal.testing.databases import base_config
    from portal_groupcall.sandbox import RELYING_PARTY, GroupcallSandbox

    school = synthetic.generate_school(7, pupils=args.pupils, days=args.days, phase="secondary")
    start, end = school_window(school)
    with database(args.backend) as url, GroupcallSandbox() as sandbox:
        served = sandbox.load_synthetic(school.dfe_number, school)
        settings = {"base_url": sandbox.url, "relying_party": RELYING_PARTY, "allow_insecure_http": True,
                    "page_size": args.page_size, "date_from": start.isoformat(), "date_to": end.isoformat()}
        app = create_app(base_config(url, PLUGINS=["portal_groupcall.plugin"], ENABLED_CONNECTORS=["groupcall"],
                                     CONNECTORS={"groupcall": settings}))
        with app.app_context():
            connection_id = connect_synthetic_school(school, "groupcall", {"school_secret": served.secret})
            rows = []
            for label, mode in (("full", "full"), ("incremental (5 % changed)", "incremental")):
                if mode == "incremental":
                    n = max(1, args.pupils // 20)
                    school.mutate(datetime(2026, 1, 5, 9, tzinfo=timezone.utc), updated=n, leavers=2, added=2,
                                  marks=n, staff_updated=2, deleted=1)
                before = sandbox.count()
                t0 = time.perf_counter()
                run = run_extract(connection_id, mode)
                seconds = time.perf_counter() - t0
                assert run.status.value == "succeeded", (run.error_code, run.error_message)
                written = sum(v.get("inserted", 0) + v.get("updated", 0) for v in run.stats["categories"].values())
                seen = written + sum(v.get("unchanged", 0) for v in run.stats["categories"].values())
                rows.append(
                    f"| Groupcall sandbox | {args.backend} | {label} | {args.pupils} pupils, {args.days} days | "
                    f"{seen:,} | {written:,} | {sandbox.count() - before} | {seconds:.1f} s | "
                    f"{seen / seconds:,.0f} |"
                )
    print("| provider | database | run | school | records received | records written | HTTP requests | time | records/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
