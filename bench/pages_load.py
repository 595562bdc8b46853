"""bench/pages.py --load: build 1,000 schools and 10 million marks with COPY, serve with gunicorn, load with locust."""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench password that is long enough"
FEATURE = "attendance_reporting"
TRUSTS = 10
LAS = 17
PUPILS_PER_SCHOOL = 250
RUN_DAYS = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_world(url: str, schools: int) -> dict:
    """Organisations, connections, a month of runs, a product and its credentials; return ids for the accounts."""
    from sqlalchemy import insert

    from portal import create_app
    from portal.api import credentials
    from portal.api.products import register_product
    from portal.auth.passwords import hash_password
    from portal.extensions import db
    from portal.models import (Connection, ConnectionState, JobRun, Organisation, OrgKind, ProductAuthorisation, RunStatus,
                               Subscription, SubscriptionRoute)
    from portal.models.base import utcnow
    from portal.testing.databases import base_config

    app = create_app(base_config(url))
    with app.app_context():
        now = utcnow()
        las = [Organisation(kind=OrgKind.local_authority, name=f"Bench LA {n}", la_code=f"{800 + n}") for n in range(LAS)]
        trusts = [Organisation(kind=OrgKind.trust, name=f"Bench Trust {n}") for n in range(TRUSTS)]
        db.session.add_all(las + trusts)
        db.session.flush()
        product = register_product("Bench attendance", "Report attendance to school leaders.", [FEATURE])
        db.session.flush()
        orgs = []
        for n in range(schools):
            la = las[n % LAS]
            orgs.append(Organisation(kind=OrgKind.school, name=f"Academy {n:05d}", urn=f"{200000 + n}",
                                     dfe_number=f"{la.la_code}{4000 + n // LAS:04d}", phase="Secondary",
                                     local_authority_id=la.id, trust_id=trusts[n % TRUSTS].id if n % 3 else None))
        db.session.add_all(orgs)
        db.session.flush()
        conns = []
        for n, org in enumerate(orgs):
            # A third of the schools subscribe through their LA (the LA officers' schools), the rest are academies.
            by_la = org.trust_id is None
            db.session.add(Subscription(school_id=org.id, route=SubscriptionRoute.local_authority if by_la else SubscriptionRoute.direct,
                                        local_authority_id=org.local_authority_id if by_la else None, starts_on=date(2024, 9, 1)))
            db.session.add(ProductAuthorisation(school_id=org.id, product_id=product.id))
            conns.append(Connection(school_id=org.id, connector="fake", provider_school_id=f"fake-{org.urn}",
                                    state=ConnectionState.failing if n % 50 == 0 else ConnectionState.approved))
        db.session.add_all(conns)
        db.session.flush()
        rows = []
        for conn in conns:
            for day in range(RUN_DAYS, 0, -1):
                at = now - timedelta(days=day)
                failed = day % 11 == 0
                rows.append({
                    "job_id": f"extract:{conn.id}", "kind": "extract", "scheduled_for": at, "connection_id": conn.id,
                    "status": RunStatus.failed if failed else RunStatus.succeeded, "started_at": at,
                    "finished_at": at + timedelta(seconds=90), "claimed_at": at, "attempts": 1, "created_at": at,
                    "params": {"mode": "incremental"},
                    "stats": {"categories": {"student_basic": {"inserted": 2, "updated": 5, "unchanged": 0, "tombstoned": 0},
                                             "student_attendance_exclusions": {"inserted": 500, "updated": 3,
                                                                               "unchanged": 0, "tombstoned": 0}},
                              "requests": 12},
                    "error_kind": None, "error_code": "provider_unavailable" if failed else None,
                    "error_message": "The provider did not answer." if failed else None,
                })
            if len(rows) >= 5000:
                db.session.execute(insert(JobRun), rows)
                rows = []
        if rows:
            db.session.execute(insert(JobRun), rows)
        tokens = [credentials.issue(product, label=f"bench {n}")[1] for n in range(20)]
        db.session.commit()
        hashed = hash_password(PASSWORD)
        out = {"schools": [o.id for o in orgs], "connections": [c.id for c in conns], "las": [o.id for o in las],
               "trusts": [o.id for o in trusts], "tokens": tokens, "hash": hashed,
               "trust_of": {o.id: o.trust_id for o in orgs}, "la_of": {o.id: o.local_authority_id for o in orgs}}
        db.session.remove()
        db.engine.dispose()
    return out


