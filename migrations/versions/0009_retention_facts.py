"""R30 year-group facts per pupil and the GIAS statutory high age of a school; R59 staff links on memberships.

Existing pupils get their first fact from the next extract that returns them; until then, and until a
school admin confirms the school's last year group, R30 starts no clock for them.

Revision ID: 0009_retention_facts
Revises: 0008_connector_sync_state
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_retention_facts"
down_revision = "0008_connector_sync_state"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "pupil_year_group_facts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pupil_id", sa.Integer(), nullable=False),
        sa.Column("school_id", sa.Integer(), nullable=False),
        sa.Column("nc_year", sa.Integer(), nullable=False),
        sa.Column("first_seen_on", sa.Date(), nullable=False),
        sa.Column("last_seen_on", sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(["pupil_id"], ["mis_pupils.id"], name=op.f("fk_pupil_year_group_facts_pupil_id_mis_pupils"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["school_id"], ["organisations.id"], name=op.f("fk_pupil_year_group_facts_school_id_organisations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pupil_year_group_facts")),
        sa.UniqueConstraint("pupil_id", "nc_year", name=op.f("uq_pupil_year_group_facts_pupil_id_nc_year")),
    )
    op.create_index(op.f("ix_pupil_year_group_facts_pupil_id"), "pupil_year_group_facts", ["pupil_id"])
    op.create_index(op.f("ix_pupil_year_group_facts_school_id"), "pupil_year_group_facts", ["school_id"])
    with op.batch_alter_table("organisations") as batch:
        batch.add_column(sa.Column("statutory_high_age", sa.Integer(), nullable=True))
    with op.batch_alter_table("memberships") as batch:
        batch.add_column(sa.Column("staff_external_id", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("staff_linked_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("suspended_reason", sa.String(length=40), nullable=True))


def downgrade():
    with op.batch_alter_table("memberships") as batch:
        batch.drop_column("suspended_reason")
        batch.drop_column("staff_linked_at")
        batch.drop_column("staff_external_id")
    with op.batch_alter_table("organisations") as batch:
        batch.drop_column("statutory_high_age")
    op.drop_index(op.f("ix_pupil_year_group_facts_school_id"), table_name="pupil_year_group_facts")
    op.drop_index(op.f("ix_pupil_year_group_facts_pupil_id"), table_name="pupil_year_group_facts")
    op.drop_table("pupil_year_group_facts")
