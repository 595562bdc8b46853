"""Deletion orders for withdrawn field sets: the store columns an order clears (NULL: whole rows).

Revision ID: 0012_deletion_order_fields
Revises: 0011_permission_withdrawals
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0012_deletion_order_fields"
down_revision = "0011_permission_withdrawals"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("deletion_orders") as batch:
        batch.add_column(sa.Column("fields", sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table("deletion_orders") as batch:
        batch.drop_column("fields")
