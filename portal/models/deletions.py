"""Deletion notices to products (R42) and the compact record of which ids each product received."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.models.base import UTCDateTime, utcnow


class ProductReceipt(db.Model):
    """A product received records of this type about this subject from this school through the API (R42).

    One row per product × record type × subject, written in bulk with each page read: for record
    types about a pupil the subject is the pupil (``subject_id`` is the pupil's id, the ``pupil_id``
    field the product received), for the other types it is the record itself (its ``id``). Ids only.
    """

    __tablename__ = "product_receipts"
    # Deleting a pupil or a record asks "who received it?" (the primary key, in this column order);
    # ending an authorisation asks "what did it receive?" (the index). Two indexes only: every page read writes here.
    __table_args__ = (Index("ix_product_receipts_school", "product_id", "school_id"),)

    record_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))


class DeletionNotice(db.Model):
    """One id a product received that the portal deleted (or may no longer serve): the product deletes its copy and acknowledges.

    ``record_id`` is the ``id`` the product API served (the ``pupil_id`` for a pupil); no provider
    id, name or other value is kept, so the notice outlives the record without holding personal data.
    """

    __tablename__ = "deletion_notices"
    __table_args__ = (
        Index("ix_deletion_notices_feed", "product_id", "id"),
        Index("ix_deletion_notices_pending", "acknowledged_at", "created_at"),
        # Publishing twice (a resumed sweep, two paths deleting one record) leaves one open notice.
        Index("uq_deletion_notices_open", "product_id", "record_type", "record_id", unique=True,
              sqlite_where=text("acknowledged_at IS NULL"), postgresql_where=text("acknowledged_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    # The API's record type ("pupils", "attendance_marks", ...) and category of the id.
    record_type: Mapped[str] = mapped_column(String(40))
    category: Mapped[str] = mapped_column(String(60))
    record_id: Mapped[int] = mapped_column(Integer)
    # "subject": the pupil and every record about them (their pupil_id); "record": this record only.
    scope: Mapped[str] = mapped_column(String(20), default="record")
    # retention_rule | erasure | revocation | grant_removed | authorisation_ended | tombstone_removed | provider_deleted
    # | permission_withdrawn
    reason: Mapped[str] = mapped_column(String(30))
    rule_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the overdue alert for this notice went out (R42: once per batch of overdue notices).
    alerted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
