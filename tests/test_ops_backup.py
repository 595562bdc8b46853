"""Backups, drilled: extract over HTTP, back up, delete by retention, restore, replay the ledger (R35)."""
from __future__ import annotations

import io
from datetime import date, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select, update

from portal.extensions import db
from portal.extract import run_extract
from portal.models import MisPupil, RunStatus
from portal.models.mis import STORE_MODELS
from portal.ops.backup import BackupError, decrypt_stream, encrypt_stream
from portal.retention.sweep import run_sweep
from portal.sandbox import synthetic


def store_ids() -> dict[str, set[int]]:
    """Every store row's id, per table (tombstones included)."""
    return {model.__tablename__: set(db.session.scalars(select(model.id))) for model in STORE_MODELS.values()}


def about_pupils(pupil_ids: set[int]) -> int:
    """Rows in pupil-level tables that belong to these pupils."""
    total = 0
    for model in STORE_MODELS.values():
        if "pupil_id" in model.__table__.c:
            total += db.session.scalar(select(func.count()).select_from(model).where(model.pupil_id.in_(pupil_ids)))
    return total


@pytest.fixture
def drill(serve_school, tmp_path):
    """A school on an installed connector's sandbox extracted through the real connector, a ledger file apart, and an operator's backup key."""
    school = synthetic.generate_school(12, pupils=30, days=8, phase="secondary", sixth_form=False)
    key_file = tmp_path / "backup.key"
    key_file.write_text(Fernet.generate_key().decode())
    with serve_school(school, EXTRACT_BATCH_SIZE=200, RETENTION_LEDGER_PATH=str(tmp_path / "ledger" / "deletion-ledger.jsonl"),
                      RETENTION_LEDGER_CHECK_SECONDS=0) as served:
        run = run_extract(served.connection_id, mode="full")
        assert run.status == RunStatus.succeeded, run.error_message
        yield served.app, key_file, tmp_path


def test_r35_backup_delete_restore_replay_keeps_deleted_pupils_deleted_and_brings_every_other_row_back(drill):
    app, key_file, folder = drill
    cli = app.test_cli_runner()
    before = store_ids()
    assert len(before["mis_pupils"]) == 30 and sum(map(len, before.values())) > 200
    upns = dict(db.session.execute(select(MisPupil.id, MisPupil.upn)).all())

    backup_file = folder / "nightly.backup"
    result = cli.invoke(args=["portal", "backup", "--output", str(backup_file), "--key-file", str(key_file)])
    assert result.exit_code == 0, result.output
    sealed = backup_file.read_bytes()
    # Encrypted: neither the dump's header nor any pupil's UPN can be read in the file.
    assert b"PGDMP" not in sealed and b"SQLite format" not in sealed and not any(u.encode() in sealed for u in upns.values() if u)

    # After the backup, three pupils leave and retention deletes them (B = 30 days before the deadline).
    leavers = set(sorted(before["mis_pupils"])[:3])
    db.session.execute(update(MisPupil).where(MisPupil.id.in_(leavers)).values(leaving_date=date.today() - timedelta(days=3650)))
    db.session.commit()
    assert about_pupils(leavers) > 0
    sweep = run_sweep()
    assert sweep.status == RunStatus.succeeded, sweep.error_message
    after_sweep = store_ids()
    assert not leavers & after_sweep["mis_pupils"]
    gone = {t: before[t] - after_sweep[t] for t in before}
    assert sum(map(len, gone.values())) > len(leavers)  # their attendance, memberships... went with them

    # Disaster: the database is lost (here: emptied) and the nightly backup restored.
    result = cli.invoke(args=["portal", "restore", str(backup_file), "--key-file", str(key_file), "--yes"])
    assert result.exit_code == 0, result.output
    assert "ledger replayed" in result.output and "mis_pupils" in result.output
    restored = store_ids()
    # The deleted pupils and everything about them stay deleted; every other row is back.
    assert restored == after_sweep
    assert about_pupils(leavers) == 0
    assert db.session.scalar(select(func.count()).select_from(MisPupil)) == 27
    ready = app.test_client().get("/readyz").get_json()
    assert ready["checks"]["ledger"]["ok"] and ready["checks"]["migrations"]["ok"]
    assert app.test_client().get("/login").status_code == 200


