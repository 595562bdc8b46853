"""Store tables lose their own foreign key to the school and their unused provider_updated_at index (issue 19).

Every row of a store table belongs to a connection, which belongs to the school and cascades from it, so
the rows still go when the school or the connection goes. The key cost one check per row written. No
query filters or orders store rows by provider_updated_at, so its index cost a write per row for nothing.

Revision ID: 0013_store_writes
Revises: 0012_deletion_order_fields
Create Date: 2026-12-07
"""
from alembic import op

revision = "0013_store_writes"
down_revision = "0012_deletion_order_fields"
branch_labels = None
depends_on = None

TABLES = (
    "mis_pupils", "mis_demographics", "mis_subjects", "mis_groups", "mis_memberships", "mis_lessons",
    "mis_assessment_results", "mis_attendance_marks", "mis_exclusions", "mis_staff",
)


def upgrade():
    for table in TABLES:
        # The index first: on SQLite the batch copies the table with every index it still has.
        op.drop_index(f"ix_{table}_provider_updated_at", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_school_id_organisations", type_="foreignkey")


def downgrade():
    for table in TABLES:
        op.create_index(f"ix_{table}_provider_updated_at", table, ["provider_updated_at"])
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(f"fk_{table}_school_id_organisations", "organisations", ["school_id"], ["id"],
                                     ondelete="CASCADE")
