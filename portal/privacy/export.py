"""Access and portability exports: every stored row about a subject as JSON and CSV in one zip, with a cover sheet (R48).

The rows come from the store's schema walk; the zip is kept encrypted and released by a single-use,
expiring link, each step audited.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import secrets
import zipfile
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import delete, select

from portal import audit, crypto, store
from portal.extensions import db
from portal.models import Category, Connection, Feature, FeatureGrant, Product, User
from portal.models.base import utcnow
from portal.models.dsr import SubjectExport, SubjectRequest
from portal.models.retention import RetentionRule
from portal.privacy import users
from portal.privacy.register import RequestError, require_verified

SCHEMA_ID = "https://mis-portal.example/schemas/subject-access-export-1.json"
EXPORT_HOURS = 72

# The published JSON schema of export.json (also served at /privacy/export-schema.json).
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "Subject access export",
    "type": "object",
    "required": ["schema", "request_id", "generated_at", "subject", "cover", "tables"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "request_id": {"type": "integer"},
        "generated_at": {"type": "string", "format": "date-time"},
        "subject": {
            "type": "object", "required": ["kind", "school_id", "external_id"],
            "properties": {"kind": {"enum": ["pupil", "staff"]}, "school_id": {"type": "integer"},
                           "external_id": {"type": "string"}},
        },
        "cover": {
            "type": "object",
            "required": ["categories", "sources", "purposes", "recipients", "retention"],
            "properties": {
                "categories": {"type": "array", "items": {
                    "type": "object", "required": ["id", "name", "rows"],
                    "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "rows": {"type": "integer"}}}},
                "sources": {"type": "array", "items": {
                    "type": "object", "required": ["connection_id", "connector"],
                    "properties": {"connection_id": {"type": "integer"}, "connector": {"type": "string"}}}},
                "purposes": {"type": "array", "items": {
                    "type": "object", "required": ["feature", "description", "categories"],
                    "properties": {"feature": {"type": "string"}, "description": {"type": "string"},
                                   "categories": {"type": "array", "items": {"type": "string"}}}}},
                "recipients": {"type": "array", "items": {
                    "type": "object", "required": ["product", "features", "categories"],
                    "properties": {"product": {"type": "string"}, "features": {"type": "array", "items": {"type": "string"}},
                                   "categories": {"type": "array", "items": {"type": "string"}}}}},
                "retention": {"type": "array", "items": {
                    "type": "object", "required": ["rule", "title", "categories", "period"],
                    "properties": {"rule": {"type": "string"}, "title": {"type": "string"},
                                   "categories": {"type": "array", "items": {"type": "string"}},
                                   "period": {"type": "string"}}}},
            },
        },
        "tables": {
            "type": "object",
            "description": "Store table name -> the subject's rows; each row is column name -> value (dates ISO 8601).",
            "additionalProperties": {"type": "array", "items": {"type": "object"}},
        },
    },
}


def _recipients(school_id: int, subject_kind: str, external_id: str) -> list[dict[str, Any]]:
    """The products that received this subject's data (product receipts, per subject), with the features that use it."""
    received = store.dsr_recipients(school_id, subject_kind, external_id)
    types = store.api_record_types()
    out = []
    for product in db.session.execute(select(Product).where(Product.id.in_(received)).order_by(Product.id)).scalars():
        categories = sorted({types[t][1] for t in received[product.id] if t in types})
        features = sorted(f.id for f in product.features if {g.category_id for g in f.grants} & set(categories))
        out.append({"product": product.name, "features": features, "categories": categories})
    return out


def _cover(school_id: int, subject_kind: str, tables: dict[str, list[dict]], external_id: str | None = None) -> dict[str, Any]:
    """Categories held, their sources, purposes (features), recipients (products that read them) and retention."""
    counts: dict[str, int] = {}
    connection_ids: set[int] = set()
    for rows in tables.values():
        for row in rows:
            if row.get("category"):
                counts[row["category"]] = counts.get(row["category"], 0) + 1
            if row.get("connection_id"):
                connection_ids.add(row["connection_id"])
    held = sorted(counts)
    names = dict(db.session.execute(select(Category.id, Category.name).where(Category.id.in_(held))).all())
    sources = [{"connection_id": c.id, "connector": c.connector}
               for c in db.session.execute(select(Connection).where(Connection.id.in_(connection_ids))).scalars()]
    purposes: dict[str, dict] = {}
    for feature_id, name, category_id in db.session.execute(
        select(Feature.id, Feature.name, FeatureGrant.category_id).join(FeatureGrant).where(FeatureGrant.category_id.in_(held))
    ):
        purposes.setdefault(feature_id, {"feature": feature_id, "description": name, "categories": []})["categories"].append(category_id)
    # Recipients per subject: the products the API served this subject's records to (product receipts, R42).
    recipients = _recipients(school_id, subject_kind, external_id) if external_id is not None else []
    retention = []
    for rule in db.session.execute(select(RetentionRule).where(RetentionRule.enabled.is_(True)).order_by(RetentionRule.id)).scalars():
        # A rule without categories covers every category of what it covers (pupil/government or staff records).
        applies = rule.covers in ({"pupil", "government"} if subject_kind == "pupil" else {"staff"})
        covered = sorted(set(rule.categories or (held if applies else [])) & set(held))
        if covered:
            retention.append({"rule": rule.id, "title": rule.title, "categories": covered,
                              "period": f"{rule.period} {store.json_value(rule.period_unit)}"})
    return {
        "categories": [{"id": c, "name": names.get(c, c), "rows": counts[c]} for c in held],
        "sources": sources,
        "purposes": sorted(purposes.values(), key=lambda p: p["feature"]),
        "recipients": recipients,
        "retention": retention,
    }


