"""Permissions a provider stopped granting per connection: tracked withdrawals and their deletion orders.

Revision ID: 0011_permission_withdrawals
Revises: 0010_connection_authorised_at
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_permission_withdrawals"
down_revision = "0010_connection_authorised_at"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "permission_withdrawals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("school_id", sa.Integer(), nullable=False),
        sa.Column("permission", sa.String(length=200), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("withdrawn_run_id", sa.Integer(), nullable=True),
        sa.Column("restored_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deletion_order_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["connection_id"], ["connections.id"], ondelete="CASCADE",
                                name=op.f("fk_permission_withdrawals_connection_id_connections")),
        sa.ForeignKeyConstraint(["deletion_order_id"], ["deletion_orders.id"], ondelete="SET NULL",
                                name=op.f("fk_permission_withdrawals_deletion_order_id_deletion_orders")),
        sa.ForeignKeyConstraint(["school_id"], ["organisations.id"], ondelete="CASCADE",
                                name=op.f("fk_permission_withdrawals_school_id_organisations")),
        sa.ForeignKeyConstraint(["withdrawn_run_id"], ["job_runs.id"], ondelete="SET NULL",
                                name=op.f("fk_permission_withdrawals_withdrawn_run_id_job_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_permission_withdrawals")),
    )
    op.create_index("ix_permission_withdrawals_open", "permission_withdrawals", ["connection_id", "permission"],
                    unique=False)
    op.create_index(op.f("ix_permission_withdrawals_school_id"), "permission_withdrawals", ["school_id"], unique=False)


def downgrade():
    op.drop_index(op.f("ix_permission_withdrawals_school_id"), table_name="permission_withdrawals")
    op.drop_index("ix_permission_withdrawals_open", table_name="permission_withdrawals")
    op.drop_table("permission_withdrawals")
