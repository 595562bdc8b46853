"""A changeset Groupcall no longer knows (an expired or lost changedRows hash) is answered in full without deletions:
the run says so and a full run finds what was deleted in between, instead of it staying live for a week."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.extract import run_extract
from portal.jobs.claims import REQUESTED
from portal.jobs.scheduler import fire_job
from portal.models import JobRun, RunStatus
from portal.models.base import utcnow
from portal.testing.conformance import EPOCH, Kit
from portal_groupcall.connector import _started_again


def _queued() -> list[JobRun]:
    return list(db.session.scalars(select(JobRun).where(JobRun.status == RunStatus.queued)))


@pytest.mark.parametrize("echoes_hash", [False, True], ids=["answers-as-star", "echoes-the-hash"])
def test_r20_a_forgotten_changeset_queues_a_full_run_that_removes_what_was_deleted_meanwhile(kit: Kit, echoes_hash):
    sandbox = kit.served.sandbox
    assert run_extract(kit.connection_id, mode="full").status == RunStatus.succeeded
    done = kit.mutate(EPOCH, deleted=2, updated=1)
    assert done["deleted"]
    # XoD no longer knows the hashes the portal saved: each read is answered in full, with no deletions.
    sandbox.forget_changesets()
    sandbox.restart_echoes_hash = echoes_hash
    run = run_extract(kit.connection_id)
    assert (run.status, run.params["mode"]) == (RunStatus.succeeded, "incremental"), run.error_message
    restarted = {o["category"] for o in run.stats["outcomes"] if o["code"] == "changes_restarted"}
    assert "student_basic" in restarted
    assert run.stats["changes_restarted"] >= len(restarted)
    assert not any(o["withheld"] for o in run.stats["outcomes"])  # everything was read
    assert "a full run follows" in run.error_message
    store = kit.store()
    assert all(not store["pupil"][(key,)]["deleted"] for key in done["deleted"]), "no deletion came with the answer"

    (queued,) = _queued()
    assert (queued.connection_id, queued.params[REQUESTED]["mode"], queued.params["reason"]) == (
        kit.connection_id, "full", "changes_restarted")
    # A scheduling process's housekeeping starts it, as it does support's.
    fire_job("jobs:recover", utcnow())
    db.session.refresh(queued)
    assert queued.status == RunStatus.succeeded, queued.error_message
    kit.assert_store_matches()
    store = kit.store()
    assert all(store["pupil"][(key,)]["deleted"] for key in done["deleted"])

    # The next night continues the new changesets: nothing restarted, nothing queued.
    kit.mutate(EPOCH, updated=1)
    again = run_extract(kit.connection_id)
    assert (again.status, again.params["mode"]) == (RunStatus.succeeded, "incremental"), again.error_message
    assert [o for o in again.stats["outcomes"] if o["code"] == "changes_restarted"] == []
    assert _queued() == []


def test_a_full_run_is_owed_after_a_restarted_changeset_even_if_the_queueing_never_happened(kit: Kit, monkeypatch):
    from portal.extract import engine

    assert run_extract(kit.connection_id, mode="full").status == RunStatus.succeeded
    kit.served.sandbox.forget_changesets()
    monkeypatch.setattr(engine, "_resync", lambda *args: None)  # the process ended before queueing it
    assert run_extract(kit.connection_id).status == RunStatus.succeeded
    assert _queued() == []
    nightly = run_extract(kit.connection_id, mode="auto")
    assert (nightly.params["mode"], nightly.params["mode_reason"]) == ("full", "changes_restarted")


@pytest.mark.parametrize(("block", "restarted"), [
    # XoD's answer to "*" (spec §6.1).
    ({"SnapshotDate": None, "SnapshotRP": None, "PreviousChangedRows": None, "RequestedChangedRows": "*",
      "NextChangedRows": "db69412c98782c1dd76addcad9b45be0"}, True),
    # The observed follow-up: "*" is the token before the one sent, not a restart.
    ({"SnapshotDate": "2018-07-31T14:20:23.6525221Z", "SnapshotRP": "relying-party.com", "PreviousChangedRows": "*",
      "RequestedChangedRows": "0414025e3f87151229b8964169a480e5", "NextChangedRows": "0414025e3f87151229b8964169a480e5"},
     False),
    # The hash echoed back, with the fields of a new start.
    ({"SnapshotDate": None, "PreviousChangedRows": None, "RequestedChangedRows": "0414025e3f87151229b8964169a480e5",
      "NextChangedRows": "1d2e"}, True),
    # A server that leaves the fields out says nothing about a restart (absent is not null).
    ({"NextChangedRows": "1d2e"}, False),
    ({"PreviousChangedRows": None, "NextChangedRows": "1d2e"}, False),
])
def test_what_counts_as_a_changeset_started_again(block, restarted):
    assert _started_again(block) is restarted
