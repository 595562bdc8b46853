"""Suppression of erased subjects: a keyed hash of (school, kind, provider id) that stops re-import (R50)."""
from __future__ import annotations

import hashlib
import hmac

from flask import current_app, g
from sqlalchemy import select

from portal import audit
from portal.extensions import db
from portal.models import User
from portal.models.base import utcnow
from portal.models.dsr import Suppression

# Record kinds that carry a subject's own provider id; rows about a pupil follow the pupil (the store drops them).
SUPPRESSED_KINDS = frozenset({"pupil", "staff"})


def key_hash(school_id: int, subject_kind: str, external_id: str) -> str:
    """Return the keyed hash stored instead of the provider id: no plain id, name or UPN is kept."""
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, f"{school_id}\x1f{subject_kind}\x1f{external_id}".encode(), hashlib.sha256).hexdigest()


def _active(school_id: int) -> set[tuple[str, str]]:
    # Loaded once per app context (one extract run) and per school: the check runs for every record.
    cache = g.setdefault("portal_suppressions", {})
    if school_id not in cache:
        cache[school_id] = set(db.session.execute(
            select(Suppression.subject_kind, Suppression.key_hash).where(
                Suppression.school_id == school_id, Suppression.lifted_at.is_(None))
        ).all())
    return cache[school_id]


def _forget() -> None:
    g.pop("portal_suppressions", None)


def is_suppressed(school_id: int, kind: str, external_id: str) -> bool:
    """Return whether a record of this kind and provider id belongs to an erased, suppressed subject."""
    if kind not in SUPPRESSED_KINDS:
        return False
    active = _active(school_id)
    return bool(active) and (kind, key_hash(school_id, kind, external_id)) in active


def suppress(school_id: int, subject_kind: str, external_id: str, *, request_id: int | None = None) -> Suppression:
    """Add (or return the existing) active suppression entry for a subject; the caller commits."""
    digest = key_hash(school_id, subject_kind, external_id)
    entry = db.session.execute(select(Suppression).where(
        Suppression.school_id == school_id, Suppression.subject_kind == subject_kind, Suppression.key_hash == digest)
    ).scalar()
    if entry is None:
        entry = Suppression(school_id=school_id, subject_kind=subject_kind, key_hash=digest, request_id=request_id)
        db.session.add(entry)
    entry.lifted_at = entry.lifted_by_id = None
    db.session.flush()
    audit.record("dsr.suppressed", organisation_id=school_id, target=entry, details={"request_id": request_id})
    _forget()
    return entry


def lift(entry: Suppression, user: User) -> None:
    """Lift a suppression at the school's instruction: the next extract brings the subject back."""
    entry.lifted_at, entry.lifted_by_id = utcnow(), user.id
    audit.record("dsr.suppression_lifted", organisation_id=entry.school_id, target=entry, details={"by": user.id})
    _forget()
