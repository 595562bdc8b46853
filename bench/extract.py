"""Benchmark the extract engine against the Wonde sandbox into PostgreSQL or SQLite, beside a local limit and dlt.

    .venv/bin/python bench/extract.py                      # 250 and 2,500 pupils, 190 school days
    .venv/bin/python bench/extract.py --sizes 250 --days 20
    .venv/bin/python bench/extract.py --backend sqlite     # the embedded default: no dlt, (a) is executemany

For each school size, in a fresh child process (so peak RSS is per size): a full extract through
the real Wonde connector over HTTP (the sandbox runs in another process, so its memory is not
counted), then a daily incremental run, then, on the same rows the full run stored:
(a) the local limit, COPY into a temporary table plus INSERT … ON CONFLICT per store table, and
(b) the same rows loaded by dlt (merge on the same key). On SQLite, (a) is one executemany
``INSERT … ON CONFLICT DO UPDATE`` per store table in one transaction, and there is no (b).
Prints the figures and each target of issue 19 as met / missed, from the same run.
This is a measurement, not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_SERVER = "postgresql+psycopg://root@127.0.0.1:5432/test"
BENCH_KEY = "cNhVdIuD3mmvnJbRnSmMT2Dsw8kI3Tn8c1mz4O3mzaQ="


# ---------------------------------------------------------------- the sandbox, in its own process


def _sandbox_process(pupils: int, days: int, attendance_cap: int, pipe) -> None:
    from portal_wonde.sandbox import DEFAULT_MAX_PER_PAGE, WondeSandbox

    from portal.sandbox.synthetic import generate_school

    school = generate_school(4242, pupils=pupils, days=days, phase="secondary")
    # The spec infers a cap of 200 rows a page on every endpoint; Wonde's real caps are unknown.
    caps = {"*": DEFAULT_MAX_PER_PAGE, "attendance/session": attendance_cap}
    # The provider's clock (its stamps and Date header): ours until the drop-stamping runs move it on a day.
    shift = [timedelta(0)]
    sandbox = WondeSandbox([school], max_per_page=caps,
                           clock=lambda: datetime.now(timezone.utc).replace(microsecond=0) + shift[0]).start()
    sandbox.date_from_clock = True
    pipe.send({"settings": sandbox.settings, "school_id": sandbox.school_id(), "urn": school.urn,
               "dfe_number": school.dfe_number,
               "la_code": school.la_code, "name": school.name, "pupils": len(school.pupils)})
    while True:
        command, kwargs = pipe.recv()
        if command == "stop":
            sandbox.stop()
            return
        if command == "mutate":
            done = sandbox.mutate(0, **kwargs)
            pipe.send({k: len(v) for k, v in done.items()})
        if command == "requests":
            pipe.send(len(sandbox.requests()))
        if command == "advance":
            shift[0] += timedelta(hours=kwargs["hours"])
            pipe.send(True)
        if command == "stamp_drop":
            pipe.send(sandbox.stamp_drop())


def _fresh_database(server_url: str, name: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _load() -> str:
    """The 1-, 5- and 15-minute load averages (``uptime``): the machine is shared, so each figure carries it."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _checkpoint(url: str) -> None:
    """Flush PostgreSQL's dirty pages before a timed phase, so no phase pays for the previous one's writes.

    Without it the same run varied by a third from one invocation to the next (a checkpoint of the
    previous phase's million rows landing inside the next). Needs a superuser; skipped otherwise.
    """
    if not url.startswith("postgresql"):
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            c.execute(text("CHECKPOINT"))
    except Exception:  # noqa: BLE001 - not a superuser: measured without it
        pass
    finally:
        engine.dispose()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- one size


def _database_name(pupils: int, tag: str) -> str:
    return f"bench_extract_{pupils}" + (f"_{tag}" if tag else "")


