"""The audit trail: a hash chain that `flask portal audit verify` checks, naming the first broken link."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from portal import audit
from portal.extensions import db
from portal.models import AuditEntry, Role


def verify_cli(app):
    return app.test_cli_runner().invoke(args=["portal", "audit", "verify"])


@pytest.fixture
def trail(app, make):
    """Five audit entries on a real school."""
    school = make.school()
    for n in range(5):
        audit.record("test.event", organisation_id=school.id, target=school, details={"count": n})
    db.session.commit()
    return list(db.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars())


def set_details(entry_id: int, details: dict) -> None:
    # Straight SQL, as someone with database access would do it, bypassing the application.
    value = "CAST(:d AS JSON)" if db.engine.dialect.name == "postgresql" else ":d"
    db.session.execute(text(f"UPDATE audit_entries SET details = {value} WHERE id = :id"), {"d": json.dumps(details), "id": entry_id})
    db.session.commit()
    db.session.expire_all()


def test_entries_form_a_chain(trail):
    assert trail[0].prev_hash == audit.GENESIS
    for before, after in zip(trail, trail[1:]):
        assert after.prev_hash == before.hash
    assert len({e.hash for e in trail}) == len(trail)


def test_intact_trail_verifies(app, trail):
    result = verify_cli(app)
    assert result.exit_code == 0, result.output
    assert f"Audit trail intact: {len(trail)} entries checked." in result.output


def test_changed_details_are_found_and_named(app, trail):
    tampered = trail[2]
    set_details(tampered.id, {"count": 99})
    result = verify_cli(app)
    assert result.exit_code == 1
    assert f"Audit trail broken at entry {tampered.id}" in result.output
    assert "no longer matches its hash" in result.output
    check = audit.verify()
    assert not check.ok and check.broken_id == tampered.id and check.checked == 2


def test_deleted_entry_breaks_the_next_link(app, trail):
    db.session.execute(text("DELETE FROM audit_entries WHERE id = :id"), {"id": trail[1].id})
    db.session.commit()
    result = verify_cli(app)
    assert result.exit_code == 1
    assert f"Audit trail broken at entry {trail[2].id}: its link to the previous entry is broken" in result.output


def test_rehashed_entry_still_breaks_the_chain(app, trail):
    # Someone who also recomputes the changed entry's hash breaks the following entry's link instead.
    entry = trail[1]
    set_details(entry.id, {"count": 42})
    entry = db.session.get(AuditEntry, entry.id)
    new_hash = audit._digest(entry)
    db.session.execute(text("UPDATE audit_entries SET hash = :h WHERE id = :id"), {"h": new_hash, "id": entry.id})
    db.session.commit()
    assert audit.verify().broken_id == trail[2].id


def test_the_chain_cannot_fork(app, trail):
    last = trail[-1]
    fork = AuditEntry(
        at=last.at, actor="system", action="test.fork", details={}, prev_hash=last.prev_hash, hash="f" * 64
    )
    db.session.add(fork)
    with pytest.raises(IntegrityError):
        db.session.flush()
    db.session.rollback()


def test_sign_in_user_changes_and_admin_actions_are_recorded(app, client, make, auth):
    user = make.user(Role.school_admin, make.school())
    db.session.commit()
    client.post("/login", data={"email": user.email, "password": "wrong password 1"})
    auth.login(user)
    auth.logout()
    runner = app.test_cli_runner()
    runner.invoke(args=["portal", "create-user", "--email", "new.staff@example.org", "--name", "New Staff",
                        "--support", "--password", "a long enough passphrase"])
    actions = list(db.session.execute(select(AuditEntry.action).order_by(AuditEntry.id)).scalars())
    assert actions[-4:] == ["auth.login_failed", "auth.login", "auth.logout", "user.created"]
    created = db.session.execute(select(AuditEntry).where(AuditEntry.action == "user.created")).scalar_one()
    assert created.actor == "cli" and created.details == {"support": True}
    # Ids only: no entry carries an email address.
    for details in db.session.execute(select(AuditEntry.details)).scalars():
        assert "@" not in json.dumps(details)
    assert verify_cli(app).exit_code == 0
