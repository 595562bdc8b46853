"""Connector sync state: a connector's position at the provider per connection and read (Groupcall's NextChangedRows).

Revision ID: 0008_connector_sync_state
Revises: 0007_oversight
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_connector_sync_state"
down_revision = "0007_oversight"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "connector_sync_state",
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(length=500), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["connection_id"], ["connections.id"],
                                name=op.f("fk_connector_sync_state_connection_id_connections"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["job_runs.id"], name=op.f("fk_connector_sync_state_run_id_job_runs"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("connection_id", "key", name=op.f("pk_connector_sync_state")),
    )


def downgrade():
    op.drop_table("connector_sync_state")
