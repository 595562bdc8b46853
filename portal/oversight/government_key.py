"""R28: DfE-sourced (``government``) data has its own encryption key, kept in the instance folder and never in the
database or its backups, and destroyed once the DfE data agreement has ended, so every copy of that data, backups
included, becomes unreadable within the rule's 20 working days (crypto-shredding).

Every store row also carries the marker ``data_type = "government"`` (R16); values sealed here carry the prefix
``gov1:`` so a reader can tell them from values under the instance keys.
"""
from __future__ import annotations

import logging
import os
from datetime import date
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from flask import current_app
from sqlalchemy import select

from portal import audit
from portal.extensions import db
from portal.models import DfeAgreement
from portal.models.base import utcnow
from portal.retention.calendar import london_date

log = logging.getLogger(__name__)

PREFIX = "gov1:"


class GovernmentKeyError(RuntimeError):
    """The government key is gone (destroyed after the DfE agreement ended) or the value is not sealed with it."""


def _path() -> Path:
    return Path(current_app.instance_path) / "keys" / "government.key"


def _tombstone() -> Path:
    return _path().with_suffix(".destroyed")


def status() -> str:
    """"absent" (never needed yet), "present" or "destroyed"."""
    if _tombstone().exists():
        return "destroyed"
    return "present" if _path().exists() else "absent"


def _fernet(create: bool) -> Fernet:
    if _tombstone().exists():
        raise GovernmentKeyError("the government data key was destroyed when the DfE data agreement ended: "
                                 "DfE data can no longer be stored or read")
    path = _path()
    if not path.exists():
        if not create:
            raise GovernmentKeyError("no government data key exists: nothing was sealed with it")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    return Fernet(path.read_bytes().strip())


def seal(value: str) -> str:
    """Encrypt a DfE-sourced value under the government key (created on first use)."""
    return PREFIX + _fernet(create=True).encrypt(value.encode()).decode()


def unseal(token: str) -> str:
    """Decrypt a value sealed with seal(); refuses once the key is destroyed."""
    if not token.startswith(PREFIX):
        raise GovernmentKeyError("the value is not sealed with the government data key")
    try:
        return _fernet(create=False).decrypt(token[len(PREFIX):].encode()).decode()
    except InvalidToken:
        raise GovernmentKeyError("the value does not decrypt with the government data key") from None


def destroy(*, actor: str = "system", reason: str = "dfe_agreement_ended") -> bool:
    """Overwrite and delete the key, leaving a tombstone so it is never silently recreated; audited. Idempotent."""
    if _tombstone().exists():
        return False
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        size = path.stat().st_size
        with open(path, "r+b") as handle:
            handle.write(os.urandom(size))
            handle.flush()
            os.fsync(handle.fileno())
        path.unlink()
    _tombstone().write_text(f"destroyed {date.today().isoformat()}: {reason}\n")
    audit.record("government.key_destroyed", actor=actor, details={"reason": reason})
    log.info("government data key destroyed (%s)", reason)
    return True


def agreement_ended(today: date) -> bool:
    """Whether the latest recorded DfE data agreement has an end date before today (R28 acts after that date)."""
    latest = db.session.execute(select(DfeAgreement).order_by(DfeAgreement.recorded_at.desc(), DfeAgreement.id.desc())
                                .limit(1)).scalar()
    return latest is not None and latest.ends_on is not None and latest.ends_on < today


def destroy_if_agreement_ended(today: date | None = None) -> bool:
    """The daily job: destroy the key at the first run after the agreement's end date (well within 20 working days)."""
    if not agreement_ended(today or london_date(utcnow())):
        return False
    done = destroy()
    db.session.commit()
    return done
