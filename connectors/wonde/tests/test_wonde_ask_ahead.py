"""An incremental run asks for its reads' first pages at once (ask_ahead): same store, same decisions, no request twice."""
from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

from portal.connectors import CATEGORIES, Checkpoint
from portal.extract import run_extract
from portal.models import ConnectionState, ErrorKind, RunStatus


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _data_requests(sandbox) -> list:
    return sandbox.requests(f"/schools/{sandbox.school_id()}/")


def _asked_twice(requests) -> list:
    seen = Counter((r.path, tuple(sorted((k, tuple(v)) for k, v in r.query.items()))) for r in requests)
    return [key for key, n in seen.items() if n > 1]


def _ask_ahead(kit, monkeypatch, workers: int = 4) -> None:
    # The connector is built from the deployment's settings at each run.
    monkeypatch.setitem(kit.app.config["CONNECTORS"]["wonde"], "ask_ahead", workers)


def test_an_incremental_run_asks_at_once_and_stores_what_it_would_one_read_after_another(wonde, monkeypatch):
    _ask_ahead(wonde, monkeypatch)
    sandbox = wonde.served.sandbox
    assert run_extract(wonde.connection_id, mode="full").status == RunStatus.succeeded
    wonde.mutate(_now(), updated=3, deleted=1, marks=4, staff_deleted=1)
    sandbox.clear_log()
    # Every answer held back a little, as a provider on the internet: reads asked one after another would
    # each wait for the one before, on one kept-alive connection.
    sandbox.add_fault(match=f"/schools/{sandbox.school_id()}/", delay=0.05, times=None)
    run = run_extract(wonde.connection_id)
    assert run.status == RunStatus.succeeded, run.error_message
    assert run.params["mode"] == "incremental"
    wonde.assert_store_matches()
    data = _data_requests(sandbox)
    # Asked ahead means asked once: no read went to the provider a second time when the run reached it.
    assert _asked_twice(data) == []
    assert run.stats["requests"] == len(sandbox.requests()) - _listings(sandbox)
    # Several were in flight at once, over connections of their own.
    assert len({r.peer for r in data}) >= 3


def _listings(sandbox) -> int:
    return len([r for r in sandbox.requests() if r.path.rstrip("/").endswith("/schools")])


def test_r5_a_read_refused_when_asked_ahead_is_decided_where_the_run_reaches_it(wonde, monkeypatch):
    _ask_ahead(wonde, monkeypatch)
    sandbox = wonde.served.sandbox
    assert run_extract(wonde.connection_id, mode="full").status == RunStatus.succeeded
    wonde.mutate(_now(), updated=2, marks=3)
    sandbox.withhold(sandbox.school_id(), "exclusions")
    sandbox.clear_log()
    run = run_extract(wonde.connection_id)
    assert run.status == RunStatus.succeeded, run.error_message
    # One refusal, confirmed with Wonde as a missing permission: the connection stays approved, the
    # category is marked withheld, and every other category was stored.
    assert wonde.connection().state == ConnectionState.approved
    outcomes = [(o["category"], o["code"], o["endpoint"]) for o in run.stats["outcomes"]]
    assert outcomes == [("student_attendance_exclusions", "permission_missing", "exclusions")]
    assert sandbox.count("/exclusions") == 1  # a 403 is not asked again
    assert run.stats["categories"]["student_basic"]["updated"] >= 2
    assert run.stats["categories"]["student_attendance_exclusions"]["updated"] >= 3


def test_r5_a_school_revoked_during_an_incremental_run_is_revoked_once_confirmed_and_nothing_is_retried(wonde, monkeypatch):
    _ask_ahead(wonde, monkeypatch)
    sandbox = wonde.served.sandbox
    assert run_extract(wonde.connection_id, mode="full").status == RunStatus.succeeded
    wonde.mutate(_now(), updated=3, deleted=1)
    before = wonde.store()
    sandbox.clear_log()
    sandbox.add_fault(match=f"/schools/{sandbox.school_id()}/", action="revoke", skip=2)
    run = run_extract(wonde.connection_id)
    assert (run.status, run.error_kind, run.error_code) == (RunStatus.failed, ErrorKind.school_action, "authorisation_lost")
    assert wonde.connection().state == ConnectionState.revoked
    assert sandbox.requests(f"/meta/schools/{sandbox.school_id()}")  # confirmed with Wonde first
    assert _asked_twice(_data_requests(sandbox)) == []
    # An incremental run commits at its end: nothing of this one was stored.
    assert wonde.store() == before


def test_a_run_that_stops_reading_sends_none_of_the_reads_still_waiting(sandbox, school, make_connector, connection):
    connector = make_connector(ask_ahead=1)
    connector.run_categories = tuple(CATEGORIES)
    since = _now() - timedelta(days=1)
    connector.run_since = dict.fromkeys(CATEGORIES, since)
    sandbox.add_fault(match=f"/schools/{sandbox.school_id()}/", delay=0.2, times=None)
    reads = sum(len(connector.steps(c, since)) for c in CATEGORIES)
    items = connector.extract(connection, [CATEGORIES[0]], since, None)
    assert next(item for item in items if isinstance(item, Checkpoint)).category == CATEGORIES[0]
    items.close()  # the engine stopped (a revocation, a fault): the run reads no further
    for thread in [t for t in threading.enumerate() if t.name.startswith("wonde-ahead")]:
        thread.join(timeout=10)
    # One at a time, each held back 0.2 s: the first read and at most the one then on its way were sent.
    assert reads >= 10
    assert len(_data_requests(sandbox)) <= 3
