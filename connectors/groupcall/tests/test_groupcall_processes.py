"""Groupcall changesets survive processes: two CLI runs in separate OS processes against the sandbox over HTTP."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.testing.conformance import EPOCH, Kit

# Separate OS processes are the production layout, which runs on PostgreSQL (the kit's process drills say why).
pytestmark = pytest.mark.one_backend("postgresql")


def _changeset_requests(sandbox, since: int = 0) -> list[str]:
    """The changedRows value of every data request after the first ``since`` requests."""
    return [r.param("changedrows") for r in sandbox.requests()[since:]
            if r.path.startswith("/api/v1/School/") and r.param("changedrows") is not None]


def test_a_cli_incremental_after_a_cli_full_sends_no_full_changeset_and_applies_deletions(kit: Kit):
    from portal.extensions import db
    from portal.models import ConnectorSyncState

    sandbox = kit.served.sandbox
    full = kit.cli("--full")
    assert (full["status"], full["mode"]) == ("succeeded", "full"), full
    first = _changeset_requests(sandbox)
    assert first and set(first) == {"*"}
    # The positions are in the database, one per connection and read, written by the other process.
    db.session.expire_all()
    stored = dict(db.session.execute(select(ConnectorSyncState.key, ConnectorSyncState.value).where(
        ConnectorSyncState.connection_id == kit.connection_id)).all())
    assert stored and all(len(v) == 32 for v in stored.values())
    full_requests = sandbox.count()

    done = kit.mutate(EPOCH, updated=2, deleted=2, marks=2, staff_deleted=1)
    incremental = kit.cli()
    assert (incremental["status"], incremental["mode"]) == ("succeeded", "incremental"), incremental
    second = _changeset_requests(sandbox, full_requests)
    assert second and "*" not in second, "the second process started every changeset again"
    assert set(second) <= set(stored.values())
    assert sandbox.count() - full_requests < full_requests
    # Deletions in the changesets were applied: the deleted pupils and every row about them are tombstoned.
    assert done["deleted"]
    kit.assert_store_matches()
    assert incremental["categories"]["student_basic"]["tombstoned"] == len(done["deleted"])

    # A full run starts every changeset again.
    before = sandbox.count()
    again = kit.cli("--full")
    assert again["status"] == "succeeded" and set(_changeset_requests(sandbox, before)) == {"*"}


def test_a_failed_run_keeps_the_old_positions_so_nothing_is_lost(kit: Kit):
    from portal.extensions import db
    from portal.models import ConnectorSyncState

    sandbox = kit.served.sandbox
    assert kit.cli("--full")["status"] == "succeeded"
    db.session.expire_all()
    before = dict(db.session.execute(select(ConnectorSyncState.key, ConnectorSyncState.value)).all())
    done = kit.mutate(EPOCH, deleted=1)
    sandbox.add_fault("http_503", "/StudentExclusions", times=1000)  # late in the run, after pupils were read
    failed = kit.cli()
    assert failed["status"] == "failed", failed
    db.session.expire_all()
    assert dict(db.session.execute(select(ConnectorSyncState.key, ConnectorSyncState.value)).all()) == before
    sandbox.faults.clear()
    again = kit.cli()
    assert again["status"] == "succeeded" and again["mode"] == "incremental", again
    assert done["deleted"]
    kit.assert_store_matches()
