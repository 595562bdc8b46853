"""URL converters: an id beyond the range of the database's id columns is a 404, never a database error."""
from __future__ import annotations

from flask import Flask
from werkzeug.routing import IntegerConverter

# Every id column is an INTEGER, whose largest value on PostgreSQL is 2**31 - 1: a larger number names no row,
# and PostgreSQL refuses to compare it with the column ("integer out of range") instead of finding nothing.
MAX_ID = 2**31 - 1


class IdConverter(IntegerConverter):
    """``<int:...>`` bounded to 0..MAX_ID unless a rule asks for other bounds."""

    def __init__(self, map, fixed_digits: int = 0, min: int | None = None, max: int | None = MAX_ID, signed: bool = False):
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=MAX_ID if max is None else max, signed=signed)


def parse_id(value: object) -> int | None:
    """Return a form or query value as a row id, or None when it is not one (not a number, negative or too large)."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if 0 <= number <= MAX_ID else None


def init_app(app: Flask) -> None:
    """Replace the ``int`` converter before any rule is added (rules bind their converter when added)."""
    app.url_map.converters["int"] = IdConverter
