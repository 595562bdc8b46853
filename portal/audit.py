"""Append-only audit trail: record events with a hash chain, and verify the chain."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from flask import has_request_context
from flask_login import current_user
from sqlalchemy import select, text

from portal.extensions import db
from portal.models import AuditEntry
from portal.models.base import utcnow

GENESIS = "0" * 64
# A fixed key for PostgreSQL's advisory lock, so concurrent writers extend the chain one at a time.
_CHAIN_LOCK = 7_201_511


def _digest(entry: AuditEntry) -> str:
    payload = json.dumps(
        {
            "at": entry.at.isoformat(),
            "actor_user_id": entry.actor_user_id,
            "actor": entry.actor,
            "action": entry.action,
            "organisation_id": entry.organisation_id,
            "target_type": entry.target_type,
            "target_id": entry.target_id,
            "details": entry.details,
            "prev_hash": entry.prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _current_actor() -> tuple[int | None, str]:
    if has_request_context() and current_user and current_user.is_authenticated:
        return current_user.id, f"user:{current_user.id}"
    return None, "system"


def record(
    action: str,
    *,
    organisation_id: int | None = None,
    target: Any = None,
    target_type: str | None = None,
    target_id: Any = None,
    details: dict[str, Any] | None = None,
    actor: str | None = None,
    actor_user_id: int | None = None,
) -> AuditEntry:
    """Append one entry to the trail in the current transaction; the caller commits.

    ``details`` must hold ids, counts and codes only, never names, dates of birth or field values.
    """
    if target is not None:
        target_type = target_type or type(target).__tablename__
        target_id = target_id if target_id is not None else getattr(target, "id", None)
    if actor is None:
        actor_user_id, actor = _current_actor()
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHAIN_LOCK})
    last = db.session.execute(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).scalar()
    entry = AuditEntry(
        at=utcnow(),
        actor_user_id=actor_user_id,
        actor=actor,
        action=action,
        organisation_id=organisation_id,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        details=details or {},
        prev_hash=last or GENESIS,
    )
    entry.hash = _digest(entry)
    db.session.add(entry)
    db.session.flush()
    return entry


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    broken_id: int | None = None
    reason: str | None = None


def verify() -> VerifyResult:
    """Walk the chain in id order and report the first entry whose hash or link does not hold."""
    prev = GENESIS
    checked = 0
    for entry in db.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars().yield_per(1000):
        if entry.prev_hash != prev:
            return VerifyResult(False, checked, entry.id, "its link to the previous entry is broken")
        if _digest(entry) != entry.hash:
            return VerifyResult(False, checked, entry.id, "its content no longer matches its hash")
        prev = entry.hash
        checked += 1
    return VerifyResult(True, checked)
