"""Append-only audit trail: record events with a hash chain, and verify the chain."""
from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from flask import has_request_context
from flask_login import current_user
from sqlalchemy import String, cast, delete, event, or_, select, text, update
from sqlalchemy.orm import Session

from portal.extensions import db
from portal.models import AuditEntry, AuditUserKey
from portal.models.base import utcnow

GENESIS = "0" * 64
# A fixed key for PostgreSQL's advisory lock, so concurrent writers extend the chain one at a time.
_CHAIN_LOCK = 7_201_511


# Keys of ``details`` that hold a user id (the "user reference" R37 replaces), besides the actor and a users target.
USER_DETAIL_KEYS = ("by", "checked_by", "user_id")
# The prefix of a placeholder: a keyed pseudonym of a user id whose key may since have been destroyed.
PLACEHOLDER = "u~"
_USER_ACTOR = re.compile(r"^user:(\d+)$")


class MissingKey(LookupError):
    """A raw user id in an entry whose pseudonym key is gone: the entry cannot be checked."""


class _Keys:
    """Pseudonym keys per (user, organisation), loaded on demand and created on demand when recording."""

    def __init__(self, *, create: bool, preload: bool = False) -> None:
        self.create = create
        self.cache: dict[tuple[int, int], str] = {}
        if preload:
            for k in db.session.execute(select(AuditUserKey)).scalars():
                self.cache[(k.user_id, k.organisation_id)] = k.key
        self.complete = preload

    def get(self, user_id: int, organisation_id: int | None) -> str:
        scope = (int(user_id), organisation_id or 0)
        if scope in self.cache:
            return self.cache[scope]
        if not self.complete:
            row = db.session.execute(
                select(AuditUserKey.key).where(AuditUserKey.user_id == scope[0], AuditUserKey.organisation_id == scope[1])
            ).scalar()
            if row is not None:
                self.cache[scope] = row
                return row
        if not self.create:
            raise MissingKey(scope)
        key = secrets.token_hex(32)
        db.session.add(AuditUserKey(user_id=scope[0], organisation_id=scope[1], key=key))
        self.cache[scope] = key
        return key


def _pseudonym(key: str, user_id: int) -> str:
    return PLACEHOLDER + hmac.new(bytes.fromhex(key), str(int(user_id)).encode(), hashlib.sha256).hexdigest()[:32]


def _is_user_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, str) and value.isdigit()


def _hashed_fields(entry: AuditEntry, keys: _Keys) -> dict[str, Any]:
    """Return what the hash covers: the entry with every user reference as its keyed pseudonym.

    A live entry holds raw user ids, an entry rewritten under R37 holds the pseudonyms themselves:
    both give the same fields, so the rewrite keeps the chain intact.
    """
    org = entry.organisation_id

    def ref(user_id: Any) -> str:
        return _pseudonym(keys.get(int(user_id), org), int(user_id))

    actor_user = ref(entry.actor_user_id) if entry.actor_user_id is not None else entry.actor_ref
    match = _USER_ACTOR.match(entry.actor or "")
    actor = f"user:{ref(match.group(1))}" if match else entry.actor
    target_id = entry.target_id
    if entry.target_type == "users" and target_id is not None and target_id.isdigit():
        target_id = ref(target_id)
    details = dict(entry.details or {})
    for name in USER_DETAIL_KEYS:
        if _is_user_id(details.get(name)):
            details[name] = ref(details[name])
    return {
        "at": entry.at.isoformat(),
        "actor_user": actor_user,
        "actor": actor,
        "action": entry.action,
        "organisation_id": org,
        "target_type": entry.target_type,
        "target_id": target_id,
        "details": details,
        "prev_hash": entry.prev_hash,
    }


def _digest(entry: AuditEntry, keys: _Keys | None = None) -> str:
    fields = _hashed_fields(entry, keys or _Keys(create=False))
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
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
    entry.hash = _digest(entry, _Keys(create=True))
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
    keys = _Keys(create=False, preload=True)
    for entry in db.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars().yield_per(1000):
        if entry.prev_hash != prev:
            return VerifyResult(False, checked, entry.id, "its link to the previous entry is broken")
        try:
            digest = _digest(entry, keys)
        except MissingKey:
            return VerifyResult(False, checked, entry.id, "it names a user whose pseudonym key is gone")
        if digest != entry.hash:
            return VerifyResult(False, checked, entry.id, "its content no longer matches its hash")
        prev = entry.hash
        checked += 1
    return VerifyResult(True, checked)


