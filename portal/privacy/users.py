"""Requests about our own users' data, where the operator is controller: access export, rectification, erasure, restriction.

The user's data is found by walking the schema's links to the users table, so a new table cannot be forgotten:
tables that belong to the user (deleted with them) are exported in full; tables that only name the user as
the one who did something are listed by row id. Secrets (password, second-factor and token hashes) never leave.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Table, delete, or_, select

from portal import audit, store
from portal.account import email_change
from portal.account.errors import AccountError
from portal.extensions import db
from portal.models import AuditEntry, User
from portal.models.base import utcnow
from portal.models.dsr import Controller, RequestType, SubjectRequest, SubjectType
from portal.privacy.register import RequestError, require_verified

SCHEMA_ID = "https://mis-portal.example/schemas/user-access-export-1.json"
# Never exported, whatever table they are in: they would let someone sign in or use a link.
SECRET_COLUMNS = frozenset({"password_hash", "totp_secret", "totp_last_step", "session_token", "token_hash"})
# Tables that name the user as the one who did something, but whose rows are the user's own acts: exported in full.
OWN_ACTS = ("terms_acceptances",)

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "Portal user access export",
    "type": "object",
    "required": ["schema", "request_id", "generated_at", "subject", "account", "tables", "audit_entries", "references"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "request_id": {"type": "integer"},
        "generated_at": {"type": "string", "format": "date-time"},
        "subject": {"type": "object", "required": ["kind", "user_id"],
                    "properties": {"kind": {"const": "user"}, "user_id": {"type": "integer"}}},
        "account": {"type": "object", "description": "The users row: identity, contact, preferences, sign-in times."},
        "tables": {"type": "object", "description": "Table -> the user's rows (memberships, terms acceptances, ...).",
                   "additionalProperties": {"type": "array", "items": {"type": "object"}}},
        "audit_entries": {"type": "array", "description": "Audit entries where the user acted or was the target "
                                                          "(sign-ins, usage, changes).", "items": {"type": "object"}},
        "references": {"type": "object", "description": "Table -> column -> ids of rows naming the user as the one who "
                                                        "did something (the rows hold other people's data).",
                       "additionalProperties": {"type": "object"}},
    },
}


def _user_of(req: SubjectRequest) -> User:
    if req.controller is not Controller.operator or req.subject_type is not SubjectType.user or req.subject_user_id is None:
        raise RequestError("not_user_data", "This action applies to requests about a portal user's own data.")
    user = db.session.get(User, req.subject_user_id)
    if user is None:
        raise RequestError("user_gone", "The user this request is about no longer exists.")
    return user


def user_links() -> list[tuple[Table, Any]]:
    """Return (table, foreign key) for every foreign key that points at users.id, found from the schema."""
    users = User.__table__
    return [(table, fk) for table in db.metadata.sorted_tables if table is not users
            for fk in table.foreign_keys if fk.column.table is users]


def _owned(fk) -> bool:
    return (fk.ondelete or "").upper() == "CASCADE"


def _row(mapping) -> dict[str, Any]:
    return {k: store.json_value(v) for k, v in mapping.items() if k not in SECRET_COLUMNS}


def user_data(user: User) -> dict[str, Any]:
    """Return everything held about the user, as the export document's body (no audit entry)."""
    users = User.__table__
    account = _row(db.session.execute(select(users).where(users.c.id == user.id)).mappings().one())
    tables: dict[str, list[dict]] = {}
    references: dict[str, dict[str, list[int]]] = {}
    for table, fk in user_links():
        if _owned(fk) or table.name in OWN_ACTS:
            rows = [_row(r) for r in db.session.execute(select(table).where(fk.parent == user.id)
                                                       .order_by(*table.primary_key.columns)).mappings()]
            if rows:
                tables.setdefault(table.name, []).extend(rows)
        else:
            ids = list(db.session.execute(select(*table.primary_key.columns).where(fk.parent == user.id)).scalars())
            if ids:
                references.setdefault(table.name, {})[fk.parent.name] = ids
    entries = db.session.execute(
        select(AuditEntry).where(or_(AuditEntry.actor_user_id == user.id,
                                     (AuditEntry.target_type == "users") & (AuditEntry.target_id == str(user.id))))
        .order_by(AuditEntry.id)
    ).scalars()
    audit_entries = [{"id": e.id, "at": e.at.isoformat(), "action": e.action, "organisation_id": e.organisation_id,
                      "target_type": e.target_type, "target_id": e.target_id, "details": e.details} for e in entries]
    return {"account": account, "tables": tables, "audit_entries": audit_entries, "references": references}


