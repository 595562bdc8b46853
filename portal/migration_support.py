"""Helpers for Alembic: render portal column types as plain SQL types, and (re)generate the initial schema."""
from __future__ import annotations

from typing import Any

from portal.crypto import EncryptedText
from portal.models.base import UTCDateTime


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render UTCDateTime and EncryptedText as what they store, so migration files import only sqlalchemy."""
    if type_ == "type":
        if isinstance(obj, UTCDateTime):
            return "sa.DateTime(timezone=True)"
        if isinstance(obj, EncryptedText):
            return "sa.Text()"
    return False
