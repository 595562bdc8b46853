"""Where each page of bench/pages.py --load spends its time: statements, their times and the slowest one's plan.

    flock -x /tmp/machine.lock .venv/bin/python bench/pages_explain.py [--schools 1000] [--marks 10000000] [--rounds 5]

Builds the load run's database (the same schools, runs, accounts and COPY-loaded marks), then serves
every page of the load mix once per account kind through Flask's test client, signed in as the load's
users are. Per page: the median time of the whole request, the statements sent, the time spent in
them, and EXPLAIN (ANALYZE, BUFFERS) of its slowest SELECT, so a slow page can be read without
guessing. One user at a time: the figures are a page's own cost, not its cost under load.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schools", type=int, default=1000)
    parser.add_argument("--marks", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--plans", action="store_true", help="print EXPLAIN ANALYZE of each page's slowest SELECT")
    parser.add_argument("--statements", action="store_true", help="print the start of every statement each page sends")
    parser.add_argument("--width", type=int, default=160, help="characters of each statement --statements prints")
    args = parser.parse_args()

    import pyotp
    from sqlalchemy import event

    from pages_load import PASSWORD, add_accounts, build_world, load_marks
    from portal import create_app
    from portal.extensions import db
    from portal.testing.databases import base_config, migrate, postgres_available, private_postgres_database

    reason = postgres_available()
    if reason:
        sys.exit(reason)
    with private_postgres_database() as url:
        migrate(url)
        world = build_world(url, args.schools)
        accounts = add_accounts(url, world, args.users)
        load_marks(url, world, args.marks)
        app = create_app(base_config(url))
        seen: list[tuple[float, str, object]] = []
        started: dict[int, float] = {}

        def before(conn, cursor, statement, parameters, context, executemany):
            started[id(cursor)] = time.perf_counter()

        def after(conn, cursor, statement, parameters, context, executemany):
            seen.append(((time.perf_counter() - started.pop(id(cursor), time.perf_counter())) * 1000, statement, parameters))

        kinds = {}
        for account in accounts:  # one account of each kind: its pages are the kind's pages
            key = tuple(label for label, _ in account["pages"])
            kinds.setdefault(key, account)
        print("| page | median ms | statements | ms in SQL | slowest statement ms |\n|---|---|---|---|---|")
        plans = []
        listing: list[str] = []
        with app.app_context():
            event.listen(db.engine, "before_cursor_execute", before)
            event.listen(db.engine, "after_cursor_execute", after)
            done = set()
            for account in kinds.values():
                client = app.test_client()
                headers = {}
                if account.get("token"):
                    headers = {"Authorization": f"Bearer {account['token']}"}
                else:
                    client.post("/login", data={"email": account["email"], "password": PASSWORD})
                    client.post("/login/totp", data={"code": pyotp.TOTP(account["totp"]).now()})
                for label, url_ in account["pages"]:
                    if label in done:
                        continue
                    done.add(label)
                    times = []
                    for _ in range(args.rounds):
                        seen.clear()
                        start = time.perf_counter()
                        resp = client.get(url_, headers=headers)
                        times.append((time.perf_counter() - start) * 1000)
                        assert resp.status_code == 200, (label, resp.status_code)
                    slowest = max(seen, default=(0.0, "", None), key=lambda s: s[0] if s[1].lstrip().upper().startswith("SELECT") else -1)
                    print(f"| {label} | {statistics.median(times):.1f} | {len(seen)} | {sum(s[0] for s in seen):.1f} | "
                          f"{slowest[0]:.1f} |", flush=True)
                    plans.append((label, slowest))
                    if args.statements:
                        listing.append(f"\n### {label}\n" + "\n".join(f"{ms:6.1f} ms  {' '.join(st.split())[:args.width]}" for ms, st, _ in seen))
            event.remove(db.engine, "before_cursor_execute", before)
            event.remove(db.engine, "after_cursor_execute", after)
            print("\n".join(listing))
            if args.plans:
                with db.engine.connect() as conn:
                    for label, (ms, statement, parameters) in plans:
                        if not statement.lstrip().upper().startswith("SELECT"):
                            continue
                        rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters or {}).scalars()
                        print(f"\n### {label}: {ms:.1f} ms\n{statement}\n" + "\n".join(rows))
            db.session.remove()
            db.engine.dispose()


if __name__ == "__main__":
    main()
