"""Oversight records: support access grants (R58), school-approved links (R57), sub-processors (R66), breaches (R69), freshness alerts (R22)."""
from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import Boolean, Date, Enum, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow
from portal.models.tenancy import Organisation


class SupportGrant(db.Model):
    """A school admin lets one support user see the school's pupil and staff records for a few hours (R58).

    Live while ``granted_at <= now < expires_at`` and not ended; scope checks read it (portal.scope).
    """

    __tablename__ = "support_grants"

    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    support_user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    ticket_ref: Mapped[str] = mapped_column(String(60))
    reason: Mapped[str] = mapped_column(String(500))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    school: Mapped[Organisation] = relationship(foreign_keys=[school_id])
    support_user = relationship("User", foreign_keys=[support_user_id])


class SchoolLink(db.Model):
    """A school's approval for a supporting organisation (LA, diocese, or a trust it is not an academy of) to see its
    pupil data through one matrix feature (R57). Ended by the school; never deleted, so the history stays."""

    __tablename__ = "school_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    feature_id: Mapped[str] = mapped_column(ForeignKey("features.id"))
    # The recorded service agreement the school approved the link under.
    agreement_ref: Mapped[str] = mapped_column(String(100))
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    approved_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    school: Mapped[Organisation] = relationship(foreign_keys=[school_id])
    organisation: Mapped[Organisation] = relationship(foreign_keys=[organisation_id])


class TransferMechanism(str, enum.Enum):
    """How personal data may lawfully go to a sub-processor (R66); Privacy Shield is deliberately absent (struck down 2020)."""

    in_uk = "in_uk"
    uk_adequacy = "uk_adequacy"
    uk_idta = "uk_idta"
    uk_addendum = "uk_addendum"
    uk_us_data_bridge = "uk_us_data_bridge"

    @property
    def label(self) -> str:
        return {
            "in_uk": "None needed: processed in the UK",
            "uk_adequacy": "UK adequacy regulations",
            "uk_idta": "UK International Data Transfer Agreement (IDTA)",
            "uk_addendum": "UK Addendum to the EU standard contractual clauses",
            "uk_us_data_bridge": "UK–US data bridge",
        }[self.value]


class SubProcessor(db.Model):
    """One entry of the sub-processor register (R66): who processes what personal data, where, under which safeguard."""

    __tablename__ = "sub_processors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    purpose: Mapped[str] = mapped_column(String(300))
    # ISO 3166-1 alpha-2 country where the data is processed; GB is the UK.
    location: Mapped[str] = mapped_column(String(2))
    data_types: Mapped[str] = mapped_column(String(300))
    mechanism: Mapped[TransferMechanism] = mapped_column(Enum(TransferMechanism, native_enum=False, length=30))
    # R64: pupil data may go only to a sub-processor in the UK.
    pupil_data: Mapped[bool] = mapped_column(Boolean, default=False)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class BreachStatus(str, enum.Enum):
    suspected = "suspected"
    confirmed = "confirmed"
    closed = "closed"


class NoticeRecipient(str, enum.Enum):
    school = "school"
    ico = "ico"
    individuals = "individuals"

    @property
    def label(self) -> str:
        return {"school": "Affected school", "ico": "Information Commissioner's Office", "individuals": "Individuals"}[self.value]


class Breach(db.Model):
    """A suspected or confirmed personal data breach (R69). Holds ids and the operator's summary, no personal data."""

    __tablename__ = "breaches"

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[BreachStatus] = mapped_column(Enum(BreachStatus, native_enum=False, length=20), default=BreachStatus.suspected)
    # When the operator became aware: the ICO deadline is 72 real hours later.
    aware_at: Mapped[datetime] = mapped_column(UTCDateTime())
    summary: Mapped[str] = mapped_column(String(1000))
    # A leaked product credential (or any credential of a product): the affected reads come from the audit trail.
    product_id: Mapped[int | None] = mapped_column(ForeignKey("products.id", ondelete="SET NULL"))
    credential_id: Mapped[int | None] = mapped_column(ForeignKey("api_credentials.id", ondelete="SET NULL"))
    # The window of exposure searched in the audit trail; open-ended windows end at the time of awareness.
    exposed_from: Mapped[datetime | None] = mapped_column(UTCDateTime())
    exposed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    opened_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    notices: Mapped[list[BreachNotice]] = relationship(back_populates="breach", order_by="BreachNotice.sent_at",
                                                       cascade="all, delete-orphan")


class BreachNotice(db.Model):
    """A notice sent about a breach: to an affected school, to the ICO or to individuals (R69)."""

    __tablename__ = "breach_notices"

    id: Mapped[int] = mapped_column(primary_key=True)
    breach_id: Mapped[int] = mapped_column(ForeignKey("breaches.id", ondelete="CASCADE"), index=True)
    recipient: Mapped[NoticeRecipient] = mapped_column(Enum(NoticeRecipient, native_enum=False, length=20))
    school_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id", ondelete="SET NULL"))
    # The ICO case number, the email sent, or how individuals were told.
    reference: Mapped[str] = mapped_column(String(200), default="")
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    breach: Mapped[Breach] = relationship(back_populates="notices")
    school: Mapped[Organisation | None] = relationship()


class FreshnessAlert(db.Model):
    """R22: one alert per school, category and last successful day, so a gap alerts once however often the check runs."""

    __tablename__ = "freshness_alerts"
    __table_args__ = (UniqueConstraint("school_id", "category", "last_success_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    category: Mapped[str] = mapped_column(String(40))
    # The last London day with a successful run (or, before the first one, the day the connection was approved).
    last_success_on: Mapped[date] = mapped_column(Date)
    missed_days: Mapped[int] = mapped_column()
    alerted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
