"""Incremental watermarks over real HTTP: a run's watermark moves past what it read, whatever the provider's clock does."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from portal.extract import run_extract
from portal.models import RunStatus
from portal.sandbox import synthetic
from portal.testing.conformance import add_synthetic_school, approved_connection
from tests.extract_helpers import authorise_all_features

sandbox_module = pytest.importorskip("portal_wonde.sandbox")


class ProviderClock:
    """The sandbox's clock: ours plus a shift a test moves (a day passes, or the provider's clock is off)."""

    def __init__(self) -> None:
        self.shift = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc).replace(microsecond=0) + self.shift


@pytest.fixture
def served(make_app):
    """A Wonde sandbox whose clock (stamps and Date header) the test controls, and an approved connection."""
    school = synthetic.generate_school(12, pupils=30, days=10, phase="secondary", sixth_form=False)
    clock = ProviderClock()
    with sandbox_module.WondeSandbox([school], clock=clock) as sandbox:
        sandbox.date_from_clock = True
        app = make_app(PLUGINS=["portal_wonde.plugin"], ENABLED_CONNECTORS=["wonde"],
                       CONNECTORS={"wonde": sandbox.settings}, EXTRACT_BATCH_SIZE=200)
        with app.app_context():
            org = add_synthetic_school(school)
            authorise_all_features(org)
            conn = approved_connection(org, "wonde")
            yield sandbox, clock, school, conn.id


def _received(run, category: str | None = None) -> int:
    """Records the run was sent (written or not), over one category or all."""
    counts = run.stats["categories"]
    chosen = [counts[category]] if category else counts.values()
    return sum(c["inserted"] + c["updated"] + c["unchanged"] for c in chosen)


def _results_asked_after(sandbox) -> list[datetime]:
    return [sandbox_module._parse_filter_datetime(r.param("updated_after"))
            for r in sandbox.requests("assessment/results") if r.param("updated_after")]


def test_a_drop_stamped_with_one_time_is_read_once_then_never_again(served):
    sandbox, clock, school, connection_id = served
    # The provider imported the whole assessment drop an hour ago with one updated_at: the newest stamp of the category.
    drop_at = clock() - timedelta(hours=1)
    results = sandbox.stamp_drop(at=drop_at)
    assert results > 20
    full = run_extract(connection_id, mode="full")
    assert full.status == RunStatus.succeeded, full.error_message
    assert full.stats["categories"]["student_assessment"]["inserted"] == results

    # A day later at the provider: two pupils changed, nothing else.
    clock.shift += timedelta(days=1)
    sandbox.mutate(updated=2)
    sandbox.clear_log()
    first = run_extract(connection_id, mode="incremental")
    assert first.status == RunStatus.succeeded and first.params["mode"] == "incremental"
    assert _received(first, "student_assessment") == 0
    assert _received(first, "student_basic") == 2
    assert all(after > drop_at for after in _results_asked_after(sandbox))

    # Another day: the provider stamps a new drop (same results) with one time; the next run reads it once.
    clock.shift += timedelta(days=1)
    second_at = clock()
    second_drop = sandbox.stamp_drop(at=second_at)
    clock.shift += timedelta(hours=1)  # imported in the evening, read by the night's run
    took = run_extract(connection_id, mode="incremental")
    assert _received(took, "student_assessment") == second_drop
    assert took.stats["categories"]["student_assessment"]["unchanged"] == second_drop  # same content: nothing written

    # A third day with nothing new: no record at all is sent again, the drop included.
    clock.shift += timedelta(days=1)
    sandbox.clear_log()
    quiet = run_extract(connection_id, mode="incremental")
    assert quiet.status == RunStatus.succeeded
    assert _received(quiet) == 0
    asked = _results_asked_after(sandbox)
    assert asked and all(after > second_at for after in asked)


def test_a_provider_clock_behind_ours_loses_no_change(served):
    sandbox, clock, school, connection_id = served
    # The provider's clock (its stamps and its Date header) runs an hour behind ours.
    clock.shift = -timedelta(hours=1)
    assert run_extract(connection_id, mode="full").status == RunStatus.succeeded
    done = sandbox.mutate(updated=3, staff_updated=1)
    run = run_extract(connection_id, mode="incremental")
    assert run.params["mode"] == "incremental"
    # Stamped by the provider's clock an hour before ours: read because the watermark follows its Date header.
    assert _received(run, "student_basic") == len(done["updated"]) == 3
    assert _received(run, "staff_basic") == 1


def test_a_provider_clock_ahead_of_ours_rereads_no_drop(served):
    sandbox, clock, school, connection_id = served
    clock.shift = timedelta(hours=3)
    sandbox.stamp_drop(at=clock() - timedelta(hours=1))
    assert run_extract(connection_id, mode="full").status == RunStatus.succeeded
    clock.shift += timedelta(days=1)
    quiet = run_extract(connection_id, mode="incremental")
    assert quiet.params["mode"] == "incremental"
    assert _received(quiet) == 0
