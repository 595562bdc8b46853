"""Retention as data: rules, the DfE agreement end, legal holds, deletion orders, deletion proofs and sweep work items."""
from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, Enum, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow
from portal.models.users import User


class PeriodUnit(str, enum.Enum):
    years = "years"
    months = "months"
    days = "days"
    working_days = "working_days"


class RetentionAction(str, enum.Enum):
    delete = "delete"
    anonymise = "anonymise"


class RetentionRule(db.Model):
    """One retention rule: what it covers, which date starts its clock, how long, and what happens then."""

    __tablename__ = "retention_rules"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    # What the rule covers: pupil, government, staff, row, connection, user, operational.
    covers: Mapped[str] = mapped_column(String(40))
    # Categories the rule applies to; empty means every category it covers.
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The event that starts the clock (see portal.retention.rules.CLOCKS).
    clock: Mapped[str] = mapped_column(String(40))
    period: Mapped[int] = mapped_column(Integer)
    period_unit: Mapped[PeriodUnit] = mapped_column(Enum(PeriodUnit, native_enum=False, length=20))
    # The seeds' deadline in the same unit: a deployment may shorten the period, never lengthen past this.
    max_period: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[RetentionAction] = mapped_column(
        Enum(RetentionAction, native_enum=False, length=20), default=RetentionAction.delete
    )
    # When the sweep deletes (see portal.retention.rules.TIMINGS): B days before the deadline (R35),
    # at the first sweep after the trigger (R28), or on the deadline itself.
    timing: Mapped[str] = mapped_column(String(20), default="backup")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<RetentionRule {self.id}>"

    def __str__(self) -> str:
        return f"{self.id}: {self.title}"


class DfeAgreement(db.Model):
    """The operator's DfE data agreement; recording its end date starts R28's clock."""

    __tablename__ = "dfe_agreements"

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(100), default="")
    ends_on: Mapped[date | None] = mapped_column(Date)
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SchoolRetentionSetting(db.Model):
    """A school's last national curriculum year group (R30), confirmed by a school admin."""

    __tablename__ = "school_retention_settings"

    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), primary_key=True)
    last_year_group: Mapped[int] = mapped_column(Integer)
    confirmed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    confirmed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LegalHold(db.Model):
    """A restriction for legal claims on one subject (a pupil or staff record): suspends its deletion (R40)."""

    __tablename__ = "legal_holds"

    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    # The held record: a row of mis_pupils or mis_staff. No foreign key: the hold outlives nothing it protects.
    record_table: Mapped[str] = mapped_column(String(60))
    record_id: Mapped[int] = mapped_column(Integer, index=True)
    reason: Mapped[str] = mapped_column(Text)
    review_on: Mapped[date] = mapped_column(Date)
    dpo_approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    dpo_approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    dpo_approved_by: Mapped[User | None] = relationship(foreign_keys=[dpo_approved_by_id])
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])

    def is_active(self, on: date) -> bool:
        """Return whether the hold suspends deletion on this date (approved, not released, not lapsed)."""
        return self.dpo_approved_at is not None and self.released_at is None and on <= self.review_on


class DeletionOrder(db.Model):
    """A tracked deletion of one connection's data, or of categories no granted feature needs (revocation, removed grants)."""

    __tablename__ = "deletion_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    connection_id: Mapped[int | None] = mapped_column(ForeignKey("connections.id", ondelete="SET NULL"), index=True)
    # Empty: every category of the connection (or school).
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    reason: Mapped[str] = mapped_column(String(40))  # revocation | grant_removed | permission_withdrawn
    # Store columns to clear (set NULL) in the rows of ``categories``, the rows kept: a withdrawn field set.
    # None: the rows themselves are deleted.
    fields: Mapped[list[str] | None] = mapped_column(JSON)
    rule_id: Mapped[str] = mapped_column(ForeignKey("retention_rules.id"))
    trigger_on: Mapped[date] = mapped_column(Date)
    due_on: Mapped[date] = mapped_column(Date)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RetentionProof(db.Model):
    """Proof of one deletion: rule, school, dates, counts per category and a hash of the record ids; no personal data (R41)."""

    __tablename__ = "retention_proofs"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id", ondelete="SET NULL"), index=True)
    rule_id: Mapped[str] = mapped_column(String(40), index=True)
    # Plain ids, no foreign keys: a proof outlives the school, connection and order it describes.
    # No school for the portal's own operational data.
    school_id: Mapped[int | None] = mapped_column(Integer, index=True)
    connection_id: Mapped[int | None] = mapped_column(Integer)
    order_id: Mapped[int | None] = mapped_column(Integer, index=True)
    trigger_on: Mapped[date] = mapped_column(Date)
    deadline: Mapped[date] = mapped_column(Date)
    as_of: Mapped[date] = mapped_column(Date)
    # Days after the deadline the deletion happened (R24); 0 when on time.
    late_days: Mapped[int] = mapped_column(Integer, default=0)
    records: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # sha256 of the sorted "table:id" lines of the deleted records.
    ids_sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="in_progress")
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def late(self) -> bool:
        return self.late_days > 0


class RetentionWorkItem(db.Model):
    """A record a sweep has planned to delete; lets a killed sweep resume and the proof hash the ids."""

    __tablename__ = "retention_work_items"
    __table_args__ = (Index("ix_retention_work_items_pending", "run_id", "done", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("job_runs.id", ondelete="CASCADE"))
    proof_id: Mapped[int] = mapped_column(ForeignKey("retention_proofs.id", ondelete="CASCADE"), index=True)
    record_table: Mapped[str] = mapped_column(String(60))
    record_id: Mapped[int] = mapped_column(Integer)
    category: Mapped[str] = mapped_column(String(60))
    done: Mapped[bool] = mapped_column(Boolean, default=False)


class AttendanceAggregate(db.Model):
    """What an "anonymise" rule keeps of the pupils it deletes (R36): counts per cell, no pupil key of any kind.

    One set of cells per sweep and school (cells from different sweeps are not merged: a suppressed
    cell cannot be added to). A cell describing fewer pupils than the operator's threshold keeps
    neither count: both are NULL and ``suppressed`` is true.
    """

    __tablename__ = "attendance_aggregates"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id", ondelete="SET NULL"), index=True)
    rule_id: Mapped[str] = mapped_column(String(40))
    school_id: Mapped[int] = mapped_column(Integer, index=True)
    academic_year: Mapped[int] = mapped_column(Integer)  # 2024 = 2024/25
    year_group: Mapped[str | None] = mapped_column(String(10))
    code: Mapped[str] = mapped_column(String(2))  # DfE attendance code
    pupils: Mapped[int | None] = mapped_column(Integer)
    sessions: Mapped[int | None] = mapped_column(Integer)
    suppressed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LedgerState(db.Model):
    """The last deletion-ledger entry this database has applied (R35); behind the ledger file means a restored backup."""

    __tablename__ = "retention_ledger_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Set once by migration 0004 and carried by every backup: names this database's ledger file.
    database_id: Mapped[str] = mapped_column(String(36))
    seq: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
