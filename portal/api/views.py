"""The /api/v1 blueprint: bearer credentials, per-credential rate limits, schools and record feeds, OpenAPI."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

from flask import Blueprint, current_app, g, jsonify, request
from flask_limiter.util import get_remote_address
from sqlalchemy import select

from portal import audit, deletions, store
from portal.api import credentials, errors, pagination, purpose
from portal.api.authorisations import authorised_schools
from portal.api.errors import ApiError
from portal.api.inventory import returns_pupil_data
from portal.extensions import csrf, db, limiter
from portal.models import FeatureGrant, Organisation
from portal.models.base import utcnow

bp = Blueprint("api", __name__, url_prefix="/api/v1")
errors.register(bp)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Writing last_used_at on every call would add a write to each read; once a minute is enough to see use.
_LAST_USED_EVERY = timedelta(minutes=1)
_PUBLIC_ENDPOINTS = {"api.openapi"}


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def credential_key() -> str:
    """Rate-limit key: the credential (by a hash of its token, never the token), else the client address."""
    token = _bearer()
    if token:
        return "api:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    return "api-anon:" + (get_remote_address() or "unknown")


limiter.limit(lambda: current_app.config["API_RATE_LIMIT"], key_func=credential_key)(bp)


@bp.before_request
def _authenticate():
    if request.endpoint in _PUBLIC_ENDPOINTS:
        return None
    token = _bearer()
    if token is None:
        raise ApiError(401, "unauthenticated", "Send an API credential as 'Authorization: Bearer <token>'.")
    credential = credentials.authenticate(token)
    if credential is None:
        raise ApiError(401, "invalid_credential", "This credential is unknown, expired or revoked.")
    now = utcnow()
    if credential.last_used_at is None or now - credential.last_used_at > _LAST_USED_EVERY:
        credential.last_used_at = now
        db.session.commit()
    g.api_credential = credential
    return None


@bp.after_request
def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be a whole number from {low} to {high}.", parameter=name)
    return value


def _datetime_arg(name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise ApiError(400, "invalid_parameter",
                       f"{name} must be an ISO 8601 date-time with a time zone, e.g. 2025-09-01T00:00:00Z.",
                       parameter=name)
    return value.astimezone(timezone.utc)


def _page_size() -> int:
    cfg = current_app.config
    return _int_arg("limit", cfg["API_PAGE_SIZE"], 1, cfg["API_MAX_PAGE_SIZE"])


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 document of this API."""
    from portal.api.openapi import document

    return jsonify(document())


@bp.get("/features/<feature_id>/schools")
def schools(feature_id: str):
    """The schools that authorise the credential's product now, with the categories this feature may read."""
    credential = g.api_credential
    purpose.feature_of_product(credential, feature_id)
    limit = _page_size()
    feed = f"schools:{credential.product_id}:{feature_id}"
    cursor = request.args.get("cursor")
    query = authorised_schools(credential.product_id)
    if cursor:
        query = query.where(Organisation.id > pagination.decode(cursor, feed).id)
    rows = db.session.execute(query.limit(limit + 1)).all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    today = datetime.now(timezone.utc).date()
    categories = sorted(db.session.execute(
        select(FeatureGrant.category_id).where(FeatureGrant.feature_id == feature_id, FeatureGrant.effective_from <= today)
    ).scalars())
    # Read the rows before the commit expires them (else one query per school).
    listed = [
        {"id": school.id, "name": school.name, "urn": school.urn, "dfe_number": school.dfe_number,
         "authorised_at": authorised_at.isoformat()}
        for school, authorised_at in rows
    ]
    audit.record("api.schools_listed", target_type="products", target_id=credential.product_id,
                 actor=f"api_credential:{credential.id}", details={"feature": feature_id, "count": len(rows)})
    db.session.commit()
    next_cursor = pagination.encode(pagination.Position(_EPOCH, listed[-1]["id"], feed)) if rows else cursor
    return jsonify({
        "feature": feature_id,
        "categories": categories,
        "schools": listed,
        "next_cursor": next_cursor,
        "has_more": has_more,
    })


