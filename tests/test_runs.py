"""One way to claim, resume and supersede an extract run; dead runs found in seconds; holds take upserts only.

The drills run extracts in separate OS processes (kill -9 mid-run, then a rerun; a CLI
incremental after a CLI full), on SQLite and PostgreSQL alike.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from portal import lifecycle, store
from portal.extensions import db
from portal.extract import ExtractRefused, run_extract
from portal.jobs import claims
from portal.models import ConnectionState, ExtractRemoval, JobRun, MisPupil, RunStatus
from portal.models.base import utcnow
from tests.extract_helpers import (
    FAKE_PLUGINS,
    ENABLED,
    authorise_all_features,
    committed_position,
    connect,
    live,
    set_settings,
    snapshot,
    xapp,  # noqa: F401 - fixture
)
from tests.plugins import fake_mis
from tests.plugins.fake_mis import World, generate
from tests.scheduler_app import DATABASE_ENV, OVERRIDES_ENV

ROOT = Path(__file__).resolve().parent.parent
ELSEWHERE = "another-host:4242:abcdef"

KILLED_RUN = """
import sys
from portal import create_app
from portal.testing.databases import base_config
from tests.extract_helpers import extract_config

app = create_app(base_config(sys.argv[1], **extract_config()))
with app.app_context():
    from portal.extract import run_extract
    run_extract(int(sys.argv[2]), mode="full")
