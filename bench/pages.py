"""Benchmark: the school, support and product API pages with 1,000 schools, single-user and under load.

Single user (default): .venv/bin/python bench/pages.py [--schools 3000] [--rounds 5]
Creates a private PostgreSQL database (PORTAL_TEST_POSTGRES_URL), one trust with N academies, each
with an approved connection and a finished extract run, then times each page through the full
stack (sign-in session, scope query, paging, template) with Flask's test client. Prints one
Markdown table row per page.

Under load: .venv/bin/python bench/pages.py --load [--schools 1000] [--marks 10000000] [--users 50] [--seconds 120]
Creates a private database with N schools in 10 trusts and 17 LAs, a month of daily extract runs
per school, and pupils with their attendance marks (10 million by default, loaded with COPY, not
through the API); serves the portal with gunicorn (gthread) on loopback and runs locust headless
(bench/pages_locust.py) with 50 signed-in users: school admins, trust admins, LA officers,
support staff and product API clients. Prints p50/p95/p99 and errors per page (needs the
``bench`` extra: gunicorn, locust).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PASSWORD = "bench password that is long enough"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schools", type=int, default=None, help="3000 single-user, 1000 under load")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--load", action="store_true", help="gunicorn + locust with concurrent users")
    parser.add_argument("--marks", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--gunicorn-workers", type=int, default=3)
    parser.add_argument("--gunicorn-threads", type=int, default=4)
    parser.add_argument("--target-p95", type=float, default=150.0, help="ms; --load reports each page met or missed")
    parser.add_argument("--profile", metavar="FILE", help="--load: py-spy records the gunicorn workers to FILE (raw format)")
    args = parser.parse_args()
    if args.load:
        from pages_load import run_load  # bench/pages_load.py

        args.schools = args.schools or 1000
        run_load(args)
        return
    args.schools = args.schools or 3000

    import pyotp

    from portal import create_app
    from portal.auth.passwords import hash_password
    from portal.extensions import db
    from portal.models import Connection, ConnectionState, JobRun, Membership, Organisation, OrgKind, Role, RunStatus, User
    from portal.models.base import utcnow
    from portal.testing.databases import base_config, migrate, postgres_available, private_postgres_database

    reason = postgres_available()
    if reason:
        sys.exit(reason)
    with private_postgres_database() as url:
        migrate(url)
        app = create_app(base_config(url))
        with app.app_context():
            trust = Organisation(kind=OrgKind.trust, name="Bench Trust")
            db.session.add(trust)
            db.session.flush()
            now = utcnow()
            for n in range(args.schools):
                school = Organisation(kind=OrgKind.school, name=f"Academy {n:05d}", urn=f"{200000 + n}",
                                      dfe_number=f"{9000000 + n}", trust_id=trust.id)
                db.session.add(school)
                db.session.flush()
                conn = Connection(school_id=school.id, connector="fake",
                                  state=ConnectionState.failing if n % 50 == 0 else ConnectionState.approved)
                db.session.add(conn)
                db.session.flush()
                db.session.add(JobRun(job_id=f"extract:{conn.id}", kind="extract", scheduled_for=now, connection_id=conn.id,
                                      status=RunStatus.succeeded, started_at=now, finished_at=now,
                                      stats={"categories": {"student_basic": {"inserted": 250}}}))
            hashed = hash_password(PASSWORD)
            admin = User(email="trust@bench.example", name="Trust admin", password_hash=hashed)
            staff = User(email="support@bench.example", name="Support", password_hash=hashed, is_support=True,
                         totp_secret=pyotp.random_base32(), totp_enabled=True)
            db.session.add_all([admin, staff])
            db.session.flush()
            db.session.add(Membership(user_id=admin.id, organisation_id=trust.id, role=Role.trust_admin))
            db.session.commit()
            secret = staff.totp_secret

        def client_for(email, totp=None):
            client = app.test_client()
            client.post("/login", data={"email": email, "password": PASSWORD})
            if totp:
                client.post("/login/totp", data={"code": pyotp.TOTP(totp).now()})
            return client

        trust_client = client_for("trust@bench.example")
        staff_client = client_for("support@bench.example", secret)
        print("| page | schools | median ms | max ms |\n|---|---|---|---|")
        for client, url in ((trust_client, "/home"), (trust_client, "/home?page=30"), (trust_client, "/runs"),
                            (staff_client, "/admin/operations/"), (staff_client, "/admin/operations/?q=Academy%2000042")):
            times = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                resp = client.get(url)
                times.append((time.perf_counter() - start) * 1000)
                assert resp.status_code == 200, (url, resp.status_code)
            print(f"| {url} | {args.schools} | {statistics.median(times):.0f} | {max(times):.0f} |")


if __name__ == "__main__":
    main()