def run_one(pupils: int, days: int, server_url: str, use_dlt: bool, attendance_cap: int = 200, *,
            backend: str = "postgresql", tag: str = "", folder: Path | None = None) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_sandbox_process, args=(pupils, days, attendance_cap, child), daemon=True)
    proc.start()
    info = parent.recv()
    if backend == "sqlite":
        path = Path(folder or tempfile.gettempdir()) / f"{_database_name(pupils, tag)}.sqlite3"
        path.unlink(missing_ok=True)
        url = f"sqlite:///{path}"
        use_dlt = False
    else:
        url = _fresh_database(server_url, _database_name(pupils, tag))
    from portal.testing.databases import migrate

    migrate(url)
    from portal import create_app

    app = create_app({
        "DATABASE_URL": url, "SECRET_KEY": "bench-secret-key-not-for-production", "ENCRYPTION_KEYS": BENCH_KEY, "PLUGINS_LOAD_ENTRYPOINTS": False,
        "PLUGINS": ["portal_wonde.plugin"], "ENABLED_CONNECTORS": ["wonde"], "CONNECTORS": {"wonde": info["settings"]},
        "SCHEDULER_ENABLED": False, "LOG_LEVEL": "WARNING", "DATA_LOCATION": "UK",
    })
    result: dict[str, Any] = {"pupils": info["pupils"], "days": days, "attendance_cap": attendance_cap,
                              "backend": backend, "load_start": _load()}
    with app.app_context():
        connection_id = _school(info)
        from portal import store
        from portal.extract import run_extract

        # Time spent in the store's batch writes (the part (a) and (b) also do), on whichever
        # thread writes them. On PostgreSQL the engine's writer thread overlaps them with the next
        # pages' mapping, so this wall time also holds the writer's waits for the GIL while the
        # engine thread maps: an upper bound of the writes' own time.
        write_seconds = [0.0]
        # write_batch since the writer thread; flush before it (so the bench still measures older code).
        write_name = "write_batch" if hasattr(store.Writer, "write_batch") else "flush"
        original_write = getattr(store.Writer, write_name)

        def timed_write(self, *args):
            start = time.perf_counter()
            try:
                return original_write(self, *args)
            finally:
                write_seconds[0] += time.perf_counter() - start

        setattr(store.Writer, write_name, timed_write)
        _checkpoint(url)
        start = time.perf_counter()
        full = run_extract(connection_id, mode="full")
        full_seconds = time.perf_counter() - start
        records = sum(c["inserted"] for c in full.stats["categories"].values())
        result.update(
            status=full.status.value, error=full.error_message, records=records, full_seconds=round(full_seconds, 2),
            records_per_second=round(records / full_seconds), write_seconds=round(write_seconds[0], 2),
            write_records_per_second=round(records / write_seconds[0]), pages=full.stats["pages"],
            requests=full.stats["requests"], retries=full.stats["retries"], peak_rss_mb=round(_rss_mb(), 1),
            counts=full.stats["categories"], load_after_full=_load(),
        )
        setattr(store.Writer, write_name, original_write)
        result.update(_incremental_runs(parent, connection_id, info["pupils"], full_seconds))
        if backend == "sqlite":
            result["local_limit_seconds"] = round(_sqlite_limit(connection_id), 2)
            result["local_limit_records_per_second"] = round(records / result["local_limit_seconds"])
            result["load_end"] = _load()
    if backend == "sqlite":
        parent.send(("stop", {}))
        proc.join(10)
        return result
    with app.app_context():
        with tempfile.TemporaryDirectory() as tmp:
            files = _export(connection_id, Path(tmp))
            result["local_limit_seconds"] = round(_local_limit(files), 2)
            result["local_limit_records_per_second"] = round(records / result["local_limit_seconds"])
            result["local_limit_fk_seconds"] = round(_local_limit(files, foreign_keys=True), 2)
            result["local_limit_fk_records_per_second"] = round(records / result["local_limit_fk_seconds"])
            if use_dlt:
                _checkpoint(url)
                result["dlt_seconds"] = round(_dlt(url, files, Path(tmp)), 2)
                result["dlt_records_per_second"] = round(records / result["dlt_seconds"])
        result["load_end"] = _load()
    parent.send(("stop", {}))
    proc.join(10)
    return result


