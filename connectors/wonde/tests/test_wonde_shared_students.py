"""An incremental run reads the day's pupils once for student_basic and student_demographics (both includes)."""
from __future__ import annotations

from datetime import datetime, timezone

from portal.extract import run_extract
from portal.models import ConnectionState, RunStatus


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _lists(sandbox, resource: str) -> list:
    return [r for r in sandbox.requests(f"/{resource}") if r.path.rstrip("/").endswith(f"/{resource}")]


def _received(run, category: str) -> int:
    counts = run.stats["categories"][category]
    return counts["inserted"] + counts["updated"] + counts["unchanged"]


def test_an_incremental_run_asks_for_the_days_pupils_once_for_both_pupil_categories(wonde):
    sandbox = wonde.served.sandbox
    full = run_extract(wonde.connection_id, mode="full")
    assert full.status == RunStatus.succeeded
    # A full run reads each category on its own, as before.
    assert len(_lists(sandbox, "students")) == 2
    wonde.mutate(_now(), updated=3, deleted=1)
    sandbox.clear_log()
    run = run_extract(wonde.connection_id)
    assert (run.status, run.params["mode"]) == (RunStatus.succeeded, "incremental"), run.error_message
    for resource in ("students", "students-leaver"):
        (asked,) = _lists(sandbox, resource)
        assert {"education_details", "extended_details", "sen_needs"} <= set(asked.param("include").split(","))
    wonde.assert_store_matches()
    assert _received(run, "student_demographics") == _received(run, "student_basic") >= 3
    assert run.stats["categories"]["student_demographics"]["tombstoned"] == 1


def test_r5_a_refusal_of_the_special_category_includes_is_student_demographics_alone(wonde):
    sandbox = wonde.served.sandbox
    assert run_extract(wonde.connection_id, mode="full").status == RunStatus.succeeded
    wonde.mutate(_now(), updated=3)
    # This server refuses a read asking for SEN needs whole, instead of leaving them out.
    sandbox.refused_includes = {"sen_needs"}
    sandbox.clear_log()
    run = run_extract(wonde.connection_id)
    assert run.status == RunStatus.succeeded, run.error_message
    assert wonde.connection().state == ConnectionState.approved
    # student_basic was asked again without them and read in full; student_demographics carries the refusal.
    assert {o["category"] for o in run.stats["outcomes"]} == {"student_demographics"}
    assert all(o["withheld"] and not o["confirmed"] for o in run.stats["outcomes"])
    assert _received(run, "student_basic") >= 3
    assert [r.param("include") for r in _lists(sandbox, "students") if r.status == 200] == [
        "education_details,registration,year"]


def test_a_server_without_the_leavers_list_stays_incremental_and_warns_for_both_pupil_categories(wonde):
    sandbox = wonde.served.sandbox
    sandbox.missing = {"students-leaver"}
    assert run_extract(wonde.connection_id, mode="full").status == RunStatus.succeeded
    wonde.mutate(_now(), updated=3)
    sandbox.clear_log()
    run = run_extract(wonde.connection_id)
    # The full run gave both pupil categories a watermark although their leavers could not be read: the
    # night after is incremental (a category without one made every run of the connection a full one).
    assert (run.status, run.params["mode"]) == (RunStatus.succeeded, "incremental"), run.error_message
    skipped = sorted((o["category"], o["code"]) for o in run.stats["outcomes"])
    assert skipped == [("student_basic", "optional_read_skipped"), ("student_demographics", "optional_read_skipped")]
    # The pupils on roll were still read once for both.
    (asked,) = _lists(sandbox, "students")
    assert "extended_details" in asked.param("include")
    assert _received(run, "student_demographics") == _received(run, "student_basic") >= 3
