"""Retention dates: months and years (R25), England-and-Wales working days (R26), rule edits and R30's year groups."""
from __future__ import annotations

from datetime import date

import pytest

from portal.models.retention import RetentionRule
from portal.retention.calendar import BankHolidays, add_months, add_working_days, add_years, is_working_day
from portal.retention.deadlines import last_year_group_for_age, parse_year_group
from portal.retention.rules import SEED_RULES, rule_problem

ENGLAND = BankHolidays(True)


@pytest.mark.parametrize(
    "start, months, expected",
    [
        (date(2025, 8, 31), 6, date(2026, 2, 28)),
        (date(2027, 8, 31), 6, date(2028, 2, 29)),
        (date(2025, 6, 30), 6, date(2025, 12, 30)),
        (date(2025, 7, 22), 6, date(2026, 1, 22)),
        (date(2025, 10, 31), 4, date(2026, 2, 28)),
    ],
)
def test_r25_adding_months_clamps_to_the_end_of_shorter_months(start, months, expected):
    assert add_months(start, months) == expected


def test_r25_adding_years_turns_29_february_into_28_february():
    assert add_years(date(2024, 2, 29), 7) == date(2031, 2, 28)
    assert add_years(date(2004, 2, 29), 23) == date(2027, 2, 28)
    assert add_years(date(2003, 2, 14), 23) == date(2026, 2, 14)


def test_r26_twenty_working_days_skip_christmas_bank_holidays():
    assert add_working_days(date(2025, 12, 19), 20, ENGLAND) == date(2026, 1, 21)


def test_r26_twenty_working_days_skip_easter_and_may_day():
    assert add_working_days(date(2026, 4, 2), 20, ENGLAND) == date(2026, 5, 5)


def test_r26_without_a_calendar_every_weekday_counts():
    assert add_working_days(date(2025, 12, 19), 20, BankHolidays(False)) == date(2026, 1, 16)


@pytest.mark.parametrize(
    "day",
    [date(2022, 9, 19), date(2023, 5, 8), date(2022, 6, 3), date(2021, 12, 27), date(2021, 12, 28), date(2027, 12, 28)],
)
def test_r26_one_off_and_substitute_bank_holidays_are_not_working_days(day):
    assert not is_working_day(day, ENGLAND)
    # The first working day after the day before skips it.
    assert add_working_days(date.fromordinal(day.toordinal() - 1), 1, ENGLAND) != day


def test_r26_scottish_bank_holidays_are_working_days():
    # 2 January and St Andrew's Day are Scottish only.
    assert date(2026, 1, 2) not in ENGLAND
    assert date(2025, 12, 1) not in ENGLAND


def _rule(**overrides) -> RetentionRule:
    seed = next(r for r in SEED_RULES if r["id"] == "R29")
    return RetentionRule(**{**seed, "categories": [], "action": "delete", "enabled": True, **overrides})


def test_a_deployment_may_shorten_a_seeded_period():
    assert rule_problem(_rule(period=3)) is None


def test_lengthening_past_the_seeds_deadline_is_refused_with_a_clear_message():
    problem = rule_problem(_rule(period=7))
    assert problem is not None and "cannot be longer than 6 months" in problem


def test_a_rule_with_an_unknown_clock_is_refused():
    assert "not a clock" in rule_problem(_rule(clock="full_moon"))


@pytest.mark.parametrize("high_age, last", [(11, 6), (7, 2), (16, 11), (18, 13), (19, 13), (None, None), (3, None)])
def test_r30_last_year_group_suggested_by_the_statutory_high_age(high_age, last):
    assert last_year_group_for_age(high_age) == last


@pytest.mark.parametrize("value, year", [("6", 6), ("Year 11", 11), ("R", 0), ("N1", -1), ("", None), (None, None)])
def test_r30_year_groups_are_read_from_the_mis_value(value, year):
    assert parse_year_group(value) == year