def _incremental_runs(parent, connection_id: int, pupils: int, full_seconds: float) -> dict[str, Any]:
    """The daily incremental, then the same day after a provider stamped an assessment drop with one time.

    The drop-stamping provider (issue 19): in the evening it imports the whole assessment drop with one
    ``updated_at``; that night's run takes the drop (new data); the run the night after, on an ordinary
    day's changes, must not read the drop again. The sandbox's clock moves on a day for it (its stamps
    and its Date header), as the nights would.
    """
    from portal.extract import run_extract

    day = {"marks": pupils * 2, "updated": max(1, pupils // 50), "leavers": 1, "staff_updated": 1}

    def timed(name: str) -> dict[str, Any]:
        start = time.perf_counter()
        run = run_extract(connection_id, mode="incremental")
        # To the millisecond: a tenth of a second is rounded by a tenth of itself to hundredths.
        seconds = round(time.perf_counter() - start, 3)
        counts = run.stats["categories"]
        return {f"{name}_status": run.status.value, f"{name}_mode": run.params["mode"], f"{name}_seconds": seconds,
                f"{name}_requests": run.stats["requests"], f"{name}_share": round(seconds / full_seconds, 4),
                f"{name}_received": sum(c["inserted"] + c["updated"] + c["unchanged"] for c in counts.values()),
                f"{name}_results_received": sum(counts.get("student_assessment", {}).get(k, 0)
                                                for k in ("inserted", "updated", "unchanged"))}

    out: dict[str, Any] = {}
    # A school day later: one day of marks, a few pupils changed, one leaver.
    parent.send(("mutate", day))
    out["mutated"] = parent.recv()
    out.update(timed("incremental"))
    for command, kwargs in (("advance", {"hours": 12}), ("stamp_drop", {}), ("advance", {"hours": 8})):
        parent.send((command, kwargs))
        out["drop_results" if command == "stamp_drop" else "advanced"] = parent.recv()
    out.update(timed("drop_night"))
    parent.send(("advance", {"hours": 16}))
    parent.recv()
    parent.send(("mutate", {**day, "seed": 1}))
    parent.recv()
    out.update(timed("after_drop"))
    return out


def limits_only(pupils: int, server_url: str, use_dlt: bool, tag: str = "") -> dict[str, Any]:
    """(a) and (b) alone, on the rows an earlier run left in bench_extract_<pupils>[_<tag>] (connection 1)."""
    from sqlalchemy import select
    from sqlalchemy.engine import make_url

    from portal import create_app

    url = make_url(server_url).set(database=_database_name(pupils, tag)).render_as_string(hide_password=False)
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "bench-secret-key-not-for-production",
                      "ENCRYPTION_KEYS": BENCH_KEY, "PLUGINS_LOAD_ENTRYPOINTS": False, "PLUGINS": ["portal_wonde.plugin"],
                      "ENABLED_CONNECTORS": ["wonde"], "SCHEDULER_ENABLED": False, "DATA_LOCATION": "UK"})
    with app.app_context():
        from portal.extensions import db
        from portal.models import JobRun

        full = db.session.execute(select(JobRun).where(JobRun.params["mode"].as_string() == "full")).scalars().first()
        records = sum(c["inserted"] for c in full.stats["categories"].values())
        result = {"pupils": pupils, "records": records, "full_seconds": full.stats["seconds"]}
        with tempfile.TemporaryDirectory() as tmp:
            files = _export(full.connection_id, Path(tmp))
            result["local_limit_seconds"] = round(_local_limit(files), 2)
            result["local_limit_records_per_second"] = round(records / result["local_limit_seconds"])
            if use_dlt:
                _checkpoint(url)
                result["dlt_seconds"] = round(_dlt(url, files, Path(tmp)), 2)
                result["dlt_records_per_second"] = round(records / result["dlt_seconds"])
    return result


def _school(info: dict[str, Any]) -> int:
    from sqlalchemy import select

    from portal.extensions import db
    from portal.models import (
        Connection,
        ConnectionState,
        Feature,
        Organisation,
        OrgKind,
        Product,
        ProductAuthorisation,
    )

    la = Organisation(kind=OrgKind.local_authority, name="Bench LA", la_code=info["la_code"])
    db.session.add(la)
    db.session.flush()
    school = Organisation(kind=OrgKind.school, name=info["name"], urn=info["urn"], dfe_number=info["dfe_number"],
                          local_authority_id=la.id)
    product = Product(name="Bench product", purpose="benchmark")
    product.features = list(db.session.execute(select(Feature)).scalars())
    db.session.add_all([school, product])
    db.session.flush()
    db.session.add(ProductAuthorisation(school_id=school.id, product_id=product.id))
    # As an approved connection has it (lifecycle.apply_access_status, Wonde's schoolApproved event; bench/national.py
    # too): without it every run first matched the school by URN, a request no approved connection makes.
    connection = Connection(school_id=school.id, connector="wonde", state=ConnectionState.approved,
                            provider_school_id=info.get("school_id"))
    db.session.add(connection)
    db.session.commit()
    return connection.id


