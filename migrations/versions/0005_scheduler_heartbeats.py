"""Scheduler heartbeats: one row per scheduling process, read by /readyz and `flask portal check --deploy`.

Revision ID: 0005_scheduler_heartbeats
Revises: 0004
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0005_scheduler_heartbeats"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "scheduler_heartbeats",
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ledger_path", sa.String(length=1000), nullable=True),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_scheduler_heartbeats")),
    )
    with op.batch_alter_table("scheduler_heartbeats") as batch_op:
        batch_op.create_index(batch_op.f("ix_scheduler_heartbeats_beat_at"), ["beat_at"], unique=False)


def downgrade():
    with op.batch_alter_table("scheduler_heartbeats") as batch_op:
        batch_op.drop_index(batch_op.f("ix_scheduler_heartbeats_beat_at"))
    op.drop_table("scheduler_heartbeats")
