"""Products, the matrix features they provide, the six categories and the feature × category grants."""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Column, Date, ForeignKey, Integer, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow


class Category(db.Model):
    """One of the six MIS data categories of the usage matrix."""

    __tablename__ = "categories"

    id: Mapped[str] = mapped_column(String(60), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    fields: Mapped[list[str]] = mapped_column(JSON, default=list)
    special_category: Mapped[bool] = mapped_column(Boolean, default=False)
    special_category_fields: Mapped[list[str]] = mapped_column(JSON, default=list)


class Feature(db.Model):
    """A product feature of the usage matrix (e.g. attendance_reporting)."""

    __tablename__ = "features"

    id: Mapped[str] = mapped_column(String(60), primary_key=True)
    name: Mapped[str] = mapped_column(Text)

    grants: Mapped[list[FeatureGrant]] = relationship(back_populates="feature", cascade="all, delete-orphan")

    def __str__(self) -> str:  # how forms and admin lists name a feature
        return self.name


class FeatureGrant(db.Model):
    """Feature × category: the feature may read the category from its effective date (R11, R15)."""

    __tablename__ = "feature_grants"

    feature_id: Mapped[str] = mapped_column(ForeignKey("features.id", ondelete="CASCADE"), primary_key=True)
    category_id: Mapped[str] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"), primary_key=True)
    matrix_version: Mapped[int] = mapped_column(Integer, default=1)
    effective_from: Mapped[date] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(Text, default="")

    feature: Mapped[Feature] = relationship(back_populates="grants")
    category: Mapped[Category] = relationship()


product_features = Table(
    "product_features",
    db.metadata,
    Column("product_id", ForeignKey("products.id", ondelete="CASCADE"), primary_key=True),
    Column("feature_id", ForeignKey("features.id", ondelete="CASCADE"), primary_key=True),
)


class Product(db.Model):
    """A product that reads school data through one or more matrix features (R12)."""

    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    purpose: Mapped[str] = mapped_column(Text, default="")
    processing_location: Mapped[str] = mapped_column(String(20), default="UK")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    features: Mapped[list[Feature]] = relationship(secondary=product_features)

    def categories(self) -> set[str]:
        """Return the union of categories granted to this product's features."""
        return {g.category_id for f in self.features for g in f.grants}

    def __str__(self) -> str:  # how forms and admin lists name a product
        return self.name


class MatrixInfo(db.Model):
    """Metadata of the seeded matrix (source document and version)."""

    __tablename__ = "matrix_info"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(200))
    notes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
