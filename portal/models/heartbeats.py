"""Scheduler heartbeats: one row per scheduling process, so /readyz and `check --deploy` can see the schedulers."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow


class SchedulerHeartbeat(db.Model):
    """The last sign of life of one process running the scheduler (host and pid: no personal data)."""

    __tablename__ = "scheduler_heartbeats"

    # "<host>:<pid>", like the owner of a claimed run.
    owner: Mapped[str] = mapped_column(String(200), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    # The deletion-ledger file this process writes (R35): every process must use the same one.
    ledger_path: Mapped[str | None] = mapped_column(String(1000))