def _columns(table) -> list[str]:
    return [c.name for c in table.columns if c.name != "id"]


def _export(connection_id: int, folder: Path) -> list[tuple[Any, Path]]:
    """Write the rows the full run stored (as stored, encrypted columns included) to CSV files, untimed."""
    from portal.extensions import db
    from portal.models.mis import STORE_MODELS

    raw = db.session.connection().connection.driver_connection
    files = []
    with raw.cursor() as cur:
        for model in STORE_MODELS.values():
            table = model.__table__
            path = folder / f"{table.name}.csv"
            with path.open("wb") as out, cur.copy(
                f"COPY (SELECT {', '.join(_columns(table))} FROM {table.name} WHERE connection_id = {connection_id}) "
                f"TO STDOUT WITH (FORMAT csv, HEADER true)"
            ) as copy:
                for block in copy:
                    out.write(block)
            files.append((table, path))
    db.session.commit()
    return files


def _local_limit(files: list[tuple[Any, Path]], foreign_keys: bool = False) -> float:
    """(a) COPY each file into a temporary table, then INSERT … ON CONFLICT into an empty copy of the store table.

    With ``foreign_keys`` the copies also get the store tables' foreign keys (to schools, connections
    and pupils), which the engine's writes pay for and the plain (a) does not.
    """
    from portal.extensions import db

    raw = db.session.connection().connection.driver_connection
    with raw.cursor() as cur:
        for table, _ in files:
            cur.execute(f"DROP TABLE IF EXISTS limit_{table.name}")
            cur.execute(f"CREATE TABLE limit_{table.name} (LIKE {table.name} INCLUDING DEFAULTS INCLUDING INDEXES)")
            if foreign_keys:
                for fk in table.foreign_keys:
                    cur.execute(f"ALTER TABLE limit_{table.name} ADD FOREIGN KEY ({fk.parent.name}) "
                                f"REFERENCES {fk.column.table.name} ({fk.column.name}) ON DELETE CASCADE")
        raw.commit()
        cur.execute("CHECKPOINT")  # as before the full run (see _checkpoint)
        raw.commit()
        start = time.perf_counter()
        for table, path in files:
            cols = ", ".join(_columns(table))
            cur.execute(f"DROP TABLE IF EXISTS pg_temp.stage_{table.name}")
            cur.execute(f"CREATE TEMP TABLE stage_{table.name} AS SELECT {cols} FROM {table.name} WITH NO DATA")
            with path.open("rb") as src, cur.copy(f"COPY stage_{table.name} ({cols}) FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
                while block := src.read(1 << 20):
                    copy.write(block)
            sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in _columns(table) if c not in ("connection_id", "external_id"))
            cur.execute(f"INSERT INTO limit_{table.name} ({cols}) SELECT {cols} FROM stage_{table.name} "
                        f"ON CONFLICT (connection_id, external_id) DO UPDATE SET {sets}")
        raw.commit()
        return time.perf_counter() - start