"""


def _school(make, tmp_path, name="world.json", pupils=20):
    school = make.school()
    authorise_all_features(school)
    world = World(tmp_path / name).save(generate(pupils=pupils))
    return world, connect(school, world.path)


def _runs(conn) -> list[JobRun]:
    db.session.expire_all()
    return list(db.session.scalars(select(JobRun).where(JobRun.connection_id == conn.id).order_by(JobRun.id)))


def _kill_mid_run(conn, database_url, category="student_attendance_exclusions", page=7) -> JobRun:
    """Run a full extract in another process and kill -9 it at a page; return the run it left running."""
    set_settings(conn, faults=[{"category": category, "page": page, "do": "kill"}])
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, database_url, str(conn.id)], cwd=ROOT, capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    set_settings(conn, faults=[])
    dead = _runs(conn)[-1]
    assert dead.status == RunStatus.running
    return dead


def _looks_alive_elsewhere(run: JobRun, *, heartbeat_age: timedelta = timedelta(0)) -> None:
    """Make a run look owned by a process on another host, with a lease still valid."""
    db.session.execute(
        update(JobRun).where(JobRun.id == run.id).values(
            claimed_by=ELSEWHERE, heartbeat_at=utcnow() - heartbeat_age, lease_expires_at=utcnow() + timedelta(minutes=5)
        )
    )
    db.session.commit()


# ---------------------------------------------------------------- dead runs


def test_kill_9_of_a_full_extract_then_an_immediate_rerun_resumes_it(xapp, make, tmp_path, database_url):
    world, conn = _school(make, tmp_path, "killed.json")
    shutil.copy(world.path, tmp_path / "straight.json")
    _, straight = _school(make, tmp_path, "straight.json")
    dead = _kill_mid_run(conn, database_url)
    # The lease is still minutes away from lapsing: the owner process being gone is what tells.
    assert dead.lease_expires_at > utcnow()
    committed = committed_position(dead)  # read now: the rerun updates the same run
    fake_mis.CALLS.clear()
    rerun = run_extract(conn.id, mode="full")
    assert rerun.id == dead.id and rerun.attempts == 2
    assert rerun.status == RunStatus.succeeded, rerun.error_message
    # Resumed at the killed category's last committed page (page 6, or an earlier one when the kill
    # came before the writer thread committed it); completed categories were not read again.
    assert (fake_mis.CALLS[0][0], fake_mis.CALLS[0][2]) == committed
    assert committed[0] == "student_attendance_exclusions" and committed[1] in (None, "2", "4", "6")
    assert [r.id for r in _runs(conn)] == [dead.id]  # no second run from scratch
    run_extract(straight.id, mode="full")
    assert live(snapshot(conn.id), "pupil") == live(snapshot(straight.id), "pupil")
    assert {k: len(live(snapshot(conn.id), k)) for k in snapshot(conn.id)} == {
        k: len(live(snapshot(straight.id), k)) for k in snapshot(straight.id)
    }


def test_a_scheduled_firing_after_a_kill_resumes_the_dead_run_and_records_itself_folded(xapp, make, tmp_path, database_url):
    from portal.jobs.scheduler import fire_job

    world, conn = _school(make, tmp_path)
    dead = _kill_mid_run(conn, database_url)
    fire_job("jobs:refresh", utcnow())
    fired = fire_job(f"extract:{conn.id}", utcnow())
    assert (fired.status, fired.error_code) == (RunStatus.cancelled, "resumed_instead")
    assert f"Run {dead.id}" in fired.error_message
    resumed = db.session.get(JobRun, dead.id)
    db.session.refresh(resumed)
    assert resumed.status == RunStatus.succeeded and resumed.attempts == 2
    assert len(live(snapshot(conn.id), "pupil")) == 20


def test_a_run_on_another_host_is_dead_once_its_heartbeat_is_old(xapp, make, tmp_path, database_url):
    _, conn = _school(make, tmp_path)
    dead = _kill_mid_run(conn, database_url)
    _looks_alive_elsewhere(dead)
    with pytest.raises(ExtractRefused) as refused:
        run_extract(conn.id, mode="full")
    assert refused.value.code == "already_running" and str(dead.id) in refused.value.message
    _looks_alive_elsewhere(dead, heartbeat_age=timedelta(seconds=xapp.config["JOB_DEAD_AFTER_SECONDS"] + 1))
    resumed = run_extract(conn.id, mode="full")
    assert resumed.id == dead.id and resumed.status == RunStatus.succeeded


def test_a_live_run_keeps_a_scheduled_firing_out(xapp, make, tmp_path, database_url):
    from portal.jobs.scheduler import fire_job

    _, conn = _school(make, tmp_path)
    dead = _kill_mid_run(conn, database_url)
    _looks_alive_elsewhere(dead)
    fire_job("jobs:refresh", utcnow())
    fired = fire_job(f"extract:{conn.id}", utcnow())
    assert (fired.status, fired.error_code) == (RunStatus.cancelled, "already_running")
    assert db.session.get(JobRun, dead.id).status == RunStatus.running  # untouched


def test_a_dead_run_a_newer_full_run_completed_is_superseded_and_never_resumed(xapp, make, tmp_path, database_url):
    _, conn = _school(make, tmp_path)
    dead = _kill_mid_run(conn, database_url)
    # A newer full run completed while the dead one was not yet found dead (it looked alive elsewhere).
    _looks_alive_elsewhere(dead)
    newer = JobRun(job_id=dead.job_id, kind="extract", scheduled_for=utcnow(), connection_id=conn.id,
                   status=RunStatus.succeeded, params={"mode": "full", "categories": dead.params["categories"]},
                   stats={}, attempts=1, started_at=utcnow(), finished_at=utcnow())
    db.session.add(newer)
    db.session.commit()
    db.session.execute(update(JobRun).where(JobRun.id == dead.id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    run = run_extract(conn.id, mode="incremental")
    assert run.id not in (dead.id, newer.id)
    assert run.status == RunStatus.succeeded, run.error_message
    closed = db.session.get(JobRun, dead.id)
    db.session.refresh(closed)
    assert (closed.status, closed.error_code) == (RunStatus.superseded, "superseded")
    assert f"run {newer.id}" in closed.error_message
    assert closed.attempts == 1  # never taken over
    assert claims.take_over_lapsed(claims.owner_id()) == []


def test_reconciliation_never_proposes_removing_a_row_a_later_run_saw(xapp, make, tmp_path):
    _, conn = _school(make, tmp_path)
    first = run_extract(conn.id, mode="full")
    # An older full run, dead since before the next full run marked every row it saw.
    older = JobRun(job_id=f"extract:{conn.id}", kind="extract", scheduled_for=utcnow() - timedelta(hours=1),
                   connection_id=conn.id, status=RunStatus.running, params={}, stats={}, attempts=1)
    db.session.add(older)
    db.session.commit()
    since = utcnow()
    # (Set aside while the later run goes, so the later run neither waits for it nor resumes it.)
    db.session.execute(update(JobRun).where(JobRun.id == older.id).values(status=RunStatus.failed))
    db.session.commit()
    later = run_extract(conn.id, mode="full")
    assert later.status == RunStatus.succeeded and later.id > older.id > first.id
    def staged() -> int:
        return db.session.scalar(select(func.count()).select_from(ExtractRemoval).where(ExtractRemoval.run_id == older.id))

    store.stage_reconciliation(conn, older.id, ["pupil"], since=since)
    assert staged() == 0
    # A pupil no run has seen since `since`, and older than it, is still proposed (the guard is not "never remove").
    ghost = db.session.scalar(select(MisPupil).where(MisPupil.connection_id == conn.id).limit(1))
    db.session.execute(update(MisPupil).where(MisPupil.id == ghost.id).values(
        seen_run_id=first.id, extracted_at=since - timedelta(minutes=1)))
    store.stage_reconciliation(conn, older.id, ["pupil"], since=since)
    assert staged() == 1
    db.session.rollback()


def test_owner_gone_reads_the_process_table_of_this_host_only(xapp):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    host = socket.gethostname()
    assert claims.owner_gone(f"{host}:{proc.pid}:abcdef")
    assert not claims.owner_gone(claims.owner_id())
    assert claims.owner_gone(f"{host}:{os.getpid()}:000000")  # an earlier process that had our pid
    assert not claims.owner_gone(f"{host}:{os.getppid()}:abcdef")
    assert not claims.owner_gone(f"another-host:{proc.pid}:abcdef")


# ---------------------------------------------------------------- CLI runs in separate processes


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    env[DATABASE_ENV] = database_url
    env[OVERRIDES_ENV] = json.dumps({"PLUGINS": FAKE_PLUGINS, "ENABLED_CONNECTORS": ENABLED, "EXTRACT_BATCH_SIZE": 10})
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "tests.scheduler_app:build()", "portal", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_a_cli_incremental_after_a_cli_full_is_incremental(xapp, make, tmp_path, database_url):
    world, conn = _school(make, tmp_path)
    urn = conn.school.urn
    full = _cli(database_url, "extract", "--connector", "fakemis", "--school", urn, "--full", "--json")
    assert full.returncode == 0, full.stderr[-2000:]
    assert json.loads(full.stdout)["mode"] == "full"
    world.update("pupil", "P2", utcnow(), legal_surname="Changed")
    fake_mis.CALLS.clear()
    inc = _cli(database_url, "extract", "--connector", "fakemis", "--school", urn, "--incremental", "--json")
    assert inc.returncode == 0, inc.stderr[-2000:]
    summary = json.loads(inc.stdout)
    assert summary["mode"] == "incremental"
    assert summary["categories"]["student_basic"]["updated"] == 1
    assert summary["categories"]["student_basic"]["inserted"] == 0
    db.session.expire_all()
    assert snapshot(conn.id)["pupil"]["P2"]["legal_surname"] == "Changed"


def test_cli_errors_are_one_line_without_a_traceback(xapp, make, tmp_path, database_url):
    make.school()
    db.session.commit()
    for args in (
        ("extract", "--connector", "fakemis", "--school", "999999"),
        ("products", "authorise", "--school", "999999", "--product", "Nothing"),
        ("holds", "approve", "123456"),
        ("extract", "--connector", "nope", "--school", "999999"),
    ):
        result = _cli(database_url, *args)
        assert result.returncode != 0
        # (tests.scheduler_app logs at INFO as "<pid> <logger> <message>"; those lines are not the error.)
        lines = [line for line in result.stderr.splitlines() if line.strip() and not re.match(r"\d+ [\w.]+ ", line)]
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, result.stderr)
        assert "Traceback" not in result.stderr and "Usage:" not in result.stderr


# ---------------------------------------------------------------- re-authorisation


def test_recovering_from_failing_does_not_force_a_full_run_but_a_real_reapproval_does(xapp, make, tmp_path):
    _, conn = _school(make, tmp_path)
    lifecycle.mark_approved(conn)  # the connection was approved before its first run
    assert run_extract(conn.id, mode="full").status == RunStatus.succeeded
    lifecycle.mark_failing(conn, error_code="bad_response")
    lifecycle.mark_healthy(conn)  # approved -> failing -> approved
    run = run_extract(conn.id, mode="incremental")
    assert (run.params["mode"], run.params["mode_reason"]) == ("incremental", "asked")
    lifecycle.mark_failing(conn, error_code="bad_response")
    lifecycle.mark_approved(conn)  # the provider says approved while failing: still a recovery
    assert run_extract(conn.id, mode="incremental").params["mode"] == "incremental"
    conn.state = ConnectionState.pending  # asked again (e.g. after a revocation) and approved again
    db.session.commit()
    lifecycle.mark_approved(conn)
    run = run_extract(conn.id, mode="incremental")
    assert (run.params["mode"], run.params["mode_reason"]) == ("full", "reauthorised")


# ---------------------------------------------------------------- holds


def _hold(world, conn) -> JobRun:
    run_extract(conn.id, mode="full")
    for n in (3, 4, 5):  # 3 of 20 pupils gone without a deletion: a mass removal
        world.delete("pupil", f"P{n}", utcnow(), feed=False)
    held = run_extract(conn.id, mode="full")
    assert held.status == RunStatus.held
    return held


def test_while_a_removal_is_held_later_runs_take_upserts_only_and_never_stack_a_hold(xapp, make, tmp_path):
    world, conn = _school(make, tmp_path)
    held = _hold(world, conn)
    world.update("pupil", "P1", utcnow(), legal_surname="Later")
    world.delete("pupil", "P9", utcnow())  # a deletion the provider reports: decided with the hold
    fake_mis.CALLS.clear()
    later = run_extract(conn.id, mode="full")  # even a full asked for is incremental now
    assert later.status == RunStatus.succeeded, later.error_message
    assert (later.params["mode"], later.params["mode_reason"]) == ("incremental", "hold_pending")
    assert all(since is not None for _, since, _ in fake_mis.CALLS)  # no full read
    assert later.stats["hold_pending"] == {"run_id": held.id, "removals_carried": 1}
    again = run_extract(conn.id)
    assert again.status == RunStatus.succeeded and again.params["mode_reason"] == "hold_pending"
    assert [r.id for r in _runs(conn) if r.status == RunStatus.held] == [held.id]
    snap = snapshot(conn.id)
    assert snap["pupil"]["P1"]["legal_surname"] == "Later"
    assert len(live(snap, "pupil")) == 20  # nothing removed while held
    assert db.session.scalar(select(func.count()).select_from(ExtractRemoval).where(ExtractRemoval.run_id == held.id)) == 4


def test_holds_cli_lists_approves_and_rejects(xapp, make, tmp_path):
    world, conn = _school(make, tmp_path)
    held = _hold(world, conn)
    cli = xapp.test_cli_runner()
    listed = cli.invoke(args=["portal", "holds", "list"])
    assert listed.exit_code == 0 and f"{held.id}\tURN {conn.school.urn}\tfakemis\t3 of 20 pupils" in listed.output
    approved = cli.invoke(args=["portal", "holds", "approve", str(held.id)])
    assert approved.exit_code == 0, approved.output
    assert live(snapshot(conn.id), "pupil") == {f"P{n}" for n in range(1, 21)} - {"P3", "P4", "P5"}
    assert cli.invoke(args=["portal", "holds", "list"]).output.strip() == "No extract run is held."
    again = cli.invoke(args=["portal", "holds", "approve", str(held.id)])
    assert again.exit_code == 1 and "is not held" in again.output
    for n in (6, 7, 8):
        world.delete("pupil", f"P{n}", utcnow(), feed=False)
    second = run_extract(conn.id, mode="full")
    assert second.status == RunStatus.held
    rejected = cli.invoke(args=["portal", "holds", "reject", str(second.id)])
    assert rejected.exit_code == 0 and "nothing was removed" in rejected.output
    assert {"P6", "P7", "P8"} <= live(snapshot(conn.id), "pupil")


# ---------------------------------------------------------------- products


def test_products_cli_lists_authorises_and_ends(xapp, make, tmp_path):
    from portal.api.authorisations import live_authorisation
    from portal.models import DeletionOrder, Feature, Product

    school = make.school()
    product = Product(name="Reading Tracker", purpose="test")
    product.features = list(db.session.scalars(select(Feature).limit(1)))
    db.session.add(product)
    db.session.commit()
    cli = xapp.test_cli_runner()
    listed = cli.invoke(args=["portal", "products", "list", "--school", school.urn])
    assert listed.exit_code == 0 and "Reading Tracker\tnot authorised" in listed.output
    done = cli.invoke(args=["portal", "products", "authorise", "--school", school.urn, "--product", "reading tracker"])
    assert done.exit_code == 0, done.output
    assert live_authorisation(school.id, product.id) is not None
    assert "authorised since" in cli.invoke(args=["portal", "products", "list", "--school", school.urn]).output
    unknown = cli.invoke(args=["portal", "products", "authorise", "--school", school.urn, "--product", "Nope"])
    assert unknown.exit_code != 0 and "no product named 'Nope'" in unknown.output
    ended = cli.invoke(args=["portal", "products", "end", "--school", school.urn, "--product", "Reading Tracker"])
    assert ended.exit_code == 0, ended.output
    assert live_authorisation(school.id, product.id) is None
    twice = cli.invoke(args=["portal", "products", "end", "--school", school.urn, "--product", "Reading Tracker"])
    assert twice.exit_code == 1 and "nothing to end" in twice.output
    assert db.session.scalar(select(func.count()).select_from(DeletionOrder)) <= 1
