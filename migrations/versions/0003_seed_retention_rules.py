"""Seed the default retention rules from the seeds (privacy-rules.md group D).

The rows are frozen here; a deployment shortens periods through the admin UI, and a later change
to the defaults is a new revision, never an edit of this one.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""
import datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

RULES = [{'id': 'R27',
  'title': "DfE pupil data: the pupil's 23rd birthday",
  'covers': 'government',
  'clock': 'date_of_birth',
  'period': 23,
  'period_unit': 'years',
  'max_period': 23,
  'timing': 'backup',
  'source': '000: When such a pupil is 23 years old.'},
 {'id': 'R28',
  'title': 'DfE pupil data: within 20 working days of the DfE agreement ending',
  'covers': 'government',
  'clock': 'dfe_agreement_end',
  'period': 20,
  'period_unit': 'working_days',
  'max_period': 20,
  'timing': 'asap',
  'source': '000: In full, within 20 working days of termination of our contract with the Department For '
            'Education.'},
 {'id': 'R29',
  'title': 'School pupil data: 6 months after the pupil left',
  'covers': 'pupil',
  'clock': 'left',
  'period': 6,
  'period_unit': 'months',
  'max_period': 6,
  'timing': 'backup',
  'source': '000: no longer than 6 months after either: ... the school informs FFT that the pupil has left.'},
 {'id': 'R30',
  'title': "School pupil data: 6 months after completing the school's highest key stage",
  'covers': 'pupil',
  'clock': 'key_stage_completed',
  'period': 6,
  'period_unit': 'months',
  'max_period': 6,
  'timing': 'backup',
  'source': '000: the pupil completes the highest national curriculum key stage for the school.'},
 {'id': 'R31',
  'title': "School data: 6 months after the school's subscription ends",
  'covers': 'school',
  'clock': 'subscription_end',
  'period': 6,
  'period_unit': 'months',
  'max_period': 6,
  'timing': 'backup',
  'source': "000: the school's Aspire subscription comes to an end."},
 {'id': 'R31-grant',
  'title': 'Categories no granted feature needs any more: 6 months after the grant ended',
  'covers': 'connection',
  'clock': 'deletion_order',
  'period': 6,
  'period_unit': 'months',
  'max_period': 6,
  'timing': 'backup',
  'source': "000: the school's Aspire subscription comes to an end."},
 {'id': 'R32',
  'title': 'Connection data: 6 months after a revocation that is not undone',
  'covers': 'connection',
  'clock': 'connection_revoked',
  'period': 6,
  'period_unit': 'months',
  'max_period': 6,
  'timing': 'backup',
  'source': '002: schools can authorise or revoke (switch off) the MIS connection at any time'},
 {'id': 'R32-now',
  'title': "Connection data: deleted at once at the school's request on revocation",
  'covers': 'connection',
  'clock': 'deletion_order',
  'period': 1,
  'period_unit': 'days',
  'max_period': 1,
  'timing': 'asap',
  'source': '002: schools can authorise or revoke (switch off) the MIS connection at any time'},
 {'id': 'R39',
  'title': 'Staff never provisioned as users: 6 months after the MIS stops showing them employed',
  'covers': 'staff',
  'clock': 'staff_left',
  'period': 6,
  'period_unit': 'months',
  'max_period': 6,
  'timing': 'backup',
  'source': '002: whether staff are currently employed in the school'},
 {'id': 'TOMB',
  'title': 'Rows deleted upstream: removed 7 days later',
  'covers': 'row',
  'clock': 'tombstoned',
  'period': 7,
  'period_unit': 'days',
  'max_period': 7,
  'timing': 'deadline',
  'source': 'Seeds silent: the school (controller) deleted the row; the tombstone stays 7 days so products '
            "reading the feed see it and delete their copies (R42's acknowledgement window)."},
 {'id': 'OPS-RUNS',
  'title': 'Run logs: 24 months after the run finished',
  'covers': 'operational',
  'clock': 'run_finished',
  'period': 24,
  'period_unit': 'months',
  'max_period': None,
  'timing': 'backup',
  'source': 'Operator data. Audit entries are kept for the life of the deployment (hash chain; ids only).'}]


def rules_table():
    return sa.table(
        "retention_rules",
        sa.column("id", sa.String),
        sa.column("title", sa.String),
        sa.column("covers", sa.String),
        sa.column("categories", sa.JSON),
        sa.column("clock", sa.String),
        sa.column("period", sa.Integer),
        sa.column("period_unit", sa.String),
        sa.column("max_period", sa.Integer),
        sa.column("action", sa.String),
        sa.column("timing", sa.String),
        sa.column("enabled", sa.Boolean),
        sa.column("source", sa.Text),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )


def upgrade():
    now = datetime.datetime(2026, 11, 26, tzinfo=datetime.timezone.utc)
    op.bulk_insert(
        rules_table(),
        [dict(rule, categories=[], action="delete", enabled=True, updated_at=now) for rule in RULES],
    )


def downgrade():
    table = rules_table()
    op.execute(table.delete().where(table.c.id.in_([rule["id"] for rule in RULES])))
