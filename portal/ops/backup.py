"""`flask portal backup` and `restore`: the database (pg_dump custom format), the instance keys and the deletion
ledger in one file encrypted with a key the operator holds; a restore ends with the ledger replay (R35).

The file: a first line ``PORTAL-BACKUP-1``, then one Fernet token per line, each sealing a chunk of a tar
archive together with its index and a last-chunk flag, so a reordered, truncated or altered file is refused.
Fernet (cryptography) gives authenticated encryption; chunking keeps memory flat for a large dump.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cryptography.fernet import Fernet, InvalidToken
from flask import current_app
from sqlalchemy import MetaData, text
from sqlalchemy.engine import URL, make_url

from portal.extensions import db
from portal.models.base import utcnow
from portal.retention import ledger
from portal.retention.ledger import _last_seq as last, _state, ledger_path

MAGIC = b"PORTAL-BACKUP-1\n"
CHUNK = 4 * 1024 * 1024
_HEAD = struct.Struct(">QB")
KEY_ENV = "PORTAL_BACKUP_KEY"


class BackupError(RuntimeError):
    """A backup or restore cannot go on; the message says what the operator does."""


# ---------------------------------------------------------------- the operator's key


def load_key(key_file: str | None) -> Fernet:
    """Return the operator's Fernet key from --key-file, else the PORTAL_BACKUP_KEY variable."""
    raw = Path(key_file).read_text().strip() if key_file else os.environ.get(KEY_ENV, "").strip()
    if not raw:
        raise BackupError(f"no backup key: pass --key-file FILE or set {KEY_ENV} (make one with `flask portal backup-key`)")
    try:
        return Fernet(raw.encode())
    except (ValueError, TypeError):
        raise BackupError("the backup key is not a Fernet key (make one with `flask portal backup-key`)") from None


def encrypt_stream(fernet: Fernet, source: IO[bytes], target: IO[bytes]) -> None:
    """Seal ``source`` into ``target`` chunk by chunk."""
    target.write(MAGIC)
    index = 0
    chunk = source.read(CHUNK)
    while True:
        following = source.read(CHUNK)
        final = not following
        target.write(fernet.encrypt(_HEAD.pack(index, final) + chunk) + b"\n")
        if final:
            return
        index, chunk = index + 1, following


def decrypt_stream(fernet: Fernet, source: IO[bytes], target: IO[bytes]) -> None:
    """Open a sealed stream into ``target``; BackupError when the key is wrong or the file was altered or cut."""
    if source.readline() != MAGIC:
        raise BackupError("this is not a portal backup file")
    expected, finished = 0, False
    for line in source:
        if finished:
            raise BackupError("the backup file has data after its end: it was altered")
        try:
            plain = fernet.decrypt(line.strip())
        except InvalidToken:
            raise BackupError("the backup key does not open this file, or the file was altered") from None
        index, final = _HEAD.unpack_from(plain)
        if index != expected:
            raise BackupError("the backup file's parts are out of order: it was altered")
        target.write(plain[_HEAD.size:])
        expected, finished = expected + 1, bool(final)
    if not finished:
        raise BackupError("the backup file is cut short (an interrupted copy?)")


# ---------------------------------------------------------------- PostgreSQL tools


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """Return a libpq URL without the password, and the environment carrying it (not visible in `ps`)."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _major(version_text: str) -> int:
    match = re.search(r"(\d+)(?:\.\d+)?", version_text)
    if not match:
        raise BackupError(f"cannot read a version from {version_text!r}")
    return int(match.group(1))


def check_pg_tools(tool: str) -> str:
    """Return the tool's path, refusing a pg_dump/pg_restore older than the server (it cannot read newer dumps)."""
    path = shutil.which(tool)
    if path is None:
        raise BackupError(f"{tool} is not installed: apt install postgresql-client (the server's major version or newer)")
    tool_major = _major(subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout)
    server_major = int(db.session.execute(text("SHOW server_version_num")).scalar()) // 10000
    if tool_major < server_major:
        raise BackupError(f"{tool} is version {tool_major} but the server is {server_major}: install postgresql-client-{server_major}")
    return path


def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [x for x in result.stderr.strip().splitlines() if x.strip()]
        raise BackupError(f"{what} failed: {lines[-1][:300] if lines else 'exit ' + str(result.returncode)}")


# ---------------------------------------------------------------- backup


def _database_url() -> URL:
    return make_url(current_app.config["SQLALCHEMY_DATABASE_URI"])


def _ledger() -> tuple[str, int, Path]:
    state = _state()
    db.session.commit()
    return state.database_id, state.seq, ledger_path(state.database_id)


def _revision() -> str:
    return ",".join(sorted(str(r) for r in db.session.execute(text("SELECT version_num FROM alembic_version")).scalars()))


