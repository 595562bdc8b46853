"""Store indexes for the pages under load: live-record counts per category from the index alone.

Each store table's (school_id, category) index becomes (school_id, category, deleted_at): the data-use
page's counts of live records per category are then an index-only scan. (The product feed's order has its
own index, ix_<table>_feed, since 0001.)

Revision ID: 0014_store_page_indexes
Revises: 0013_store_writes
Create Date: 2026-12-07
"""
from alembic import op

revision = "0014_store_page_indexes"
down_revision = "0013_store_writes"
branch_labels = None
depends_on = None

TABLES = ("mis_pupils", "mis_demographics", "mis_subjects", "mis_groups", "mis_memberships", "mis_lessons",
          "mis_assessment_results", "mis_attendance_marks", "mis_exclusions", "mis_staff")


def upgrade():
    for table in TABLES:
        op.create_index(f"ix_{table}_school_category_deleted", table, ["school_id", "category", "deleted_at"], unique=False)
        op.drop_index(f"ix_{table}_school_category", table_name=table)


def downgrade():
    for table in TABLES:
        op.create_index(f"ix_{table}_school_category", table, ["school_id", "category"], unique=False)
        op.drop_index(f"ix_{table}_school_category_deleted", table_name=table)
