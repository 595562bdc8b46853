"""Opaque, signed cursors over (change time, id): keyset pagination that stays stable while extracts write."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

from portal.api.errors import ApiError

_SALT = "portal.api.cursor"


@dataclass(frozen=True)
class Position:
    """The last row a page returned: its change time and id, and the feed it belongs to."""

    changed_at: datetime
    id: int
    feed: str


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=_SALT)


def encode(position: Position) -> str:
    """Return the cursor string for a position."""
    return _serializer().dumps([position.changed_at.isoformat(), position.id, position.feed])


def decode(cursor: str, feed: str) -> Position:
    """Return the position of a cursor issued for this feed, or raise 400 invalid_cursor."""
    try:
        changed_at, row_id, cursor_feed = _serializer().loads(cursor)
        position = Position(datetime.fromisoformat(changed_at), int(row_id), str(cursor_feed))
    except (BadSignature, ValueError, TypeError):
        raise ApiError(400, "invalid_cursor", "The cursor is not one this API issued; start again without it.") from None
    if position.feed != feed or position.changed_at.tzinfo is None:
        raise ApiError(400, "invalid_cursor", "The cursor belongs to a different feed; start again without it.")
    return position
