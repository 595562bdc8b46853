"""Portal users, their memberships of organisations, password-reset and email-change tokens, recovery codes."""
from __future__ import annotations

import enum
from datetime import date, datetime

from flask_login import UserMixin
from sqlalchemy import BigInteger, Boolean, Date, Enum, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.crypto import EncryptedText
from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow
from portal.models.tenancy import Organisation


class Role(str, enum.Enum):
    school_admin = "school_admin"
    school_viewer = "school_viewer"
    trust_admin = "trust_admin"
    la_officer = "la_officer"
    # R57: a diocese's staff see a school's pupil data only through a link the school approved.
    diocese_officer = "diocese_officer"

    @property
    def label(self) -> str:
        return {"la_officer": "LA officer"}.get(self.value, self.value.replace("_", " ").capitalize())


class User(UserMixin, db.Model):
    """An adult who signs in: school staff, trust or LA staff, or operator support staff (R60)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    is_support: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    totp_secret: Mapped[str | None] = mapped_column(EncryptedText())
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The 30-second time-step of the last accepted code: a code is never accepted twice (replay).
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    # Rotated at every sign-in and sign-out; a session holding an old value is no longer valid.
    session_token: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # R52: marketing email is consent-based: off until the user opts in; an opt-out is never overridden by a send.
    marketing_opt_in: Mapped[bool] = mapped_column(Boolean, default=False)
    marketing_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # R51 for our own users: the data is kept but not used beyond storage (no marketing) until lifted.
    processing_restricted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # R58: support staff may receive a grant to see pupil data only once their confidentiality agreement is recorded.
    confidentiality_agreed_on: Mapped[date | None] = mapped_column(Date)

    memberships: Mapped[list[Membership]] = relationship(back_populates="user", cascade="all, delete-orphan")

    def get_id(self) -> str:
        # flask-login keeps this in the session: the rotating token, so logout is server-side.
        return self.session_token or ""

    @property
    def is_active(self) -> bool:  # flask-login
        return self.active

    @property
    def needs_totp(self) -> bool:
        """Support staff must use a second factor (R63); others may opt in."""
        return self.is_support or self.totp_enabled

    def __repr__(self) -> str:
        return f"<User {self.id}>"


class Membership(db.Model):
    """A user's role in one organisation."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "organisation_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Set when the organisation removes the user or the MIS stops showing them employed (R38, R59).
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set when the organisation's admin deletes the user: access ends at once and R38's 7-year clock starts.
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # R59: the MIS staff record (provider id at this school) a school admin confirmed is this user, once;
    # who confirmed it is in the audit trail.
    staff_external_id: Mapped[str | None] = mapped_column(String(200))
    staff_linked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Why the membership was suspended when not by hand: "staff_left" (R59).
    suspended_reason: Mapped[str | None] = mapped_column(String(40))

    user: Mapped[User] = relationship(back_populates="memberships")
    organisation: Mapped[Organisation] = relationship()


class PasswordResetToken(db.Model):
    """A single-use password-reset token; only its hash is stored."""

    __tablename__ = "password_reset_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RecoveryCode(db.Model):
    """A one-time code that stands in for an authenticator code at sign-in; only its argon2 hash is stored."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class EmailChangeToken(db.Model):
    """A pending change of a user's email address (R49): applies only once the link sent to the new address is followed.

    Single-use and expiring; only the token's hash is stored.
    """

    __tablename__ = "email_change_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    new_email: Mapped[str] = mapped_column(String(254))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
