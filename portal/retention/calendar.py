"""Retention dates: London calendar days, months/years with end-of-month clamping, England-and-Wales working days."""
from __future__ import annotations

import calendar as _calendar
from datetime import date, timedelta
from functools import lru_cache

from portal.clock import LONDON, london_date

__all__ = ["LONDON", "add_months", "add_years", "add_working_days", "is_working_day", "london_date", "BankHolidays"]


def add_months(start: date, months: int) -> date:
    """Return the same day N months later, or the last day of that month when it is shorter (R25)."""
    index = start.year * 12 + (start.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    last = _calendar.monthrange(year, month)[1]
    return date(year, month, min(start.day, last))


def add_years(start: date, years: int) -> date:
    """Return the same day N years later; 29 February becomes 28 February (R25, R27)."""
    return add_months(start, 12 * years)


class BankHolidays:
    """England-and-Wales bank holidays from the maintained ``holidays`` library (substitute and one-off days included)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def __contains__(self, day: date) -> bool:
        return self.enabled and day in _england_and_wales(day.year)


@lru_cache(maxsize=64)
def _england_and_wales(year: int) -> frozenset[date]:
    import holidays

    return frozenset(holidays.country_holidays("GB", subdiv="ENG", years=year).keys())


def is_working_day(day: date, bank_holidays: BankHolidays) -> bool:
    """Return whether the day is Monday to Friday and not a bank holiday (R26)."""
    return day.weekday() < 5 and day not in bank_holidays


def add_working_days(start: date, days: int, bank_holidays: BankHolidays) -> date:
    """Return the Nth working day after the start; the first working day after it is day 1 (R26)."""
    day, counted = start, 0
    while counted < days:
        day += timedelta(days=1)
        if is_working_day(day, bank_holidays):
            counted += 1
    return day
