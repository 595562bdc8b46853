"""R35: deletion B days before the deadline, the deletion ledger, and no data served from a restored backup until it is replayed."""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from portal import audit
from portal.extensions import db
from portal.models import LedgerState
from portal.models.mis import MisPupil
from portal.retention import ledger
from portal.retention.sweep import run_sweep
from tests.test_retention import exists, orphan_count, world  # noqa: F401  (fixtures)


def backup() -> dict[str, list[dict]]:
    """A logical backup of every table (what pg_dump or a file copy would hold)."""
    db.session.commit()
    with db.engine.connect() as conn:
        return {t.name: [dict(r._mapping) for r in conn.execute(select(t))] for t in db.metadata.sorted_tables}


def restore(dump: dict[str, list[dict]]) -> None:
    """Put the backup back over the live database, as an operator's restore does (outside the application)."""
    db.session.remove()
    with db.engine.begin() as conn:
        for table in reversed(db.metadata.sorted_tables):
            conn.execute(delete(table))
        for table in db.metadata.sorted_tables:
            if dump[table.name]:
                conn.execute(table.insert(), dump[table.name])


@pytest.fixture
def ledger_app(make_app):
    """The default backup window (B = 30) and a ledger check on every request."""
    app = make_app(RETENTION_LEDGER_CHECK_SECONDS=0)
    with app.app_context():
        yield app


def ledger_file() -> Path:
    return ledger.ledger_path(db.session.get(LedgerState, 1).database_id)


def test_r35_deleted_30_days_early_and_a_restored_backup_is_refused_until_the_ledger_is_replayed(ledger_app, world):
    app = ledger_app
    client = app.test_client()
    conn = world.school()
    pupil = world.pupil(conn, year="3", extracted=date(2025, 1, 10), leaving=date(2025, 7, 23))  # deadline 2026-01-23
    db.session.commit()
    pupil_id, upn, external_id = pupil.id, pupil.upn, pupil.external_id
    run_sweep(as_of=date(2025, 12, 20))
    taken_2025_12_20 = backup()

    run_sweep(as_of=date(2025, 12, 23))
    assert exists(MisPupil, pupil_id)
    run_sweep(as_of=date(2025, 12, 24))  # 2026-01-23 minus B = 30 days
    assert not exists(MisPupil, pupil_id)
    assert ledger.status()[0] == "ok" and client.get("/login").status_code == 200
    # The ledger names no one: keyed hashes of ids per table and school, nothing else.
    text = ledger_file().read_text()
    assert upn not in text and external_id not in text and "Forename" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert {line["table"] for line in lines} == {"mis_pupils"}
    assert ledger.record_key("mis_pupils", pupil_id) in lines[0]["keys"]

    restore(taken_2025_12_20)
    assert exists(MisPupil, pupil_id)
    assert ledger.status()[0] == "behind"
    resp = client.get("/login")
    assert resp.status_code == 503 and "replay-ledger" in resp.get_data(as_text=True)
    api = client.get("/api/v1/features/attendance_reporting/schools")
    assert api.status_code == 503 and api.get_json()["error"]["code"] == "ledger_replay_required"

    result = app.test_cli_runner().invoke(args=["portal", "retention", "replay-ledger"])
    assert result.exit_code == 0, result.output
    assert "1 records deleted again (mis_pupils 1)" in result.output
    assert not exists(MisPupil, pupil_id) and orphan_count() == 0
    assert client.get("/login").status_code == 200
    assert audit.verify().ok
    again = app.test_cli_runner().invoke(args=["portal", "retention", "replay-ledger"])
    assert again.exit_code == 0 and "nothing to replay" in again.output


def test_r35_a_lost_ledger_file_stops_serving_and_replay_says_what_to_do(ledger_app, world):
    app = ledger_app
    conn = world.school()
    world.pupil(conn, year="3", extracted=date(2025, 1, 10), leaving=date(2025, 7, 23))
    db.session.commit()
    run_sweep(as_of=date(2025, 12, 24))
    ledger_file().unlink()
    assert app.test_client().get("/login").status_code == 503
    result = app.test_cli_runner().invoke(args=["portal", "retention", "replay-ledger"])
    assert result.exit_code == 1 and "restore the ledger file" in result.output


def test_r35_replay_deletes_restored_user_data_again_and_the_trail_still_verifies(ledger_app, make):
    from portal.members import remove_membership
    from portal.models import Membership, Role, User
    from tests.test_retention import at

    school = make.school()
    user = make.user(Role.school_viewer, school)
    audit.record("auth.login", target=user, actor=f"user:{user.id}", actor_user_id=user.id)
    membership = db.session.execute(select(Membership).where(Membership.user_id == user.id)).scalar_one()
    remove_membership(membership, None)
    membership.removed_at = at(date(2024, 2, 29))  # R38 deadline 2031-02-28, minus B = 30 days
    db.session.commit()
    user_id = user.id
    before = backup()
    run_sweep(as_of=date(2031, 1, 29))
    assert not exists(User, user_id)

    restore(before)
    assert exists(User, user_id) and ledger.status()[0] == "behind"
    assert ledger_app.test_client().get("/login").status_code == 503
    assert ledger.replay() == {"memberships": 1}
    assert not exists(User, user_id)
    assert db.session.execute(select(audit.AuditEntry).where(audit.AuditEntry.actor_user_id == user_id)).first() is None
    assert audit.verify().ok
    assert ledger_app.test_client().get("/login").status_code == 200


def test_r35_a_batch_rolled_back_after_its_ledger_line_is_deleted_again_and_the_portal_keeps_serving(
        make_app, world, monkeypatch):
    from portal.jobs import claims

    app = make_app(RETENTION_BACKUP_WINDOW_DAYS=0, RETENTION_LEDGER_CHECK_SECONDS=0)
    with app.app_context():
        conn = world.school()
        pupil = world.pupil(conn, year="3", extracted=date(2025, 1, 10), leaving=date(2025, 7, 23))
        db.session.commit()
        pupil_id = pupil.id

        def lost(run):
            raise RuntimeError("connection lost at commit time")

        monkeypatch.setattr(claims, "heartbeat", lost)
        run = run_sweep(as_of=date(2026, 1, 23))
        assert run.status.value == "failed"
        # The batch's ledger line was written before the failure: the due pupil was deleted again at once.
        assert ledger.status()[0] == "ok"
        assert not exists(MisPupil, pupil_id) and orphan_count() == 0
        assert app.test_client().get("/login").status_code == 200
