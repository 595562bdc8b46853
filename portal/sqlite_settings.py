"""SQLite connection settings: enforce foreign keys (so ON DELETE CASCADE removes a pupil's rows, R34) and wait on locks."""
from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import event

from portal.extensions import db


def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # Off by default in SQLite; without it cascades and references are silently not enforced.
    cursor.execute("PRAGMA foreign_keys=ON")
    # The scheduler, the web process and the CLI may write at once: wait instead of failing at once.
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def init_app(app: Flask) -> None:
    """Apply the settings to every new SQLite connection of this app's engine."""
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "sqlite" and not event.contains(engine, "connect", _on_connect):
        event.listen(engine, "connect", _on_connect)
