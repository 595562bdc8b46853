"""Data-subject requests: the register (R43), erasure suppression entries (R50) and single-use access exports (R48)."""
from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import JSON, Date, Enum, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.crypto import EncryptedText
from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow
from portal.models.tenancy import Organisation


class RequestType(str, enum.Enum):
    access = "access"
    portability = "portability"
    rectification = "rectification"
    erasure = "erasure"
    restriction = "restriction"
    objection = "objection"
    withdraw_consent = "withdraw_consent"


class RequestStatus(str, enum.Enum):
    identity_pending = "identity_pending"  # R46: nothing is disclosed, changed or erased yet
    routed_to_controller = "routed_to_controller"  # R47: reached us, the school is the controller
    in_progress = "in_progress"  # identity verified; actions allowed
    completed = "completed"
    refused = "refused"  # R53: with written reasons


OPEN_STATUSES = (RequestStatus.identity_pending, RequestStatus.routed_to_controller, RequestStatus.in_progress)


class SubjectType(str, enum.Enum):
    pupil = "pupil"
    staff = "staff"
    user = "user"  # one of our own users: the operator is controller of their usage data


class Controller(str, enum.Enum):
    school = "school"
    operator = "operator"


def _enum(cls: type[enum.Enum], length: int = 40) -> Enum:
    return Enum(cls, native_enum=False, length=length)


class SubjectRequest(db.Model):
    """One rights request: type, receipt, requester, subject, controller, deadline, verification and outcome (R43)."""

    __tablename__ = "subject_requests"
    __table_args__ = (Index("ix_subject_requests_queue", "school_id", "status", "deadline_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_type: Mapped[RequestType] = mapped_column(_enum(RequestType))
    received_on: Mapped[date] = mapped_column(Date)
    channel: Mapped[str] = mapped_column(String(20))
    requester_kind: Mapped[str] = mapped_column(String(30))
    # The requester's name and contact details: personal data, so encrypted, and never in logs or audit.
    requester_contact: Mapped[str | None] = mapped_column(EncryptedText())
    requester_relationship: Mapped[str] = mapped_column(String(60), default="")
    subject_type: Mapped[SubjectType] = mapped_column(_enum(SubjectType, 20))
    controller: Mapped[Controller] = mapped_column(_enum(Controller, 20))
    school_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    # The subject, by ids only: the provider id within the school (pupil/staff) or our user id.
    subject_external_id: Mapped[str | None] = mapped_column(String(200))
    subject_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    categories: Mapped[list] = mapped_column(JSON, default=list)
    # What the requester says is wrong (rectification) or other free text: encrypted.
    details: Mapped[str | None] = mapped_column(EncryptedText())
    status: Mapped[RequestStatus] = mapped_column(_enum(RequestStatus))
    start_on: Mapped[date] = mapped_column(Date)
    deadline_on: Mapped[date] = mapped_column(Date)
    first_deadline_on: Mapped[date] = mapped_column(Date)
    extended_on: Mapped[date | None] = mapped_column(Date)
    extension_reason: Mapped[str | None] = mapped_column(String(30))
    identity_method: Mapped[str | None] = mapped_column(String(40))
    identity_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    identity_checked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    outcome: Mapped[str | None] = mapped_column(String(40))
    refusal_reason: Mapped[str | None] = mapped_column(Text)
    reminded_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    school: Mapped[Organisation | None] = relationship()


class Suppression(db.Model):
    """An erased subject who must not come back at the next extract: a keyed hash of the provider id, per school (R50)."""

    __tablename__ = "subject_suppressions"
    __table_args__ = (UniqueConstraint("school_id", "subject_kind", "key_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    subject_kind: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[int | None] = mapped_column(ForeignKey("subject_requests.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lifted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class SubjectExport(db.Model):
    """A prepared access export (zip, encrypted at rest), downloadable once before it expires (R48)."""

    __tablename__ = "subject_exports"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("subject_requests.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    content: Mapped[bytes | None] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