def add_accounts(url: str, world: dict, users: int) -> list[dict]:
    """One account per simulated user: school admins, trust admins, LA officers, support staff, API clients."""
    import pyotp

    from portal import create_app
    from portal.extensions import db
    from portal.models import Membership, Role, User
    from portal.testing.databases import base_config

    api = max(1, users * 8 // 50)
    support = max(1, users * 4 // 50)
    la = max(1, users * 4 // 50)
    trust = max(1, users * 8 // 50)
    school = max(1, users - api - support - la - trust)
    schools = world["schools"]
    accounts = []
    app = create_app(base_config(url))
    with app.app_context():
        def person(email: str, role=None, org_id=None, is_support=False) -> str:
            secret = pyotp.random_base32()
            u = User(email=email, name=email.split("@")[0], password_hash=world["hash"], is_support=is_support,
                     totp_secret=secret, totp_enabled=True)
            db.session.add(u)
            db.session.flush()
            if role is not None:
                db.session.add(Membership(user_id=u.id, organisation_id=org_id, role=role))
            return secret

        for n in range(school):
            s = schools[(n * 37) % len(schools)]
            accounts.append({"email": f"head{n}@bench.example", "totp": person(f"head{n}@bench.example", Role.school_admin, s),
                             "pages": [["school: home", f"/schools/{s}"], ["school: connections", f"/schools/{s}/connections"],
                                       ["school: data use", f"/schools/{s}/data-use"], ["school: run history", f"/schools/{s}/runs"],
                                       ["school: history", f"/schools/{s}/history"]]})
        for n in range(trust):
            t = world["trusts"][n % len(world["trusts"])]
            mine = [s for s in schools if world["trust_of"][s] == t]
            accounts.append({"email": f"trust{n}@bench.example", "totp": person(f"trust{n}@bench.example", Role.trust_admin, t),
                             "pages": [["trust/LA: home", "/home"], ["trust/LA: home page 2", "/home?page=2"],
                                       ["trust/LA: runs", "/runs"], ["school: home", f"/schools/{mine[n % len(mine)]}"],
                                       ["school: run history", f"/schools/{mine[n % len(mine)]}/runs"]]})
        for n in range(la):
            la_id = world["las"][n % len(world["las"])]
            mine = [s for s in schools if world["la_of"][s] == la_id and world["trust_of"][s] is None]
            accounts.append({"email": f"la{n}@bench.example", "totp": person(f"la{n}@bench.example", Role.la_officer, la_id),
                             "pages": [["trust/LA: home", "/home"], ["trust/LA: runs", "/runs"],
                                       ["school: data use", f"/schools/{mine[n % len(mine)]}/data-use"]]})
        for n in range(support):
            accounts.append({"email": f"support{n}@bench.example", "totp": person(f"support{n}@bench.example", is_support=True),
                             "pages": [["support: operations", "/admin/operations/"],
                                       ["support: operations page 5", "/admin/operations/?page=5"],
                                       ["support: search", f"/admin/operations/?q=Academy%200{n:03d}"]]})
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    for n in range(api):
        pages = [["api: schools", f"/api/v1/features/{FEATURE}/schools?limit=100"]]
        for k in range(4):
            s = schools[(n * 101 + k * 13) % len(schools)]
            pages.append(["api: attendance marks (1,000)",
                          f"/api/v1/features/{FEATURE}/schools/{s}/categories/student_attendance_exclusions/attendance_marks?limit=1000"])
        accounts.append({"token": world["tokens"][n % len(world["tokens"])], "pages": pages})
    return accounts


def load_marks(url: str, world: dict, marks: int) -> int:
    """COPY the pupils and their attendance marks in (indexes and constraints rebuilt after), return the marks loaded."""
    import psycopg
    from sqlalchemy.engine import make_url

    per_pupil = max(2, marks // (len(world["schools"]) * PUPILS_PER_SCHOOL))
    extracted = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
    start = date(2026, 9, 2)
    days = []
    d = start
    while len(days) < (per_pupil + 1) // 2:
        if d.weekday() < 5:
            days.append(d.isoformat())
        d += timedelta(days=1)
    sessions = [(days[s // 2], "AM" if s % 2 == 0 else "PM") for s in range(per_pupil)]
    codes = ["/", "\\\\", "/", "\\\\", "/", "\\\\", "/", "\\\\", "N", "L"]
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as raw, raw.cursor() as cur:
        dropped = []
        for table in ("mis_pupils", "mis_attendance_marks"):
            cur.execute("SELECT conname, pg_get_constraintdef(oid), contype FROM pg_constraint "
                        "WHERE conrelid = %s::regclass AND contype IN ('f', 'u')", (table,))
            cons = cur.fetchall()
            cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT LIKE 'pk_%%'", (table,))
            idx = cur.fetchall()
            # Foreign keys of other tables pointing at mis_pupils stay; only this table's own are dropped.
            for name, _, _ in sorted(cons, key=lambda c: c[2]):  # 'f' before 'u'
                cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            for name, _ in idx:
                if name not in {c[0] for c in cons}:
                    cur.execute(f'DROP INDEX "{name}"')
            dropped.append((table, cons, idx))
        pupil_id = mark_id = 0
        with cur.copy("COPY mis_pupils (id, school_id, connection_id, category, external_id, extracted_at, data_type, "
                      "content_hash, year_group) FROM STDIN") as copy:
            for school, conn in zip(world["schools"], world["connections"]):
                lines = []
                for _ in range(PUPILS_PER_SCHOOL):
                    pupil_id += 1
                    lines.append(f"{pupil_id}\t{school}\t{conn}\tstudent_basic\tp{pupil_id}\t{extracted}\tcustomer\t{'0' * 64}\t7\n")
                copy.write("".join(lines))
        tail = f"\t{extracted}\tcustomer\t{'0' * 64}\t"
        with cur.copy("COPY mis_attendance_marks (id, school_id, connection_id, category, external_id, extracted_at, "
                      "data_type, content_hash, pupil_external_id, pupil_id, session_date, session, code) FROM STDIN") as copy:
            pupil_id = 0
            for school, conn in zip(world["schools"], world["connections"]):
                fixed = f"\t{school}\t{conn}\tstudent_attendance_exclusions\t"
                for _ in range(PUPILS_PER_SCHOOL):
                    pupil_id += 1
                    who = f"p{pupil_id}\t{pupil_id}\t"
                    parts = []
                    for s, (day, half) in enumerate(sessions):
                        mark_id += 1
                        parts.append(f"{mark_id}{fixed}m{mark_id}{tail}{who}{day}\t{half}\t{codes[(mark_id * 7) % 10]}\n")
                    copy.write("".join(parts))
        for table, cons, idx in dropped:
            for name, definition in idx:
                if name not in {c[0] for c in cons}:
                    cur.execute(definition)
            for name, definition, _ in sorted(cons, key=lambda c: c[2], reverse=True):  # 'u' before 'f'
                cur.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        cur.execute("SELECT setval(pg_get_serial_sequence('mis_pupils', 'id'), %s)", (pupil_id,))
        cur.execute("SELECT setval(pg_get_serial_sequence('mis_attendance_marks', 'id'), %s)", (mark_id,))
        raw.commit()
        raw.autocommit = True
        cur.execute("VACUUM ANALYZE")
    return mark_id


def serve(url: str, args, tmp: Path) -> tuple[subprocess.Popen, str]:
    """gunicorn (gthread) on a free loopback port, configured by PORTAL_* variables as a deployment is."""
    from portal.testing.databases import TEST_ENCRYPTION_KEY, TEST_SECRET_KEY

    port = _free_port()
    settings = {
        "DATABASE_URL": url, "SECRET_KEY": TEST_SECRET_KEY, "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "INSTANCE_PATH": str(tmp / "instance"), "PLUGINS_LOAD_ENTRYPOINTS": False, "PLUGINS": ["tests.plugins.fake_connector"],
        "ENABLED_CONNECTORS": ["fake"], "SCHEDULER_ENABLED": False, "DATA_LOCATION": "UK", "LOG_LEVEL": "WARNING",
        # Plain HTTP on loopback; the limiter is off so that the figures are the pages' own cost.
        "SESSION_COOKIE_SECURE": False, "REMEMBER_COOKIE_SECURE": False, "RATELIMIT_ENABLED": False,
        "ARGON2_PROFILE": "CHEAPEST",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    for key, value in settings.items():
        env[f"PORTAL_{key}"] = value if isinstance(value, str) else json.dumps(value)
    log = (tmp / "gunicorn.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-w", str(args.gunicorn_workers), "-k", "gthread",
         "--threads", str(args.gunicorn_threads), "-b", f"127.0.0.1:{port}", "--chdir", str(ROOT),
         # Longer than the users' think time: with gunicorn's default of 2 s a kept-alive connection
         # is closed just as the client reuses it, and the request fails with no answer.
         "--keep-alive", "30", "wsgi:app"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    host = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{host}/login", timeout=2)
            return proc, host
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gunicorn did not start; see {tmp / 'gunicorn.log'}")
            time.sleep(0.5)


def report(stats_csv: Path, target_p95: float) -> str:
    """The Markdown table of one run: p50/p95/p99 and errors per page and overall, each met or missed for the target.

    The target: p95 under ``target_p95`` ms and no errors, on every page and overall. Overall is locust's
    aggregate row; the statistics are reset once every user has signed in, so it holds the measured pages
    (a sign-in after the reset, which is not expected, is counted in it and reported below the table).
    """
    lines = [f"| page | requests | p50 ms | p95 ms | p99 ms | errors | p95 < {target_p95:g} ms, 0 errors |",
             "|---|---|---|---|---|---|---|"]
    rows = list(csv.DictReader(stats_csv.open()))
    sign_ins = sum(int(r["Request Count"]) for r in rows if r["Name"].startswith("["))
    pages = [r for r in rows if not r["Name"].startswith("[") and r["Name"] != "Aggregated"]
    overall = [r for r in rows if r["Name"] == "Aggregated"]
    missed = 0
    for r in pages + overall:
        name = "**all pages**" if r["Name"] == "Aggregated" else r["Name"]
        requests, errors = int(r["Request Count"]), int(r["Failure Count"])
        met = requests > 0 and float(r["95%"]) < target_p95 and errors == 0
        missed += not met
        lines.append(f"| {name} | {requests} | {r['50%']} | {r['95%']} | {r['99%']} | {errors} | {'met' if met else '**missed**'} |")
    lines.append(f"\ntarget (p95 < {target_p95:g} ms and 0 errors, overall and on every page): "
                 + ("MET" if not missed else f"MISSED on {missed} of {len(pages) + len(overall)} rows"))
    if sign_ins:
        lines.append(f"({sign_ins} sign-in requests fell inside the measured window and are in the overall row)")
    return "\n".join(lines)


def run_load(args) -> None:
    from portal.testing.databases import migrate, postgres_available, private_postgres_database

    reason = postgres_available()
    if reason:
        sys.exit(reason)
    tmp = Path(tempfile.mkdtemp(prefix="bench-pages-"))
    with private_postgres_database() as url:
        migrate(url)
        t0 = time.monotonic()
        world = build_world(url, args.schools)
        accounts = add_accounts(url, world, args.users)
        print(f"{args.schools} schools, {len(world['connections']) * RUN_DAYS:,} runs, {len(accounts)} accounts "
              f"in {time.monotonic() - t0:.0f} s", flush=True)
        t0 = time.monotonic()
        loaded = load_marks(url, world, args.marks)
        print(f"{len(world['schools']) * PUPILS_PER_SCHOOL:,} pupils and {loaded:,} attendance marks loaded with COPY "
              f"in {time.monotonic() - t0:.0f} s", flush=True)
        (tmp / "accounts.json").write_text(json.dumps({"password": PASSWORD, "users": accounts}))
        proc, host = serve(url, args, tmp)
        spy = None
        if args.profile:
            # Samples every worker for the whole load (ramp-up included); the raw format feeds flamegraph tools.
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses", "--nonblocking",
                                    "-r", "50", "--format", "raw", "-o", args.profile, "-p", str(proc.pid)],
                                   stdout=(tmp / "py-spy.log").open("w"), stderr=subprocess.STDOUT)
        try:
            env = {**os.environ, "BENCH_PAGES_ACCOUNTS": str(tmp / "accounts.json")}
            subprocess.run(
                [str(Path(sys.executable).parent / "locust"), "-f", str(ROOT / "bench" / "pages_locust.py"), "--headless",
                 "-u", str(args.users), "-r", "10", "-t", f"{args.seconds}s", "--host", host, "--reset-stats",
                 "--csv", str(tmp / "locust"), "--only-summary", "--loglevel", "WARNING"],
                cwd=ROOT, env=env, check=False, stdout=(tmp / "locust.log").open("w"), stderr=subprocess.STDOUT,
            )
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                spy.wait(timeout=60)
            proc.terminate()
            proc.wait(timeout=30)
    load = os.getloadavg()
    print(f"\nmachine: {os.cpu_count()} CPUs (nproc), load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; "
          f"gunicorn {args.gunicorn_workers} workers × {args.gunicorn_threads} threads; {args.users} users, "
          f"{args.seconds} s after ramp-up; think time 0.5–2 s\n")
    print(report(tmp / "locust_stats.csv", args.target_p95))
    failures = (tmp / "locust_failures.csv")
    if failures.exists() and len(failures.read_text().splitlines()) > 1:
        print(f"\nfailures: see {failures}")
    print(f"\nlogs: {tmp}")
