"""The append-only, hash-chained audit trail table."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String
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
    # Unique, so two writers can never both extend the same entry: the chain cannot fork.
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
