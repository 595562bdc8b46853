"""How extract runs end under faults, revocation, the mass-removal hold and a SIGKILL (R4, R5, R20)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from portal.extensions import db
from portal.extract import ExtractRefused, approve_held_run, reject_held_run, run_extract
from portal.models import Connection, ConnectionState, ErrorKind, JobRun, MisPupil, Role, RunStatus
from portal.models.base import utcnow
from tests.extract_helpers import (
    authorise_all_features,
    committed_position,
    connect,
    extract_config,
    live,
    set_settings,
    snapshot,
    wait_for,
    xapp,  # noqa: F401 - fixture
)
from tests.plugins import fake_mis
from tests.plugins.fake_mis import World, generate

ROOT = Path(__file__).resolve().parent.parent


def _school(make, tmp_path, name="world.json", pupils=20, **settings):
    school = make.school()
    authorise_all_features(school)
    world = World(tmp_path / name).save(generate(pupils=pupils))
    return world, connect(school, world.path, **settings)


def _wait_for_pages_1_and_2(other, conn) -> None:
    """Wait until pages 1-2 (10 pupils, the first commit) are committed, as seen from another connection.

    The writer thread commits them while the engine reads page 3 (where the tests' hooks run): a
    revocation or cancellation made now lands after that commit, as one a person makes does.
    """
    def committed() -> int:
        with other.connect() as c:
            return c.execute(text(f"SELECT count(*) FROM mis_pupils WHERE connection_id = {conn.id}")).scalar()

    wait_for(lambda: committed() == 10, "the commit of pages 1-2")


def _pupils(conn) -> int:
    return db.session.execute(select(func.count()).select_from(MisPupil).where(MisPupil.connection_id == conn.id)).scalar()


@pytest.mark.parametrize(
    ("fault", "kind", "code", "state"),
    [
        ("authorisation_lost", ErrorKind.school_action, "authorisation_lost", ConnectionState.revoked),
        ("unavailable", ErrorKind.temporary, "provider_unavailable", ConnectionState.approved),
        ("rate_limited", ErrorKind.temporary, "rate_limited", ConnectionState.approved),
        ("bad_response", ErrorKind.provider_problem, "bad_response", ConnectionState.failing),
        ("internal", ErrorKind.internal, "internal_error", ConnectionState.approved),
    ],
)
def test_a_fault_mid_run_fails_the_run_typed_and_keeps_committed_pages(xapp, make, tmp_path, fault, kind, code, state):
    world, conn = _school(make, tmp_path)
    assert run_extract(conn.id, mode="full").status == RunStatus.succeeded
    changed_at = utcnow()
    for n in range(1, 21):
        world.update("pupil", f"P{n}", changed_at, legal_surname="Renamed")
    world.delete("pupil", "P20", changed_at, feed=False)
    world.delete("staff", "ST1", changed_at)
    set_settings(conn, faults=[{"category": "student_basic", "page": 3, "do": fault}])
    run = run_extract(conn.id, mode="full")
    assert (run.status, run.error_kind, run.error_code) == (RunStatus.failed, kind, code)
    assert run.error_message and "Renamed" not in run.error_message
    snap = snapshot(conn.id)
    # Pages 1 and 2 (10 pupils) were committed before the fault and are kept; nothing after them.
    assert sum(row["legal_surname"] == "Renamed" for row in snap["pupil"].values()) == 10
    assert run.stats["categories"]["student_basic"]["updated"] == 10
    # A failed full run never tombstones (R20).
    assert live(snap, "pupil") == {f"P{n}" for n in range(1, 21)} and "ST1" in live(snap, "staff")
    db.session.expire_all()
    assert db.session.get(Connection, conn.id).state == state


def test_a_connector_error_names_where_it_happened(xapp, make, tmp_path):
    world, conn = _school(make, tmp_path)
    set_settings(conn, faults=[{"category": "student_basic", "page": 3, "do": "bad_response"}])
    run = run_extract(conn.id, mode="full")
    assert run.error_message == "The provider sent invalid JSON for pupils, page 2."
    assert run.stats["failed_at"] == {"endpoint": "pupils", "page": 2}


def test_authorisation_lost_stops_the_connection_being_extracted(xapp, make, tmp_path):
    world, conn = _school(make, tmp_path)
    set_settings(conn, faults=[{"category": "student_basic", "page": 1, "do": "authorisation_lost"}])
    run_extract(conn.id, mode="full")
    fake_mis.CALLS.clear()
    again = run_extract(conn.id, mode="full")
    assert (again.status, again.error_code) == (RunStatus.cancelled, "not_authorised")
    assert fake_mis.CALLS == []


@pytest.mark.parametrize("check_every", [0, 0.25, 60], ids=["every-page", "default", "only-at-commits"])
def test_a_revocation_between_pages_commits_no_further_page(xapp, make, tmp_path, check_every):
    # Whether the cheap check between commits runs at every page or hardly ever, the locked check
    # before each commit keeps every page read after the revocation out of the store (R4).
    xapp.config["EXTRACT_PAGE_CHECK_SECONDS"] = check_every
    world, conn = _school(make, tmp_path)
    other = create_engine(db.engine.url.render_as_string(hide_password=False))
    seen = {}

    def revoke_from_another_process():
        _wait_for_pages_1_and_2(other, conn)
        with other.begin() as c:
            seen["pupils"] = c.execute(text(f"SELECT count(*) FROM mis_pupils WHERE connection_id = {conn.id}")).scalar()
            c.execute(text(f"UPDATE connections SET state = 'revoked' WHERE id = {conn.id}"))

    fake_mis.HOOKS["revoke"] = revoke_from_another_process
    set_settings(conn, faults=[{"category": "student_basic", "page": 3, "do": "hook", "name": "revoke"}])
    run = run_extract(conn.id, mode="full")
    other.dispose()
    assert (run.status, run.error_code) == (RunStatus.cancelled, "connection_revoked")
    assert seen["pupils"] == 10
    assert _pupils(conn) == 10
    assert [c for c, _, _ in fake_mis.CALLS] == ["student_basic"]


def test_r4_an_incremental_run_revoked_in_its_last_category_commits_none_of_its_categories(xapp, make, tmp_path):
    # An incremental run's categories share one commit, so a revocation before it keeps every category's
    # changes out, and the next run asks each category again from the same time: nothing is skipped.
    world, conn = _school(make, tmp_path)
    assert run_extract(conn.id, mode="full").status == RunStatus.succeeded
    world.update("pupil", "P1", utcnow(), legal_surname="Renamed")
    other = create_engine(db.engine.url.render_as_string(hide_password=False))

    def revoke_from_another_process():
        with other.begin() as c:
            c.execute(text(f"UPDATE connections SET state = 'revoked' WHERE id = {conn.id}"))

    fake_mis.HOOKS["revoke"] = revoke_from_another_process
    set_settings(conn, faults=[{"category": "staff_basic", "page": 1, "do": "hook", "name": "revoke"}])
    fake_mis.CALLS.clear()
    run = run_extract(conn.id, mode="incremental")
    other.dispose()
    assert (run.status, run.error_code) == (RunStatus.cancelled, "connection_revoked")
    assert [c for c, _, _ in fake_mis.CALLS][-1] == "staff_basic"
    asked = {c: since for c, since, _ in fake_mis.CALLS}
    assert snapshot(conn.id)["pupil"]["P1"]["legal_surname"] != "Renamed"
    set_settings(conn, faults=[])
    db.session.execute(text(f"UPDATE connections SET state = 'approved' WHERE id = {conn.id}"))
    db.session.commit()
    fake_mis.CALLS.clear()
    again = run_extract(conn.id, mode="incremental")
    assert again.status == RunStatus.succeeded
    assert {c: since for c, since, _ in fake_mis.CALLS} == asked
    assert snapshot(conn.id)["pupil"]["P1"]["legal_surname"] == "Renamed"


def test_a_run_cancelled_by_the_lifecycle_stops_at_the_next_page(xapp, make, tmp_path):
    world, conn = _school(make, tmp_path)
    other = create_engine(db.engine.url.render_as_string(hide_password=False))

    def cancel():
        _wait_for_pages_1_and_2(other, conn)
        with other.begin() as c:
            c.execute(text(f"UPDATE job_runs SET status = 'cancelled', error_message = 'Stopped: paused.' "
                           f"WHERE connection_id = {conn.id}"))

    fake_mis.HOOKS["cancel"] = cancel
    set_settings(conn, faults=[{"category": "student_basic", "page": 3, "do": "hook", "name": "cancel"}])
    run = run_extract(conn.id, mode="full")
    other.dispose()
    assert (run.status, run.error_message) == (RunStatus.cancelled, "Stopped: paused.")
    assert _pupils(conn) == 10


def _remove_three_pupils(world):
    for n in (3, 4, 5):
        world.delete("pupil", f"P{n}", utcnow(), feed=False)


def test_mass_removal_holds_the_run_and_approval_applies_it(xapp, make, tmp_path):
    world, conn = _school(make, tmp_path)
    run_extract(conn.id, mode="full")
    _remove_three_pupils(world)  # 3 of 20 = 15 % > 10 %
    world.update("pupil", "P1", utcnow(), legal_surname="Updated")
    run = run_extract(conn.id, mode="full")
    assert run.status == RunStatus.held
    assert run.error_code == "mass_removal_hold" and "3 of 20" in run.error_message
    snap = snapshot(conn.id)
    assert len(live(snap, "pupil")) == 20  # nothing removed yet...
    assert snap["pupil"]["P1"]["legal_surname"] == "Updated"  # ...but updates are in
    viewer = make.user(Role.school_admin, db.session.get(Connection, conn.id).school)
    db.session.commit()
    with pytest.raises(ExtractRefused):
        approve_held_run(run.id, viewer)
    support = make.user(support=True)
    db.session.commit()
    approved = approve_held_run(run.id, support)
    assert approved.status == RunStatus.succeeded
    assert approved.stats["categories"]["student_basic"]["tombstoned"] == 3
    assert live(snapshot(conn.id), "pupil") == {f"P{n}" for n in range(1, 21)} - {"P3", "P4", "P5"}


def test_rejecting_a_held_run_removes_nothing(xapp, make, tmp_path):
    world, conn = _school(make, tmp_path)
    run_extract(conn.id, mode="full")
    _remove_three_pupils(world)
    run = run_extract(conn.id, mode="full")
    support = make.user(support=True)
    db.session.commit()
    rejected = reject_held_run(run.id, support)
    assert (rejected.status, rejected.error_code) == (RunStatus.failed, "mass_removal_rejected")
    assert len(live(snapshot(conn.id), "pupil")) == 20
    with pytest.raises(ExtractRefused):
        approve_held_run(run.id, support)


def test_a_small_removal_is_applied_without_a_hold(xapp, make, tmp_path):
    world, conn = _school(make, tmp_path)
    run_extract(conn.id, mode="full")
    world.delete("pupil", "P9", utcnow(), feed=False)  # 5 %
    run = run_extract(conn.id, mode="full")
    assert run.status == RunStatus.succeeded
    assert "P9" not in live(snapshot(conn.id), "pupil")


def test_the_hold_threshold_is_configurable(make_app, make, tmp_path):
    app = make_app(**extract_config(MASS_REMOVAL_THRESHOLD=0.5))
    with app.app_context():
        world, conn = _school(make, tmp_path)
        run_extract(conn.id, mode="full")
        _remove_three_pupils(world)
        assert run_extract(conn.id, mode="full").status == RunStatus.succeeded


# ---------------------------------------------------------------- SIGKILL and resume

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


def _comparable(snap: dict) -> dict:
    """A reconciliation tombstone carries the time the run found the gap; compare only that it has one."""
    return {
        kind: {ext: {**row, "deleted_at": row["deleted_at"] is not None} for ext, row in rows.items()}
        for kind, rows in snap.items()
    }


@pytest.mark.parametrize(
    ("category", "page", "resumed_from"),
    # Batches of 10 records, pages of 5: a commit (and its checkpoint) every second page.
    [("student_basic", 2, None), ("student_attendance_exclusions", 7, "6"), ("staff_basic", 1, None)],
)
def test_a_run_killed_with_sigkill_resumes_to_the_same_store(
    xapp, make, tmp_path, database_url, category, page, resumed_from
):
    world, killed = _school(make, tmp_path, "killed.json")
    shutil.copy(world.path, tmp_path / "straight.json")
    _, straight = _school(make, tmp_path, "straight.json")
    # Both schools already hold last week's data; the provider has changed and deleted since.
    run_extract(killed.id, mode="full")
    run_extract(straight.id, mode="full")
    at = utcnow()
    for w in (world, World(tmp_path / "straight.json")):
        w.update("pupil", "P2", at, legal_surname="Changed")
        w.update("attendance_mark", "P6:2026-09-08:PM", at, code="M")
        w.delete("pupil", "P11", at, feed=False)
        w.delete("exclusion", "X4", at)
    set_settings(killed, faults=[{"category": category, "page": page, "do": "kill"}])
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, database_url, str(killed.id)], cwd=ROOT, capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    db.session.expire_all()
    interrupted = db.session.execute(
        select(JobRun).where(JobRun.connection_id == killed.id).order_by(JobRun.id.desc())
    ).scalars().first()
    assert interrupted.status == RunStatus.running
    committed = committed_position(interrupted)  # read now: the resumed attempt updates the same run
    set_settings(killed, faults=[])
    fake_mis.CALLS.clear()
    resumed = run_extract(killed.id, mode="full", run_id=interrupted.id)
    assert resumed.status == RunStatus.succeeded, resumed.error_message
    # The resumed attempt starts at the killed category (completed ones are not fetched again: a
    # category's last commit is waited for before the next is read), at its last committed
    # checkpoint. The writer thread commits while the engine reads on, so the kill may land before
    # the last checkpoints handed over were committed: then it starts at an earlier one, never later.
    first_category, _, cursor = fake_mis.CALLS[0]
    assert first_category == category
    assert (first_category, cursor) == committed
    if resumed_from is None:
        assert cursor is None
    else:
        assert cursor is None or int(cursor) <= int(resumed_from)
    uninterrupted = run_extract(straight.id, mode="full")
    assert _comparable(snapshot(killed.id)) == _comparable(snapshot(straight.id))
    assert snapshot(killed.id)["exclusion"]["X4"]["deleted_at"] == at  # the deletions feed's time
    assert "P11" not in live(snapshot(killed.id), "pupil")
    assert resumed.stats["categories"] == uninterrupted.stats["categories"]