def _sqlite_limit(connection_id: int) -> float:
    """(a) on SQLite: the stored rows (read untimed) written again with one executemany upsert per table, one commit."""
    from portal.extensions import db
    from portal.models.mis import STORE_MODELS

    raw = db.session.connection().connection.driver_connection
    tables = []
    for model in STORE_MODELS.values():
        table = model.__table__
        cols = _columns(table)
        rows = raw.execute(f"SELECT {', '.join(cols)} FROM {table.name} WHERE connection_id = ?",  # nosec B608: metadata names
                           (connection_id,)).fetchall()
        raw.execute(f"DROP TABLE IF EXISTS limit_{table.name}")
        raw.execute(f"CREATE TABLE limit_{table.name} AS SELECT * FROM {table.name} WHERE 0")
        raw.execute(f"CREATE UNIQUE INDEX limit_{table.name}_key ON limit_{table.name} (connection_id, external_id)")
        tables.append((table, cols, rows))
    db.session.commit()
    raw = db.session.connection().connection.driver_connection
    start = time.perf_counter()
    for table, cols, rows in tables:
        sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in ("connection_id", "external_id"))
        raw.executemany(f"INSERT INTO limit_{table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                        f"ON CONFLICT (connection_id, external_id) DO UPDATE SET {sets}", rows)
    db.session.commit()
    return time.perf_counter() - start


def _dlt(url: str, files: list[tuple[Any, Path]], folder: Path) -> float:
    """(b) The same rows loaded into PostgreSQL by dlt, merging on the same key."""
    import dlt
    from sqlalchemy.engine import make_url

    u = make_url(url)
    # dlt insists on a password; a trust-auth server ignores it.
    credentials = f"postgresql://{u.username}:{u.password or 'unused'}@{u.host}:{u.port}/{u.database}"
    os.environ["DLT_DATA_DIR"] = str(folder / "dlt")
    os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
    pipeline = dlt.pipeline(pipeline_name="bench", destination=dlt.destinations.postgres(credentials),
                            dataset_name="bench_dlt", pipelines_dir=str(folder / "pipelines"))

    def rows(path: Path):
        with path.open(newline="") as f:
            yield from csv.DictReader(f)

    resources = [
        dlt.resource(rows(path), name=table.name, write_disposition="merge", primary_key=("connection_id", "external_id"))
        for table, path in files
    ]
    start = time.perf_counter()
    pipeline.run(resources)
    return time.perf_counter() - start


# ---------------------------------------------------------------- the report


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def targets(r: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Issue 19's targets for one school size, from this run's figures: (target, measured, met)."""
    out = []
    if r.get("backend", "postgresql") == "sqlite":
        out.append(("SQLite end to end >= 15,000 records/s", f"{r['records_per_second']:,} records/s",
                    r["records_per_second"] >= 15000))
        return out
    a = r["local_limit_records_per_second"]
    if "dlt_seconds" in r:
        x = r["records_per_second"] / r["dlt_records_per_second"]
        out.append(("end to end >= 3x (b) dlt", f"{x:.2f}x", x >= 3))
    share = r["records_per_second"] / a
    out.append(("end to end >= 40% of (a)", f"{share:.0%}", share >= 0.40))
    writes = r["write_records_per_second"] / a
    out.append(("store writes >= 60% of (a)", f"{writes:.0%}", writes >= 0.60))
    out.append(("peak RSS < 250 MB", f"{r['peak_rss_mb']} MB", r["peak_rss_mb"] < 250))
    return out


def report(results: list[dict[str, Any]]) -> None:
    print(f"\nExtract benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}, load average now {_load()}")
    for r in results:
        backend = r.get("backend", "postgresql")
        print(f"\n{r['pupils']} pupils, {r['days']} school days, attendance pages of up to {r['attendance_cap']}, "
              f"{backend}: {r['status']}, {r['records']:,} records (load {r.get('load_start')} at the start, "
              f"{r.get('load_after_full')} after the full run, {r.get('load_end')} at the end)")
        print(f"  full run            {r['full_seconds']:>8} s  {r['records_per_second']:>9,} records/s end to end "
              f"({r['pages']} pages, {r['requests']} requests, {r['retries']} retries)")
        print(f"  store writes        {r['write_seconds']:>8} s  {r['write_records_per_second']:>9,} records/s")
        label = "(a) executemany" if backend == "sqlite" else "(a) COPY + upsert"
        print(f"  {label:<18}  {r['local_limit_seconds']:>8} s  {r['local_limit_records_per_second']:>9,} records/s")
        if "local_limit_fk_seconds" in r:
            print(f"  (a) with the FKs    {r['local_limit_fk_seconds']:>8} s  {r['local_limit_fk_records_per_second']:>9,} records/s"
                  "  (the same, into tables with the store's foreign keys)")
        if "dlt_seconds" in r:
            print(f"  (b) dlt merge       {r['dlt_seconds']:>8} s  {r['dlt_records_per_second']:>9,} records/s")
        for name, label in (("incremental", "daily incremental"), ("drop_night", "night of a drop"),
                            ("after_drop", "day after a drop")):
            if f"{name}_seconds" in r:
                print(f"  {label:<19} {r[f'{name}_seconds']:>8} s  ({r[f'{name}_share']:.2%} of the full run, "
                      f"{r[f'{name}_requests']} requests, {r.get(f'{name}_received', '?')} records received, "
                      f"{r.get(f'{name}_results_received', '?')} of them assessment results)")
        print(f"  peak RSS            {r['peak_rss_mb']:>8} MB")
        print("  ratios: store writes / (a) = {:.0%}".format(r["write_records_per_second"] / r["local_limit_records_per_second"]))
        if "local_limit_fk_seconds" in r:
            print("          store writes / (a) with the FKs = {:.0%}".format(
                r["write_records_per_second"] / r["local_limit_fk_records_per_second"]))
        print("          end to end / (a)   = {:.0%}".format(r["records_per_second"] / r["local_limit_records_per_second"]))
        if "dlt_seconds" in r:
            print("          end to end / (b)   = {:.2f}x; store writes / (b) = {:.1f}x".format(
                r["records_per_second"] / r["dlt_records_per_second"],
                r["write_records_per_second"] / r["dlt_records_per_second"]))
        for name, label in (("incremental", "incremental share"), ("after_drop", "after a drop      ")):
            if f"{name}_share" in r:
                share = r[f"{name}_share"]
                print(f"          {label} = {share:.2%} (target < 2%: {'met' if share < 0.02 else 'missed'})")
        if "after_drop_results_received" in r:
            again = r["after_drop_results_received"]
            print(f"          drop read again    = {again} of {r['drop_results']} results "
                  f"(target 0: {'met' if again == 0 else 'missed'})")
        if r["pupils"] >= 2000:
            print("  targets (issue 19, 2,500-pupil secondary, full run):")
            for name, measured, met in targets(r):
                print(f"    {name:<40} {measured:>14}  {_verdict(met)}")
    if len(results) > 1:
        low, high = results[0]["peak_rss_mb"], results[-1]["peak_rss_mb"]
        flat = abs(high / low - 1) <= 0.10 and high < 250
        print(f"\nPeak RSS {low} MB -> {high} MB: {high / low - 1:+.0%} "
              f"(target: under 250 MB and within ±10% from the smallest to the largest school): {_verdict(flat)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 2500])
    parser.add_argument("--days", type=int, default=190)
    parser.add_argument("--server", default=os.environ.get("PORTAL_BENCH_DATABASE_URL", DEFAULT_SERVER),
                        help="a PostgreSQL URL whose server may create bench_extract_* databases")
    parser.add_argument("--no-dlt", action="store_true", help="skip (b)")
    parser.add_argument("--attendance-cap", type=int, default=200,
                        help="the sandbox's largest attendance page (the client asks for 1,000; the spec infers 200)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--limits-only", type=int, metavar="PUPILS",
                        help="only (a) and (b), on the rows a previous run left for this size")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql",
                        help="the store's database: a fresh PostgreSQL database on --server, or a SQLite file")
    parser.add_argument("--tag", default=os.environ.get("PORTAL_BENCH_TAG", ""),
                        help="suffix of the bench database names, so runs side by side do not drop each other's")
    args = parser.parse_args(argv)
    if args.limits_only:
        print(json.dumps(limits_only(args.limits_only, args.server, not args.no_dlt, args.tag)))
        return
    if args.one:
        print(json.dumps(run_one(args.one, args.days, args.server, not args.no_dlt, args.attendance_cap,
                                 backend=args.backend, tag=args.tag)))
        return
    results = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(size), "--days", str(args.days), "--server", args.server,
               "--attendance-cap", str(args.attendance_cap), "--backend", args.backend, "--tag", args.tag]
        if args.no_dlt:
            cmd.append("--no-dlt")
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            sys.exit(f"the {size}-pupil run failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        report(results[-1:])  # as each size finishes: a large school takes a while
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    if len(results) > 1:
        report(results)


if __name__ == "__main__":
    main()
