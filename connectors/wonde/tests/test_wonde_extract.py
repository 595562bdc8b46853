"""End to end: run_extract through the real Wonde connector over HTTP against its sandbox (SQLite and PostgreSQL)."""
from __future__ import annotations

from datetime import datetime, timezone

from portal.extensions import db
from portal.extract import approve_held_run, run_extract
from portal.models import ConnectionState, ErrorKind, RunStatus, User


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def test_full_extract_over_http_matches_the_sandbox_field_by_field(wonde):
    run = run_extract(wonde.connection_id, mode="full")
    assert run.status == RunStatus.succeeded, run.error_message
    wonde.assert_store_matches()
    assert run.stats["categories"]["student_basic"]["inserted"] == len(wonde.school.pupils)
    assert run.stats["requests"] == len(wonde.served.sandbox.requests()) - _non_data_requests(wonde)
    assert run.stats["pages"] >= 6


def _non_data_requests(kit) -> int:
    # Matching the school (the school listing) is not part of a category's pages.
    return len([r for r in kit.served.sandbox.requests() if r.path.rstrip("/").endswith("/schools")])


def test_incremental_sends_updated_after_and_applies_updates_and_deletions(wonde):
    assert run_extract(wonde.connection_id).params["mode"] == "full"
    done = wonde.mutate(_now(), updated=3, deleted=1, marks=4, staff_deleted=1)
    wonde.served.sandbox.clear_log()
    run = run_extract(wonde.connection_id)
    assert run.status == RunStatus.succeeded, run.error_message
    assert run.params["mode"] == "incremental"
    school_path = f"/schools/{wonde.served.sandbox.school_id()}/"
    # Every data request carries the filter (the deletions feed and the code list are not filtered by it).
    data = [r for r in wonde.served.sandbox.requests(school_path)
            if not r.path.rstrip("/").endswith(("deletions", "attendance-codes"))]
    assert data and [r.path for r in data if not r.param("updated_after")] == []
    assert wonde.served.sandbox.requests("deletions")
    store = wonde.store()
    for key in done["deleted"]:
        assert store["pupil"][(key,)]["deleted"]
    assert run.stats["categories"]["student_basic"]["updated"] >= 3
    assert run.stats["categories"]["student_basic"]["tombstoned"] == 1
    # Much less was asked for than in a full run.
    assert run.stats["requests"] < 40


def test_a_school_revoked_mid_run_stops_at_once(wonde):
    sandbox = wonde.served.sandbox
    sandbox.add_fault(match=f"/schools/{sandbox.school_id()}/", action="revoke", skip=3)
    run = run_extract(wonde.connection_id, mode="full")
    assert (run.status, run.error_kind, run.error_code) == (RunStatus.failed, ErrorKind.school_action, "authorisation_lost")
    assert wonde.connection().state == ConnectionState.revoked
    # The refused request was followed only by the check that confirmed the revocation: no retries, nothing more.
    assert sandbox.requests()[-2].path.startswith(f"/v1.0/schools/{sandbox.school_id()}/")
    assert sandbox.requests()[-2].status == 403
    assert sandbox.requests()[-1].path == f"/v1.0/meta/schools/{sandbox.school_id()}"
    before = len(sandbox.requests())
    assert run_extract(wonde.connection_id, mode="full").status == RunStatus.cancelled
    assert len(sandbox.requests()) == before


def test_rate_limits_are_honoured_and_counted_as_retries(wonde):
    sandbox = wonde.served.sandbox
    sandbox.add_fault(match=f"/schools/{sandbox.school_id()}/", status=429, retry_after="1", skip=2, times=2)
    run = run_extract(wonde.connection_id, mode="full")
    assert run.status == RunStatus.succeeded, run.error_message
    assert run.stats["retries"] >= 2
    wonde.assert_store_matches()


def test_invalid_json_fails_the_run_naming_the_endpoint_and_keeping_committed_pages(wonde):
    sandbox = wonde.served.sandbox
    sandbox.add_fault(match="/attendance", body="invalid_json", times=None)
    run = run_extract(wonde.connection_id, mode="full")
    # Asked again once, then a typed error support can act on.
    assert (run.status, run.error_kind, run.error_code) == (RunStatus.failed, ErrorKind.provider_problem, "invalid_json")
    assert "attendance" in run.error_message.lower() and "page" in run.error_message.lower()
    assert "twice running" in run.error_message and "Wonde support" in run.error_message
    # The categories before attendance were committed and are kept.
    assert len(wonde.store()["pupil"]) == len(wonde.school.pupils)
    assert wonde.connection().state == ConnectionState.failing


def test_mass_removal_over_http_is_held_then_applied_on_approval(wonde):
    assert run_extract(wonde.connection_id, mode="full").status == RunStatus.succeeded
    done = wonde.mutate(_now(), deleted=6)  # 6 of 36: over 10 %
    run = run_extract(wonde.connection_id, mode="full")
    assert run.status == RunStatus.held, run.error_message
    assert all(not wonde.store()["pupil"][(key,)]["deleted"] for key in done["deleted"])
    support = User(email="support@example.org", name="Support", password_hash="not-a-hash", is_support=True)
    db.session.add(support)
    db.session.commit()
    approved = approve_held_run(run.id, support)
    assert approved.status == RunStatus.succeeded
    store = wonde.store()
    assert all(store["pupil"][(key,)]["deleted"] for key in done["deleted"])


def test_marks_that_carry_their_code_are_read_without_the_code_list(wonde):
    run = run_extract(wonde.connection_id, mode="full")
    assert run.status == RunStatus.succeeded, run.error_message
    assert wonde.served.sandbox.count("attendance/session") > 1
    assert wonde.served.sandbox.count("attendance-codes") == 0
    wonde.assert_store_matches()


def test_marks_that_carry_only_a_code_id_are_read_with_the_code_list_once(wonde):
    """A server that does not expand the attendance_code include: the school's code list is read, once a run."""
    sandbox = wonde.served.sandbox
    sandbox.unexpanded.add("attendance_code")
    run = run_extract(wonde.connection_id, mode="full")
    assert run.status == RunStatus.succeeded, run.error_message
    assert sandbox.count("attendance/session") > 1 and sandbox.count("attendance-codes") == 1
    assert not run.stats["outcomes"]
    wonde.assert_store_matches()
    # The next day too (marks of the day, with their code ids only).
    wonde.mutate(_now(), marks=4)
    again = run_extract(wonde.connection_id)
    assert again.status == RunStatus.succeeded and again.params["mode"] == "incremental"
    assert sandbox.count("attendance-codes") == 2
    wonde.assert_store_matches()


def test_a_code_list_the_server_lacks_is_one_warning_and_the_marks_are_kept(wonde):
    sandbox = wonde.served.sandbox
    sandbox.unexpanded.add("attendance_code")
    sandbox.missing.add("attendance-codes")
    run = run_extract(wonde.connection_id, mode="full")
    assert run.status == RunStatus.succeeded, run.error_message
    assert sandbox.count("attendance/session") > 1 and sandbox.count("attendance-codes") == 1
    assert [(o["category"], o["code"], o["endpoint"]) for o in run.stats["outcomes"]] == [
        ("student_attendance_exclusions", "optional_read_skipped", "attendance-codes")]
    marks = wonde.store()["attendance_mark"]
    assert len(marks) == len(wonde.expected()["attendance_mark"]) and {m["code"] for m in marks.values()} == {""}
