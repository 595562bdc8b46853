"""Seed the user-data retention rules R37 and R38, and this database's deletion-ledger identity (R35).

Frozen like 0003: a change to the defaults is a new revision. The ledger identity is random per
database and travels with its backups, so a restored backup finds its own ledger file.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""
import datetime
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RULES = [
    {"id": "R37", "title": "User data: 7 years after the subscription ends", "covers": "user",
     "clock": "subscription_end", "period": 7, "period_unit": "years", "max_period": 7, "timing": "backup",
     "source": "000: 7 years after termination or expiry of the relevant Aspire subscription."},
    {"id": "R38", "title": "User data: 7 years after the organisation deletes the user", "covers": "user",
     "clock": "user_removed", "period": 7, "period_unit": "years", "max_period": 7, "timing": "backup",
     "source": "000: 7 years after the subscribing organisation has deleted the relevant user from Aspire."},
]


def upgrade():
    now = datetime.datetime(2026, 11, 26, tzinfo=datetime.timezone.utc)
    op.bulk_insert(rules_table(), [dict(rule, categories=[], action="delete", enabled=True, updated_at=now) for rule in RULES])
    op.bulk_insert(ledger_table(), [{"id": 1, "database_id": str(uuid.uuid4()), "seq": 0, "updated_at": now}])


def ledger_table():
    return sa.table(
        "retention_ledger_state",
        sa.column("id", sa.Integer),
        sa.column("database_id", sa.String),
        sa.column("seq", sa.Integer),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )


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


def downgrade():
    op.execute(ledger_table().delete())
    table = rules_table()
    op.execute(table.delete().where(table.c.id.in_([rule["id"] for rule in RULES])))
