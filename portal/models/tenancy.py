"""Organisations (schools, trusts, local authorities, dioceses) and school subscriptions."""
from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import CheckConstraint, Date, Enum, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow


class OrgKind(str, enum.Enum):
    school = "school"
    trust = "trust"
    local_authority = "local_authority"
    diocese = "diocese"


class SubscriptionRoute(str, enum.Enum):
    direct = "direct"
    local_authority = "local_authority"


class Organisation(db.Model):
    """A school, multi-academy trust, local authority or diocese."""

    __tablename__ = "organisations"
    __table_args__ = (
        CheckConstraint("kind = 'school' OR (urn IS NULL AND dfe_number IS NULL)", name="only_schools_have_numbers"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[OrgKind] = mapped_column(Enum(OrgKind, native_enum=False, length=20), index=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    urn: Mapped[str | None] = mapped_column(String(7), unique=True)
    # 3-digit LA code + 4-digit establishment number, e.g. 2084321.
    dfe_number: Mapped[str | None] = mapped_column(String(7), unique=True)
    # For local authorities: the 3-digit LA code.
    la_code: Mapped[str | None] = mapped_column(String(3), unique=True)
    phase: Mapped[str | None] = mapped_column(String(40))
    # GIAS "StatutoryHighAge" where known: pre-fills the school's last year group (R30), never decides it.
    statutory_high_age: Mapped[int | None] = mapped_column(Integer)
    local_authority_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    trust_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    local_authority: Mapped[Organisation | None] = relationship(
        remote_side=[id], foreign_keys=[local_authority_id]
    )
    trust: Mapped[Organisation | None] = relationship(remote_side=[id], foreign_keys=[trust_id])
    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="school",
        order_by="Subscription.starts_on",
        cascade="all, delete-orphan",
        foreign_keys="Subscription.school_id",
    )

    @property
    def is_school(self) -> bool:
        return self.kind == OrgKind.school

    def current_subscription(self, on: date) -> Subscription | None:
        """Return the subscription running on the given date, if any."""
        for sub in self.subscriptions:
            if sub.is_active(on):
                return sub
        return None

    def __repr__(self) -> str:
        return f"<Organisation {self.id} {self.kind.value}>"

    def __str__(self) -> str:  # how forms and admin lists name an organisation
        return self.name


class Subscription(db.Model):
    """A school's subscription to the service, taken out directly or through its local authority."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint(
            "(route = 'local_authority') = (local_authority_id IS NOT NULL)", name="la_route_names_la"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    route: Mapped[SubscriptionRoute] = mapped_column(Enum(SubscriptionRoute, native_enum=False, length=20))
    local_authority_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    starts_on: Mapped[date] = mapped_column(Date)
    ends_on: Mapped[date | None] = mapped_column(Date)
    # Early termination; the subscription ends on whichever of ends_on / terminated_on comes first.
    terminated_on: Mapped[date | None] = mapped_column(Date)

    school: Mapped[Organisation] = relationship(back_populates="subscriptions", foreign_keys=[school_id])

    @property
    def effective_end(self) -> date | None:
        ends = [d for d in (self.ends_on, self.terminated_on) if d is not None]
        return min(ends) if ends else None

    def is_active(self, on: date) -> bool:
        end = self.effective_end
        return self.starts_on <= on and (end is None or on <= end)
