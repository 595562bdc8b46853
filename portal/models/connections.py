"""A school's connection to one connector, with its lifecycle state and encrypted settings."""
from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, Enum, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.crypto import EncryptedText
from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow
from portal.models.tenancy import Organisation


class ConnectionState(str, enum.Enum):
    not_connected = "not_connected"
    requested = "requested"
    pending = "pending"
    approved = "approved"
    revoked = "revoked"
    declined = "declined"
    failing = "failing"

    @property
    def label(self) -> str:
        return {"pending": "Pending approval"}.get(self.value, self.value.replace("_", " ").capitalize())


# Only these states allow an extract to start (R1, R4).
EXTRACTABLE_STATES = frozenset({ConnectionState.approved, ConnectionState.failing})


class Connection(db.Model):
    """School × connector: the authorisation a school gave for its MIS data to flow through one provider."""

    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("school_id", "connector"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    connector: Mapped[str] = mapped_column(String(50), index=True)
    state: Mapped[ConnectionState] = mapped_column(
        Enum(ConnectionState, native_enum=False, length=20), default=ConnectionState.not_connected, index=True
    )
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    state_changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # When the provider last approved access after it was not approved (requested, pending, revoked,
    # declined): a real (re-)authorisation, which makes the next extract full. Recovering from
    # failing moves state_changed_at, never this.
    authorised_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The provider's own id for the school (e.g. Wonde's school id), once matched.
    provider_school_id: Mapped[str | None] = mapped_column(String(100))
    # JSON of per-connection settings; encrypted because it may hold credentials.
    settings_encrypted: Mapped[str | None] = mapped_column(EncryptedText())
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    school: Mapped[Organisation] = relationship()

    @property
    def can_extract(self) -> bool:
        return self.state in EXTRACTABLE_STATES and not self.paused


class PermissionWithdrawal(db.Model):
    """A permission the provider stopped granting for one connection (a category, or fields of one): a tracked decision.

    Open while ``restored_at`` is empty. ``deletion_order_id`` is the order that deletes exactly that
    data under the normal rules; it is cancelled when the permission comes back.
    """

    __tablename__ = "permission_withdrawals"
    __table_args__ = (Index("ix_permission_withdrawals_open", "connection_id", "permission"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    # A category ("student_assessment") or a category's fields ("student_basic:date_of_birth,upn").
    permission: Mapped[str] = mapped_column(String(200))
    withdrawn_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    withdrawn_run_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id", ondelete="SET NULL"))
    restored_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deletion_order_id: Mapped[int | None] = mapped_column(ForeignKey("deletion_orders.id", ondelete="SET NULL"))
