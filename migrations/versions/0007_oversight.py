"""Oversight records: support access grants (R58), school-approved links (R57), the sub-processor register (R66),
breach records and notices (R69), freshness alerts (R22), and the support confidentiality date.

Revision ID: 0007_oversight
Revises: 0006_recovery_codes
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

import portal.models.base

revision = "0007_oversight"
down_revision = "0006_recovery_codes"
branch_labels = None
depends_on = None

UTC = portal.models.base.UTCDateTime


def upgrade():
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("confidentiality_agreed_on", sa.Date(), nullable=True))
    op.create_table(
        "support_grants",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("school_id", sa.Integer(), sa.ForeignKey("organisations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("support_user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("granted_by_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("ticket_ref", sa.String(60), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("granted_at", UTC(), nullable=False),
        sa.Column("expires_at", UTC(), nullable=False),
        sa.Column("ended_at", UTC(), nullable=True),
    )
    op.create_index("ix_support_grants_school_id", "support_grants", ["school_id"])
    op.create_index("ix_support_grants_support_user_id", "support_grants", ["support_user_id"])
    op.create_table(
        "school_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("school_id", sa.Integer(), sa.ForeignKey("organisations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("organisation_id", sa.Integer(), sa.ForeignKey("organisations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("feature_id", sa.String(60), sa.ForeignKey("features.id"), nullable=False),
        sa.Column("agreement_ref", sa.String(100), nullable=False),
        sa.Column("approved_by_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("approved_at", UTC(), nullable=False),
        sa.Column("ended_at", UTC(), nullable=True),
        sa.Column("ended_by_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    )
    op.create_index("ix_school_links_school_id", "school_links", ["school_id"])
    op.create_index("ix_school_links_organisation_id", "school_links", ["organisation_id"])
    op.create_table(
        "sub_processors",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("purpose", sa.String(300), nullable=False),
        sa.Column("location", sa.String(2), nullable=False),
        sa.Column("data_types", sa.String(300), nullable=False),
        sa.Column("mechanism", sa.Enum("in_uk", "uk_adequacy", "uk_idta", "uk_addendum", "uk_us_data_bridge",
                                       name="transfermechanism", native_enum=False, length=30), nullable=False),
        sa.Column("pupil_data", sa.Boolean(), nullable=False),
        sa.Column("added_at", UTC(), nullable=False),
        sa.Column("removed_at", UTC(), nullable=True),
    )
    op.create_table(
        "breaches",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("status", sa.Enum("suspected", "confirmed", "closed", name="breachstatus", native_enum=False, length=20),
                  nullable=False),
        sa.Column("aware_at", UTC(), nullable=False),
        sa.Column("summary", sa.String(1000), nullable=False),
        sa.Column("product_id", sa.Integer(), sa.ForeignKey("products.id", ondelete="SET NULL"), nullable=True),
        sa.Column("credential_id", sa.Integer(), sa.ForeignKey("api_credentials.id", ondelete="SET NULL"), nullable=True),
        sa.Column("exposed_from", UTC(), nullable=True),
        sa.Column("exposed_until", UTC(), nullable=True),
        sa.Column("opened_at", UTC(), nullable=False),
        sa.Column("opened_by_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    )
    op.create_table(
        "breach_notices",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("breach_id", sa.Integer(), sa.ForeignKey("breaches.id", ondelete="CASCADE"), nullable=False),
        sa.Column("recipient", sa.Enum("school", "ico", "individuals", name="noticerecipient", native_enum=False, length=20),
                  nullable=False),
        sa.Column("school_id", sa.Integer(), sa.ForeignKey("organisations.id", ondelete="SET NULL"), nullable=True),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("sent_at", UTC(), nullable=False),
        sa.Column("sent_by_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    )
    op.create_index("ix_breach_notices_breach_id", "breach_notices", ["breach_id"])
    op.create_table(
        "freshness_alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("school_id", sa.Integer(), sa.ForeignKey("organisations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("last_success_on", sa.Date(), nullable=False),
        sa.Column("missed_days", sa.Integer(), nullable=False),
        sa.Column("alerted_at", UTC(), nullable=False),
        sa.UniqueConstraint("school_id", "category", "last_success_on"),
    )
    op.create_index("ix_freshness_alerts_school_id", "freshness_alerts", ["school_id"])


def downgrade():
    for table in ("freshness_alerts", "breach_notices", "breaches", "sub_processors", "school_links", "support_grants"):
        op.drop_table(table)
    with op.batch_alter_table("users") as batch:
        batch.drop_column("confidentiality_agreed_on")
