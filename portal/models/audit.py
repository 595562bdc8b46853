"""The append-only, hash-chained audit trail table."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow


class AuditEntry(db.Model):
    """One audited event. Holds ids and counts, never field values or personal data (R65, R68)."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    # Kept as a plain id, not a foreign key: entries outlive the users they name (R37 erases the reference).
    actor_user_id: Mapped[int | None] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(120))  # "user:12", "system", "product-feature:pupil_tracking"
    action: Mapped[str] = mapped_column(String(80), index=True)
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id", ondelete="SET NULL"), index=True)
    target_type: Mapped[str | None] = mapped_column(String(60))
    target_id: Mapped[str | None] = mapped_column(String(120))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # R37: set, with actor_user_id cleared, when the acting user's reference is replaced by its placeholder.
    actor_ref: Mapped[str | None] = mapped_column(String(40))
    # Unique, so two writers can never both extend the same entry: the chain cannot fork.
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditUserKey(db.Model):
    """The secret behind one user's audit pseudonyms in one organisation (0: none); deleting it makes them non-reversible (R37).

    The hash chain covers a keyed pseudonym of every user reference rather than the raw id, so the
    references can be replaced by their pseudonym without breaking the chain (crypto-shredding).
    """

    __tablename__ = "audit_user_keys"
    __table_args__ = (UniqueConstraint("user_id", "organisation_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Plain ids, no foreign keys: a key lives exactly as long as the references it covers.
    user_id: Mapped[int] = mapped_column(index=True)
    organisation_id: Mapped[int] = mapped_column(default=0)
    key: Mapped[str] = mapped_column(String(64))
