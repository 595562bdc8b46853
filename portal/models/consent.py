"""Consent records of the connection lifecycle: terms acceptances, access requests and processed webhook events."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.crypto import EncryptedText
from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow
from portal.models.users import User


class TermsAcceptance(db.Model):
    """A school admin accepted one version of the terms for a school (R2); never updated or deleted."""

    __tablename__ = "terms_acceptances"
    __table_args__ = (UniqueConstraint("school_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    version: Mapped[str] = mapped_column(String(20))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User | None] = relationship()


class AccessRequest(db.Model):
    """One request for a provider's access, with the school contact the provider should talk to."""

    __tablename__ = "access_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"), index=True)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # The contact is staff personal data: encrypted, and shown only to the school's own admins.
    contact_name: Mapped[str | None] = mapped_column(EncryptedText())
    contact_email: Mapped[str | None] = mapped_column(EncryptedText())
    terms_version: Mapped[str] = mapped_column(String(20))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    requested_by: Mapped[User | None] = relationship()


class WebhookEvent(db.Model):
    """A provider event already processed; its id makes redelivery a no-op."""

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("connector", "event_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    connector: Mapped[str] = mapped_column(String(50))
    event_id: Mapped[str] = mapped_column(String(128))
    payload_type: Mapped[str] = mapped_column(String(60))
    connection_id: Mapped[int | None] = mapped_column(ForeignKey("connections.id", ondelete="SET NULL"))
    outcome: Mapped[str] = mapped_column(String(40))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
