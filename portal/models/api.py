"""Product API models: credentials, schools' product authorisations, and subject restriction/objection flags."""
from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow
from portal.models.mis import STORE_MODELS
from portal.models.products import Product
from portal.models.tenancy import Organisation


class ApiCredential(db.Model):
    """A product's bearer token: only its sha256 is stored; shown once, expires, can be rotated or revoked (R12)."""

    __tablename__ = "api_credentials"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), index=True)
    # The first characters of the token, kept so staff can tell credentials apart; never enough to use it.
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The credential this one replaced, when issued by rotation.
    replaces_id: Mapped[int | None] = mapped_column(ForeignKey("api_credentials.id", ondelete="SET NULL"))

    product: Mapped[Product] = relationship()

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at

    def __repr__(self) -> str:
        return f"<ApiCredential {self.id} {self.prefix}…>"


class ProductAuthorisation(db.Model):
    """School × product: the product may read the school's data while revoked_at is empty (R3)."""

    __tablename__ = "product_authorisations"
    __table_args__ = (Index("ix_product_authorisations_live", "school_id", "product_id", "revoked_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), index=True)
    authorised_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    authorised_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    school: Mapped[Organisation] = relationship()
    product: Mapped[Product] = relationship()


class SubjectKind(str, enum.Enum):
    pupil = "pupil"
    staff = "staff"


class FlagKind(str, enum.Enum):
    # R51: restriction of processing (including while an objection is assessed): excluded from every product read.
    restricted = "restricted"
    # R74: written notice against processing special-category data: those fields are withheld for the pupil.
    special_category_objection = "special_category_objection"


class SubjectFlag(db.Model):
    """A restriction or objection a school recorded for one pupil or staff member, by provider id; active until lifted.

    Minimal on purpose: the data-subject request module records and lifts these; the API only reads them.
    """

    __tablename__ = "subject_flags"
    __table_args__ = (Index("ix_subject_flags_lookup", "school_id", "subject_kind", "kind", "lifted_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    subject_kind: Mapped[SubjectKind] = mapped_column(Enum(SubjectKind, native_enum=False, length=20))
    # The provider's id of the pupil or staff member (external_id in the MIS store).
    external_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[FlagKind] = mapped_column(Enum(FlagKind, native_enum=False, length=40))
    # A code such as "accuracy_contested" or "legal_claims"; never free text about the subject.
    reason_code: Mapped[str] = mapped_column(String(60), default="")
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    # R51: the product features the restriction applies to; none listed means every feature.
    features: Mapped[list[SubjectFlagFeature]] = relationship(cascade="all, delete-orphan", lazy="selectin")

    @property
    def feature_ids(self) -> list[str]:
        return sorted(f.feature_id for f in self.features)


class SubjectFlagFeature(db.Model):
    """One product feature a restriction or objection names ("no longer served to those features", R51)."""

    __tablename__ = "subject_flag_features"

    flag_id: Mapped[int] = mapped_column(ForeignKey("subject_flags.id", ondelete="CASCADE"), primary_key=True)
    feature_id: Mapped[str] = mapped_column(ForeignKey("features.id", ondelete="CASCADE"), primary_key=True)


def _feed_indexes() -> None:
    """Index every store table for the product feed's keyset order (school, extracted_at, id).

    Declared here because the product API owns that access pattern; the tables stay the store's.
    """
    for model in STORE_MODELS.values():
        table = model.__table__
        name = f"ix_{table.name}_feed"
        if name not in {ix.name for ix in table.indexes}:
            Index(name, table.c.school_id, table.c.extracted_at, table.c.id)


_feed_indexes()