def backup(output: Path, fernet: Fernet) -> dict[str, Any]:
    """Write one encrypted backup file and return its manifest."""
    url = _database_url()
    database_id, seq, ledger_file = _ledger()
    manifest: dict[str, Any] = {
        "format": 1, "created_at": utcnow().isoformat(), "backend": url.get_backend_name(),
        "revision": _revision(), "database_id": database_id, "ledger_seq": seq,
    }
    with tempfile.TemporaryDirectory(prefix="portal-backup-") as work:
        work_dir = Path(work)
        dump = work_dir / "database"
        if manifest["backend"] == "postgresql":
            pg_dump = check_pg_tools("pg_dump")
            target, env = _libpq(url)
            _run([pg_dump, "--format=custom", "--no-owner", "--no-privileges", f"--file={dump}", f"--dbname={target}"], env, "pg_dump")
        elif manifest["backend"] == "sqlite":
            import sqlite3

            with sqlite3.connect(url.database) as source, sqlite3.connect(dump) as copy:
                source.backup(copy)
        else:
            raise BackupError(f"backups of {manifest['backend']} databases are not supported")
        keys = {"SECRET_KEY": current_app.config["SECRET_KEY"], "ENCRYPTION_KEYS": current_app.config["ENCRYPTION_KEYS"]}
        archive = work_dir / "archive.tar"
        with tarfile.open(archive, "w") as tar:
            _add_bytes(tar, "manifest.json", json.dumps(manifest, indent=1).encode())
            _add_bytes(tar, "keys.json", json.dumps(keys).encode())
            tar.add(dump, arcname="database")
            if ledger_file.exists():
                tar.add(ledger_file, arcname="deletion-ledger.jsonl")
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as sealed, archive.open("rb") as plain:
            encrypt_stream(fernet, plain, sealed)
            sealed.flush()
            os.fsync(sealed.fileno())
        partial.replace(output)  # never a half-written file under the final name
    return manifest


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(utcnow().timestamp())
    tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------- restore


@contextmanager
def opened(source: Path, fernet: Fernet) -> Iterator[Path]:
    """Decrypt and unpack a backup into a private temporary folder."""
    with tempfile.TemporaryDirectory(prefix="portal-restore-") as work:
        work_dir = Path(work)
        archive = work_dir / "archive.tar"
        with source.open("rb") as sealed, archive.open("wb") as plain:
            decrypt_stream(fernet, sealed, plain)
        with tarfile.open(archive) as tar:
            tar.extractall(work_dir / "content", filter="data")
        archive.unlink()
        yield work_dir / "content"


def _write_keys_file(keys: dict[str, str]) -> Path:
    path = Path(current_app.instance_path) / "backup-keys.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# The keys of a restored backup: copy these two lines into the settings file.\n")
        for key, value in keys.items():
            fh.write(f"{key} = {value!r}\n")
    return path


def _last_seq(path: Path) -> int:
    return last(path)


def restore(source: Path, fernet: Fernet, *, ledger_copy: Path | None = None) -> dict[str, Any]:
    """Put a backup's database back, upgrade it to this code's schema and replay the deletion ledger.

    Stops before touching the database when the backup's keys are not the running settings' (the restored
    secrets could not be read and the ledger could not be matched). Returns what was done.
    """
    from flask_migrate import upgrade

    with opened(source, fernet) as content:
        manifest = json.loads((content / "manifest.json").read_text())
        keys = json.loads((content / "keys.json").read_text())
        current = {"SECRET_KEY": current_app.config["SECRET_KEY"], "ENCRYPTION_KEYS": current_app.config["ENCRYPTION_KEYS"]}
        if keys["SECRET_KEY"] != current["SECRET_KEY"] or keys["ENCRYPTION_KEYS"].split(",")[0] not in current["ENCRYPTION_KEYS"].split(","):
            path = _write_keys_file(keys)
            raise BackupError(f"the backup was made with other keys: put the two lines of {path} into the settings file, "
                              "then run the restore again (nothing was changed)")
        url = _database_url()
        if manifest["backend"] != url.get_backend_name():
            raise BackupError(f"the backup is of a {manifest['backend']} database, DATABASE_URL is {url.get_backend_name()}")
        _replace_database(url, content / "database")
        # Alembic and the replay work on fresh connections to the restored database.
        db.session.remove()
        db.engine.dispose()
        upgrade()
        database_id, db_seq, live = _ledger()
        backed_up = content / "deletion-ledger.jsonl"
        chosen = ledger_copy if ledger_copy is not None else live
        note = None
        if ledger_copy is not None and ledger_copy.resolve() != live.resolve():
            live.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ledger_copy, live)
            note = f"ledger file {live} replaced by the copy {ledger_copy}"
        elif not chosen.exists() or (backed_up.exists() and _last_seq(backed_up) > _last_seq(chosen)):
            # The machine's own ledger is lost: the backup's copy is the best left, but deletions made after
            # the backup are not in it. Said loudly, because those pupils would come back.
            if backed_up.exists():
                live.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(backed_up, live)
            note = (f"the ledger file {live} was missing: the backup's copy was put there; deletions made after the "
                    "backup are only in the ledger's own off-machine copy: run `flask portal restore` again with --ledger COPY")
        deleted = ledger.replay()
    return {"manifest": manifest, "replayed": deleted, "ledger_note": note, "ledger_file": str(live)}


def _replace_database(url: URL, dump: Path) -> None:
    if url.get_backend_name() == "sqlite":
        db.session.remove()
        db.engine.dispose()
        shutil.copyfile(dump, url.database)
        return
    pg_restore = check_pg_tools("pg_restore")
    # Empty the database first, so tables newer than the backup do not survive beside it.
    db.session.remove()
    with db.engine.begin() as conn:
        existing = MetaData()
        existing.reflect(conn)
        existing.drop_all(conn)
    db.engine.dispose()
    target, env = _libpq(url)
    _run([pg_restore, "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error", f"--dbname={target}", str(dump)],
         env, "pg_restore")
