"""The portal's calendar: the Europe/London date of a moment (R24), below every layer that needs it."""
from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")

__all__ = ["LONDON", "london_date"]


def london_date(moment: datetime | date) -> date:
    """Return the Europe/London calendar date of a timestamp (R24); a date is returned unchanged."""
    if isinstance(moment, datetime):
        return moment.astimezone(LONDON).date()
    return moment
