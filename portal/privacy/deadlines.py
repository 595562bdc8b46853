"""The request clock: one calendar month from the start date, or three when extended, on a working day (R44, R45)."""
from __future__ import annotations

from datetime import date, timedelta

from portal.retention.calendar import BankHolidays, add_months, is_working_day

# R44 interpretation: the dashboard warns this many days before a deadline.
WARN_DAYS = 7


def next_working_day(day: date, bank_holidays: BankHolidays | None = None) -> date:
    """Return the day itself when it is a working day, else the next one (R26)."""
    bank_holidays = bank_holidays or BankHolidays()
    while not is_working_day(day, bank_holidays):
        day += timedelta(days=1)
    return day


def deadline(start: date, *, extended: bool = False, bank_holidays: BankHolidays | None = None) -> date:
    """Return the response deadline for a request whose clock started on ``start``.

    Same day one month later (the month's last day when it has no such day), or three months when
    extended, moved to the next working day when it falls on a weekend or bank holiday.
    """
    return next_working_day(add_months(start, 3 if extended else 1), bank_holidays)