def test_a_restore_with_the_wrong_key_or_other_instance_keys_changes_nothing(drill, make_app):
    app, key_file, folder = drill
    backup_file = folder / "b.backup"
    assert app.test_cli_runner().invoke(args=["portal", "backup", "-o", str(backup_file), "--key-file", str(key_file)]).exit_code == 0
    count = db.session.scalar(select(func.count()).select_from(MisPupil))
    wrong = folder / "wrong.key"
    wrong.write_text(Fernet.generate_key().decode())
    result = app.test_cli_runner().invoke(args=["portal", "restore", str(backup_file), "--key-file", str(wrong), "--yes"])
    assert result.exit_code == 1
    assert "Error: the backup key does not open this file, or the file was altered" in result.output
    other = make_app(SECRET_KEY="another-secret-key-of-this-other-instance-0123456789")
    with other.app_context():
        result = other.test_cli_runner().invoke(args=["portal", "restore", str(backup_file), "--key-file", str(key_file), "--yes"])
        assert result.exit_code == 1 and "the backup was made with other keys" in result.output
        assert "another-secret" not in result.output
    keys_file = Path(other.instance_path) / "backup-keys.cfg"
    assert keys_file.stat().st_mode & 0o777 == 0o600
    assert db.session.scalar(select(func.count()).select_from(MisPupil)) == count


@pytest.mark.parametrize("damage", ["truncate", "reorder", "flip"])
def test_an_altered_or_cut_backup_file_is_refused(damage):
    fernet = Fernet(Fernet.generate_key())
    data = bytes(range(256)) * 40000  # three chunks
    sealed = io.BytesIO()
    encrypt_stream(fernet, io.BytesIO(data), sealed)
    out = io.BytesIO()
    decrypt_stream(fernet, io.BytesIO(sealed.getvalue()), out)
    assert out.getvalue() == data
    head, *tokens = sealed.getvalue().split(b"\n")[:-1]
    if damage == "truncate":
        tokens = tokens[:-1]
    elif damage == "reorder":
        tokens[0], tokens[1] = tokens[1], tokens[0]
    else:
        tokens[1] = tokens[1][:-5] + (b"A" if tokens[1][-5:-4] != b"A" else b"B") + tokens[1][-4:]
    with pytest.raises(BackupError):
        decrypt_stream(fernet, io.BytesIO(b"\n".join([head, *tokens]) + b"\n"), io.BytesIO())


def test_r35_a_restore_on_a_machine_that_lost_its_ledger_uses_the_ledgers_own_copy_or_says_what_is_missing(drill):
    app, key_file, folder = drill
    cli = app.test_cli_runner()
    backup_file = folder / "nightly.backup"
    assert cli.invoke(args=["portal", "backup", "-o", str(backup_file), "--key-file", str(key_file)]).exit_code == 0
    leavers = set(sorted(db.session.scalars(select(MisPupil.id)))[:2])
    db.session.execute(update(MisPupil).where(MisPupil.id.in_(leavers)).values(leaving_date=date.today() - timedelta(days=3650)))
    db.session.commit()
    assert run_sweep().status == RunStatus.succeeded
    live = Path(app.config["RETENTION_LEDGER_PATH"])
    off_machine = folder / "ledger-copy.jsonl"
    off_machine.write_bytes(live.read_bytes())  # the operator's nightly copy of the ledger
    live.unlink()  # the machine is lost with its ledger

    # Without the copy: the backup's own ledger is used, and the operator is told later deletions are missing.
    result = cli.invoke(args=["portal", "restore", str(backup_file), "--key-file", str(key_file), "--yes"])
    assert result.exit_code == 0, result.output
    assert "deletions made after the backup are only in the ledger's own off-machine copy" in result.output
    assert leavers <= set(db.session.scalars(select(MisPupil.id)))

    # With it: the deletions since the backup are replayed and the pupils are gone again.
    result = cli.invoke(args=["portal", "restore", str(backup_file), "--key-file", str(key_file), "--yes", "--ledger", str(off_machine)])
    assert result.exit_code == 0, result.output
    assert not leavers & set(db.session.scalars(select(MisPupil.id)))
    assert about_pupils(leavers) == 0
