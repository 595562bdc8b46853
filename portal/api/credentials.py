"""Product API credentials: issue (token shown once), authenticate by hash, rotate with a grace period, revoke."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select

from portal import audit
from portal.extensions import db
from portal.models import ApiCredential, Product
from portal.models.base import utcnow

TOKEN_PREFIX = "mpa_"


def hash_token(token: str) -> str:
    """Return the stored form of a token; the token has 256 random bits, so a plain sha256 cannot be reversed."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue(product: Product, *, label: str = "", valid_days: int | None = None, created_by_id: int | None = None,
          replaces: ApiCredential | None = None) -> tuple[ApiCredential, str]:
    """Create a credential for the product and return it with its token, which is never available again."""
    days = valid_days if valid_days is not None else current_app.config["API_CREDENTIAL_DAYS"]
    if days <= 0:
        raise ValueError("a credential must be valid for at least one day")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    credential = ApiCredential(
        product_id=product.id,
        prefix=token[: len(TOKEN_PREFIX) + 6],
        token_hash=hash_token(token),
        label=label.strip()[:200],
        created_by_id=created_by_id,
        expires_at=utcnow() + timedelta(days=days),
        replaces_id=replaces.id if replaces else None,
    )
    db.session.add(credential)
    db.session.flush()
    audit.record("api.credential_issued", target=credential, details={"product_id": product.id, "valid_days": days})
    return credential, token


def authenticate(token: str, now: datetime | None = None) -> ApiCredential | None:
    """Return the usable credential this token belongs to, or None (unknown, expired or revoked)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    credential = db.session.execute(
        select(ApiCredential).where(ApiCredential.token_hash == hash_token(token))
    ).scalar_one_or_none()
    if credential is None or not credential.usable(now or utcnow()):
        return None
    return credential


def rotate(credential: ApiCredential, *, grace: timedelta = timedelta(hours=24),
           created_by_id: int | None = None) -> tuple[ApiCredential, str]:
    """Issue a successor and let the old credential work only for the grace period, so consumers can switch over."""
    now = utcnow()
    credential.expires_at = min(credential.expires_at, now + grace)
    new, token = issue(credential.product, label=credential.label, created_by_id=created_by_id, replaces=credential)
    audit.record("api.credential_rotated", target=credential, details={"successor_id": new.id,
                                                                          "grace_seconds": int(grace.total_seconds())})
    return new, token


def revoke(credential: ApiCredential) -> None:
    """Refuse the credential from its next request on."""
    if credential.revoked_at is None:
        credential.revoked_at = utcnow()
        audit.record("api.credential_revoked", target=credential, details={"product_id": credential.product_id})
