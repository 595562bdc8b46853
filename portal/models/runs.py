"""Claimed job runs: one row per (job, scheduled time), the single source of truth for what ran."""
from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow
from portal.models.connections import Connection


class RunStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    held = "held"  # held for review, e.g. a mass removal
    cancelled = "cancelled"
    # The process running it died and a newer completed run did its work: closed, never resumed.
    superseded = "superseded"


FINISHED_STATUSES = frozenset(
    {RunStatus.succeeded, RunStatus.failed, RunStatus.held, RunStatus.cancelled, RunStatus.superseded}
)


class ErrorKind(str, enum.Enum):
    """Who must act on a failed run (shown to school staff in plain English)."""

    school_action = "school_action"
    provider_problem = "provider_problem"
    temporary = "temporary"
    internal = "internal"


class JobRun(db.Model):
    """One firing of a job (an extract run, a retention sweep...), claimed before it runs."""

    __tablename__ = "job_runs"
    __table_args__ = (UniqueConstraint("job_id", "scheduled_for"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(String(120), index=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime())
    connection_id: Mapped[int | None] = mapped_column(ForeignKey("connections.id", ondelete="SET NULL"), index=True)
    status: Mapped[RunStatus] = mapped_column(
        Enum(RunStatus, native_enum=False, length=20), default=RunStatus.queued, index=True
    )
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Parameters the run was asked for (mode, categories...) and what it did (counts, pages...).
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error_kind: Mapped[ErrorKind | None] = mapped_column(Enum(ErrorKind, native_enum=False, length=20))
    error_code: Mapped[str | None] = mapped_column(String(60))
    # Plain English for staff; never personal data.
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    connection: Mapped[Connection | None] = relationship()

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None