@bp.get("/features/<feature_id>/schools/<int:school_id>/categories/<category_id>/<record_type>")
@returns_pupil_data("authorised_product")
def records(feature_id: str, school_id: int, category_id: str, record_type: str):
    """One page of the school's records of one type, after the purpose check; tombstones included."""
    credential = g.api_credential
    grant = purpose.check_read(credential, feature_id, school_id, category_id)
    types = {name: cat for name, (_, cat) in store.api_record_types().items() if cat == category_id}
    if record_type not in types:
        raise ApiError(404, "unknown_record_type",
                       f"The category {category_id} has the record types: {', '.join(sorted(types))}.",
                       record_types=sorted(types))
    limit = _page_size()
    updated_since = _datetime_arg("updated_since")
    feed = f"records:{credential.product_id}:{feature_id}:{school_id}:{record_type}"
    cursor = request.args.get("cursor")
    after = None
    if cursor:
        position = pagination.decode(cursor, feed)
        after = (position.changed_at, position.id)
    page = store.read_feed(grant, record_type, after=after, updated_since=updated_since, limit=limit)
    # R42: which ids this product now holds, so a later deletion reaches it (and only it); same transaction as the read.
    deletions.record_received(grant, record_type, page.rows)
    db.session.commit()
    if page.last_id is not None:
        next_cursor = pagination.encode(pagination.Position(page.last_changed_at, page.last_id, feed))
    else:
        next_cursor = cursor
    return jsonify({
        "feature": feature_id,
        "school_id": school_id,
        "category": category_id,
        "record_type": record_type,
        "records": page.records,
        "next_cursor": next_cursor,
        "has_more": page.has_more,
    })


# ---------------------------------------------------------------- deletion notices (R42)

# Most notice ids one acknowledgement may carry; the feed's largest page.
_ACK_MAX = 1000
_ID_MAX = 2**31 - 1


@bp.get("/deletions")
@returns_pupil_data("authorised_product")  # ids of pupils the product received while authorised, nothing more
def deletion_notices():
    """One page of the product's deletion notices, oldest first: ids it received that the portal deleted."""
    credential = g.api_credential
    limit = _int_arg("limit", min(current_app.config["API_PAGE_SIZE"], _ACK_MAX), 1, _ACK_MAX)
    status = request.args.get("status", "pending")
    if status not in ("pending", "all"):
        raise ApiError(400, "invalid_parameter", "status must be pending or all.", parameter="status")
    feed = f"deletions:{credential.product_id}:{status}"
    cursor = request.args.get("cursor")
    after = pagination.decode(cursor, feed).id if cursor else None
    notices, has_more = deletions.feed_page(credential.product_id, after=after, limit=limit,
                                            pending_only=status == "pending")
    items = [deletions.as_json(n) for n in notices]
    audit.record("api.deletions_listed", target_type="products", target_id=credential.product_id,
                 actor=f"api_credential:{credential.id}", details={"status": status, "count": len(items)})
    db.session.commit()
    next_cursor = pagination.encode(pagination.Position(_EPOCH, items[-1]["id"], feed)) if items else cursor
    return jsonify({"notices": items, "next_cursor": next_cursor, "has_more": has_more})


@bp.post("/deletions/ack")
@csrf.exempt  # a bearer credential, never a session cookie, authenticates API calls
def acknowledge_deletions():
    """Confirm the product deleted its copies of these notices' ids (idempotent; all or nothing)."""
    credential = g.api_credential
    body = request.get_json(silent=True)
    ids = body.get("ids") if isinstance(body, dict) else None
    if not (isinstance(body, dict) and set(body) == {"ids"} and isinstance(ids, list) and 1 <= len(ids) <= _ACK_MAX
            and all(type(i) is int and 1 <= i <= _ID_MAX for i in ids)):
        raise ApiError(422, "invalid_body",
                       f'Send a JSON object {{"ids": [...]}} with 1 to {_ACK_MAX:,} notice ids (whole numbers).')
    actor = f"api_credential:{credential.id}"
    try:
        newly, already = deletions.acknowledge(credential.product_id, ids)
    except deletions.UnknownNotices as exc:
        audit.record("api.deletions_ack_refused", target_type="products", target_id=credential.product_id,
                     actor=actor, details={"code": "unknown_notice", "unknown": len(exc.ids)})
        db.session.commit()
        raise ApiError(422, "unknown_notice",
                       "Some ids are not deletion notices of this product; nothing was acknowledged.",
                       ids=exc.ids[:_ACK_MAX]) from None
    audit.record("api.deletions_acknowledged", target_type="products", target_id=credential.product_id,
                 actor=actor, details={"notices": sorted(set(ids)), "acknowledged": newly, "already": already})
    db.session.commit()
    return jsonify({"acknowledged": newly, "already_acknowledged": already})