def build(req: SubjectRequest) -> tuple[dict[str, Any], bytes]:
    """Return the export document and the zip (export.json, one CSV per table, cover.txt, schema.json)."""
    tables = store.dsr_subject_rows(req.school_id, req.subject_type.value, req.subject_external_id, request_id=req.id)
    # The portal's own records about the subject: flags, the requests themselves, holds, receipts (R48).
    portal_rows = store.dsr_portal_rows(req.school_id, req.subject_type.value, req.subject_external_id)
    plain_tables = {name: [{k: store.json_value(v) for k, v in row.items()} for row in rows]
                    for name, rows in {**tables, **portal_rows}.items() if rows}
    document = {
        "schema": SCHEMA_ID,
        "request_id": req.id,
        "generated_at": utcnow().isoformat(),
        "subject": {"kind": req.subject_type.value, "school_id": req.school_id, "external_id": req.subject_external_id},
        "cover": _cover(req.school_id, req.subject_type.value, tables, req.subject_external_id),
        "tables": plain_tables,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export.json", json.dumps(document, indent=2, default=str))
        archive.writestr("schema.json", json.dumps(SCHEMA, indent=2))
        archive.writestr("cover.txt", cover_text(document))
        for name, rows in plain_tables.items():
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            archive.writestr(f"csv/{name}.csv", out.getvalue())
    return document, buffer.getvalue()


def build_user(req: SubjectRequest) -> bytes:
    """Return the zip of a portal user's own data (the operator is controller): same layout as a pupil's export."""
    document, tables = users.build(req)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export.json", json.dumps(document, indent=2, default=str))
        archive.writestr("schema.json", json.dumps(users.SCHEMA, indent=2))
        archive.writestr("cover.txt", users.cover_text(document))
        for name, rows in tables.items():
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=sorted({k for r in rows for k in r}))
            writer.writeheader()
            writer.writerows(rows)
            archive.writestr(f"csv/{name}.csv", out.getvalue())
    return buffer.getvalue()


def cover_text(document: dict[str, Any]) -> str:
    """Return the human-readable cover sheet."""
    cover = document["cover"]
    lines = [f"Subject access export for request {document['request_id']}", "", "Categories of data held:"]
    lines += [f"  - {c['name']} ({c['rows']} records)" for c in cover["categories"]] or ["  - none"]
    lines += ["", "Where the data came from (the school's management information system, through):"]
    lines += [f"  - connection {s['connection_id']} ({s['connector']})" for s in cover["sources"]] or ["  - none"]
    lines += ["", "Purposes (product features allowed to use it):"]
    lines += [f"  - {p['description']}" for p in cover["purposes"]] or ["  - none"]
    lines += ["", "Recipients (products that read it):"]
    lines += [f"  - {r['product']}" for r in cover["recipients"]] or ["  - none"]
    lines += ["", "How long it is kept:"]
    lines += [f"  - {r['title']} ({r['period']})" for r in cover["retention"]] or ["  - see the school's retention page"]
    lines += ["", "export.json follows schema.json (JSON Schema 2020-12); csv/ holds the same rows, one file per table."]
    return "\n".join(lines) + "\n"


def prepare(req: SubjectRequest, user: User) -> str:
    """Build the export for a verified request and return the one-time download token (shown once)."""
    require_verified(req)
    if req.subject_type.value in store.DSR_SUBJECT_TABLES:
        _document, payload = build(req)
    else:
        payload = build_user(req)
    token = secrets.token_urlsafe(32)
    hours = current_app.config.get("DSR_EXPORT_HOURS", EXPORT_HOURS)
    export = SubjectExport(
        request_id=req.id, token_hash=hashlib.sha256(token.encode()).hexdigest(),
        content=crypto.encrypt(base64.b64encode(payload).decode()).encode(), size=len(payload),
        expires_at=utcnow() + timedelta(hours=hours),
    )
    db.session.add(export)
    db.session.flush()
    audit.record("dsr.export_prepared", organisation_id=req.school_id, target=req,
                 details={"export_id": export.id, "bytes": len(payload), "by": user.id})
    return token


def erase_expired(now: datetime | None = None) -> int:
    """Delete every export whose link has expired, content and row (R34); return how many. The sweep calls this daily."""
    now = now or utcnow()
    erased = db.session.execute(delete(SubjectExport).where(SubjectExport.expires_at <= now)).rowcount or 0
    if erased:
        audit.record("dsr.exports_expired", details={"exports": erased}, actor="system")
    return erased


def redeem(req: SubjectRequest, token: str, user: User) -> bytes:
    """Return the zip for a valid, unused, unexpired token and mark it used; the content is then discarded."""
    require_verified(req)
    digest = hashlib.sha256(token.encode()).hexdigest()
    export = db.session.execute(
        select(SubjectExport).where(SubjectExport.request_id == req.id, SubjectExport.token_hash == digest)
    ).scalar()
    if export is None:
        raise RequestError("export_not_found", "This download link is not valid.")
    if export.used_at is not None:
        raise RequestError("export_used", "This download link has already been used. Prepare a new export.")
    if export.expires_at <= utcnow():
        raise RequestError("export_expired", "This download link has expired. Prepare a new export.")
    payload = base64.b64decode(crypto.decrypt(export.content.decode()))
    export.used_at, export.content = utcnow(), None
    audit.record("dsr.export_downloaded", organisation_id=req.school_id, target=req,
                 details={"export_id": export.id, "by": user.id})
    return payload
