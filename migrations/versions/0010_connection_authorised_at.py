"""Connections record when access was really (re-)authorised (authorised_at), apart from recovering from failing.

Existing approved connections take their last state change as the time they were authorised;
failing ones none (their last change was the failure, not an approval).

Revision ID: 0010_connection_authorised_at
Revises: 0009_retention_facts
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0010_connection_authorised_at"
down_revision = "0009_retention_facts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("authorised_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE connections SET authorised_at = state_changed_at WHERE state = 'approved'")


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("authorised_at")