# ---------------------------------------------------------------- R37: replacing a user's references


_rewriting: contextvars.ContextVar[bool] = contextvars.ContextVar("audit_rewriting", default=False)


def _mentions(user_id: int, organisation_id: int | None):
    """A WHERE clause over-approximating the entries naming the user (the exact check is _names)."""
    uid = str(int(user_id))
    clause = or_(
        AuditEntry.actor_user_id == int(user_id),
        AuditEntry.actor == f"user:{uid}",
        (AuditEntry.target_type == "users") & (AuditEntry.target_id == uid),
        cast(AuditEntry.details, String).like(f"%{uid}%"),
    )
    if organisation_id is not None:
        clause = clause & (AuditEntry.organisation_id == organisation_id)
    return clause


def _rewritten(entry: AuditEntry, user_id: int, pseudonym: str) -> dict[str, Any]:
    """Return the column values of the entry with this user's references replaced by the pseudonym (empty: none)."""
    values: dict[str, Any] = {}
    if entry.actor_user_id == user_id:
        values.update(actor_user_id=None, actor_ref=pseudonym)
    if entry.actor == f"user:{user_id}":
        values["actor"] = f"user:{pseudonym}"
    if entry.target_type == "users" and entry.target_id == str(user_id):
        values["target_id"] = pseudonym
    details = dict(entry.details or {})
    changed = [k for k in USER_DETAIL_KEYS if _is_user_id(details.get(k)) and int(details[k]) == user_id]
    if changed:
        values["details"] = {**details, **{k: pseudonym for k in changed}}
    return values


def pseudonymise_user(user_id: int, organisation_id: int | None = None) -> int:
    """Replace a user's id in audit entries by a non-reversible placeholder and destroy its key; return entries rewritten.

    The facts stay (when, what, which organisation, which record); "who" becomes the keyed
    pseudonym the hash chain already covered, so `flask portal audit verify` still passes, and
    deleting the key makes it impossible to tell whose it was (R37). With ``organisation_id`` only
    the entries of that organisation (one membership's usage); without it every entry naming the
    user, including those of no organisation. The only rewrite of the trail the portal allows (R9).
    Runs in the caller's transaction; the caller commits.
    """
    user_id = int(user_id)
    scopes = db.session.execute(select(AuditUserKey).where(AuditUserKey.user_id == user_id)).scalars().all()
    if organisation_id is not None:
        scopes = [k for k in scopes if k.organisation_id == organisation_id]
    rewritten = 0
    token = _rewriting.set(True)
    try:
        for scope in scopes:
            pseudonym = _pseudonym(scope.key, user_id)
            org = scope.organisation_id or None
            query = select(AuditEntry).where(_mentions(user_id, org if org is not None else None))
            if org is None:
                query = query.where(AuditEntry.organisation_id.is_(None))
            batch: list[dict[str, Any]] = []
            for entry in db.session.execute(query.order_by(AuditEntry.id)).scalars().yield_per(1000):
                values = _rewritten(entry, user_id, pseudonym)
                if values:
                    batch.append((entry.id, values))
            for entry_id, values in batch:
                db.session.execute(update(AuditEntry.__table__).where(AuditEntry.__table__.c.id == entry_id).values(**values))
            rewritten += len(batch)
            db.session.execute(delete(AuditUserKey.__table__).where(AuditUserKey.__table__.c.id == scope.id))
        db.session.expire_all()
    finally:
        _rewriting.reset(token)
    return rewritten


# ---------------------------------------------------------------- R9: nothing else rewrites the trail


class AuditRewriteRefused(PermissionError):
    """An UPDATE or DELETE of the audit trail through the application (only R37's replacement may)."""


def _refuse_flush(mapper, connection, target) -> None:
    if not _rewriting.get():
        raise AuditRewriteRefused("audit entries are append-only (R9)")


def _refuse_statement(state) -> None:
    if _rewriting.get() or not (state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    if table is not None and getattr(table, "name", None) == AuditEntry.__tablename__:
        raise AuditRewriteRefused("audit entries are append-only (R9)")


def init_app(app) -> None:
    """Refuse updates and deletes of audit entries through the ORM and SQL expressions (R9); once per process.

    Someone with raw database access can still change a row: `flask portal audit verify` finds it.
    """
    if not event.contains(AuditEntry, "before_update", _refuse_flush):
        event.listen(AuditEntry, "before_update", _refuse_flush)
        event.listen(AuditEntry, "before_delete", _refuse_flush)
        event.listen(Session, "do_orm_execute", _refuse_statement)