def build(req: SubjectRequest) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """Return the export document and the tables to write as CSV (account and audit entries included)."""
    user = _user_of(req)
    body = user_data(user)
    document = {"schema": SCHEMA_ID, "request_id": req.id, "generated_at": utcnow().isoformat(),
                "subject": {"kind": "user", "user_id": user.id}, **body}
    csv_tables = {"users": [body["account"]], **body["tables"],
                  "audit_entries": [{**e, "details": str(e["details"])} for e in body["audit_entries"]]}
    audit.record("dsr.user_read", target=req, details={"user_id": user.id,
                                                       "rows": {t: len(r) for t, r in csv_tables.items() if r}})
    return document, {t: r for t, r in csv_tables.items() if r}


def cover_text(document: dict[str, Any]) -> str:
    lines = [f"Access export for request {document['request_id']}: your MIS connection portal account", "",
             "users.csv: your account (name, email address, role flags, marketing choice, sign-in times).",
             "csv/memberships.csv: the organisations you belong to and your role in each.",
             "csv/terms_acceptances.csv: the terms you accepted for a school.",
             "csv/audit_entries.csv: what you did in the portal (sign-ins, changes) and what was done to your account.",
             "export.json: all of it, plus the ids of records naming you as the one who acted (references).", "",
             "Purpose: running your account and the service your organisation subscribes to; marketing only if you "
             "opted in. Kept for 7 years after the subscription ends or your organisation removes you.",
             "", "export.json follows schema.json (JSON Schema 2020-12)."]
    return "\n".join(lines) + "\n"


def rectify(req: SubjectRequest, actor: User, *, name: str | None = None, email: str | None = None) -> list[str]:
    """Correct the user's name at once and start an email change confirmed from the new address (R49); return what changed."""
    require_verified(req)
    if req.request_type is not RequestType.rectification:
        raise RequestError("wrong_type", "This is not a rectification request.")
    user = _user_of(req)
    name, email = (name or "").strip(), (email or "").strip()
    if not name and not email:
        raise RequestError("details_required", "Enter the corrected name or email address.", "name")
    changed = []
    if name and name != user.name:
        user.name = name
        changed.append("name")
    if email and email.lower() != user.email.lower():
        try:
            email_change.request_change(user, email, by=actor)
        except AccountError as exc:
            raise RequestError(exc.code, str(exc), "email") from None
        changed.append("email_pending")
    audit.record("dsr.user_rectified", target=req, details={"user_id": user.id, "fields": changed, "by": actor.id})
    return changed


def erase(req: SubjectRequest, actor: User) -> dict[str, Any]:
    """Erase the user at once: their own rows and the account go, audit facts stay under a placeholder (R37, R38, R50).

    As the retention sweep does at the end of the 7 years: every audit reference to the user becomes a
    non-reversible placeholder (portal.audit.pseudonymise_user), then the user row is deleted, taking the
    rows that belong to it (memberships, tokens); records naming the user as the one who acted keep a NULL.
    """
    require_verified(req)
    if req.request_type not in (RequestType.erasure, RequestType.objection):
        raise RequestError("wrong_type", "Only an erasure request, or an upheld objection, erases data.")
    user = _user_of(req)
    if user.id == actor.id:
        raise RequestError("own_account", "Another member of support staff must erase your own account.")
    user_id = user.id
    deleted: dict[str, int] = {}
    # Deepest first and explicitly, so nothing is left where the database does not cascade.
    for table, fk in user_links():
        if _owned(fk):
            n = db.session.execute(delete(table).where(fk.parent == user_id)).rowcount
            if n:
                deleted[table.name] = deleted.get(table.name, 0) + n
    rewritten = audit.pseudonymise_user(user_id)
    db.session.execute(delete(User.__table__).where(User.__table__.c.id == user_id))
    deleted["users"] = 1
    db.session.expire_all()
    req = db.session.get(SubjectRequest, req.id)
    req.outcome = "erased"
    # The entry names the request only: the user's id is no longer anywhere in the trail.
    audit.record("dsr.user_erased", target=req, details={"deleted": deleted, "audit_references": rewritten})
    return {"deleted": deleted, "audit_references": rewritten}


def restrict(req: SubjectRequest, actor: User) -> None:
    """Keep the user's data but use it for nothing beyond running the account (no marketing) until lifted (R51)."""
    require_verified(req)
    if req.request_type not in (RequestType.restriction, RequestType.objection):
        raise RequestError("wrong_type", "This is not a restriction request or an objection.")
    user = _user_of(req)
    if user.processing_restricted_at is None:
        user.processing_restricted_at = utcnow()
        audit.record("dsr.user_restricted", target=req, details={"user_id": user.id, "by": actor.id})


def lift_restriction(req: SubjectRequest, actor: User) -> None:
    user = _user_of(req)
    if user.processing_restricted_at is not None:
        user.processing_restricted_at = None
        audit.record("dsr.user_restriction_lifted", target=req, details={"user_id": user.id, "by": actor.id})
