"""The synthetic school generator: valid UPNs, realistic codes and rates, determinism and mutations."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import pytest

from portal.sandbox.synthetic import (
    ATTENDANCE_CODE_MEANINGS,
    ETHNICITIES,
    generate_school,
    school_days,
    upn_check_letter,
    valid_upn,
)


def test_upn_check_letter_matches_published_example():
    # The example UPN in Wonde's documentation (education_details.upn).
    assert upn_check_letter("801200001001") == "H"
    assert valid_upn("H801200001001")


def test_upn_validator_rejects_any_single_digit_change():
    upn = "H801200001001"
    for position in range(1, 13):
        digit = upn[position]
        for other in "0123456789":
            if other != digit:
                changed = upn[:position] + other + upn[position + 1 :]
                # A single changed digit always changes the weighted sum by a non-multiple of 23.
                assert not valid_upn(changed), changed


@pytest.mark.parametrize("bad", [None, "", "H80120000100", "H8012000010011", "I801200001001", "H80120000100Z1"])
def test_upn_validator_rejects_malformed(bad):
    assert not valid_upn(bad)


def test_temporary_upn_with_final_letter_is_checked():
    rest = "80120000100A"
    assert valid_upn(upn_check_letter(rest) + rest)


def test_every_generated_upn_is_valid_and_unique():
    school = generate_school(5, pupils=600, days=5, phase="secondary")
    upns = [p.upn for p in school.pupils.values()]
    assert all(valid_upn(u) for u in upns)
    assert len(set(upns)) == len(upns)


def test_generation_is_deterministic():
    a = generate_school(11, pupils=120, days=20)
    b = generate_school(11, pupils=120, days=20)
    assert a.pupils == b.pupils and a.groups == b.groups and a.results == b.results
    assert list(a.marks()) == list(b.marks())
    assert generate_school(12, pupils=120, days=20).pupils != a.pupils


@pytest.mark.parametrize(("phase", "years"), [
    ("primary", {"R", "1", "2", "3", "4", "5", "6"}),
    ("secondary", {"7", "8", "9", "10", "11", "12", "13"}),
])
def test_year_groups_follow_the_phase(phase, years):
    school = generate_school(3, pupils=300, days=2, phase=phase)
    assert {p.year_group for p in school.pupils.values()} == years
    for pupil in school.pupils.values():
        year = 0 if pupil.year_group == "R" else int(pupil.year_group)
        # Born in the academic year that puts them in that year group in 2025/26.
        assert datetime(2020 - year, 9, 1).date() <= pupil.date_of_birth <= datetime(2021 - year, 8, 31).date()


def test_census_codes_are_dfe_codes():
    school = generate_school(4, pupils=800, days=1, phase="secondary")
    pupils = list(school.pupils.values())
    assert {p.ethnicity for p in pupils} <= {code for code, _ in ETHNICITIES}
    assert {p.sen_status for p in pupils} == {"N", "K", "E"}
    assert all((p.sen_need is None) == (p.sen_status == "N") for p in pupils)
    assert all(p.eal == (p.first_language not in ("ENG", "ENB")) for p in pupils)
    assert all(p.fsm_ever6 or not p.fsm for p in pupils)
    fsm_share = sum(p.fsm for p in pupils) / len(pupils)
    assert 0.15 < fsm_share < 0.33


def test_attendance_has_one_mark_per_pupil_per_session_with_realistic_rates():
    school = generate_school(6, pupils=300, days=60, phase="secondary")
    marks = list(school.marks())
    keys = {(m.pupil_key, m.session_date, m.session) for m in marks}
    assert len(keys) == len(marks)
    codes = Counter(m.code for m in marks)
    assert set(codes) <= set(ATTENDANCE_CODE_MEANINGS)
    present = sum(n for c, n in codes.items() if ATTENDANCE_CODE_MEANINGS[c][1] in ("present", "approved_educational_activity"))
    assert 0.90 < present / len(marks) < 0.97
    assert codes["I"] > codes["M"] > 0 and codes["O"] > 0


def test_school_days_skip_weekends_holidays_and_bank_holidays():
    days = school_days(190)
    assert len(days) == 190 and all(d.weekday() < 5 for d in days)
    assert datetime(2025, 12, 25).date() not in days and datetime(2026, 5, 4).date() not in days


def test_mutations_stamp_changes_and_record_deletions():
    school = generate_school(8, pupils=100, days=5, phase="secondary")
    at = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)
    before = len(list(school.marks()))
    done = school.mutate(at, updated=3, deleted=2, leavers=1, marks=2, added=1, staff_deleted=1)
    assert all(school.pupils[k].updated_at == at for k in done["updated"])
    assert [d.key for d in school.deletions if d.kind == "pupil"] == done["deleted"]
    assert all(k not in school.pupils for k in done["deleted"])
    assert [p.key for p in school.leavers()] == done["leavers"]
    assert all(k not in g.members for g in school.groups.values() for k in done["deleted"] + done["leavers"])
    # Two edited marks, and the admitted pupil's registers (AM and PM of the last day) recorded when admitted.
    assert len(school.edited_marks()) == 2 + 2 and all(m.updated_at == at for m in school.edited_marks())
    assert [d.kind for d in school.deletions].count("staff") == 1
    # Deleted pupils' marks go; the new pupil has marks from their admission (the last day) only.
    assert len(list(school.marks())) == before - 2 * 5 * 2 + 2
