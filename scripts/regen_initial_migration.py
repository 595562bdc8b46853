"""Regenerate migrations/versions/0001_initial_schema.py from the models (only before the first release).

Run: .venv/bin/python scripts/regen_initial_migration.py
Once a release has shipped, schema changes get new revisions through `flask db migrate` instead.
"""
from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import produce_migrations, render_python_code
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from portal import models  # noqa: F401
from portal.extensions import db
from portal.migration_support import render_item

TARGET = Path(__file__).resolve().parent.parent / "migrations" / "versions" / "0001_initial_schema.py"

TEMPLATE = '''"""Initial schema: every table of the portal.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


{upgrade}


{downgrade}
'''


def main() -> None:
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "render_item": render_item})
        script = produce_migrations(ctx, db.metadata)
    up = render_python_code(script.upgrade_ops, render_item=render_item)
    down = render_python_code(script.downgrade_ops, render_item=render_item)
    body = TEMPLATE.format(
        upgrade="def upgrade():\n    " + up.strip(),
        downgrade="def downgrade():\n    " + down.strip(),
    )
    TARGET.write_text(body.replace("    \n", "\n"))
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
