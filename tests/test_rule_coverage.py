"""Every privacy rule has a test: each R-number in privacy-rules.md has a test named ``test_rNN_...`` (issue 16).

The rules are read from the design document beside the repository (``../shared/design/privacy-rules.md``) and
from the data-protection officer's map in ``docs/privacy-rules-map.md``; the map must list every rule as well.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT.parent / "shared" / "design" / "privacy-rules.md"
MAP = ROOT / "docs" / "privacy-rules-map.md"
RULE = re.compile(r"^\*\*R(\d+)\.", re.MULTILINE)
MAP_ROW = re.compile(r"^\|\s*R(\d+)\b", re.MULTILINE)
# Zero-padding does not matter: test_r7_ and test_r07_ both name R7.
TEST = re.compile(r"^\s*(?:async\s+)?def (test_r0*(\d+)_\w+)", re.MULTILINE | re.IGNORECASE)


def rule_ids(text: str, pattern: re.Pattern = RULE) -> set[int]:
    return {int(n) for n in pattern.findall(text)}


def rule_test_files() -> list[Path]:
    """The portal's tests and every connector package's tests."""
    return sorted([*ROOT.glob("tests/**/*.py"), *ROOT.glob("connectors/*/tests/**/*.py")])


def rules_with_tests(files: list[Path]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for path in files:
        for name, number in TEST.findall(path.read_text(encoding="utf-8")):
            found.setdefault(int(number), []).append(name)
    return found


def untested(rules: set[int], tested: dict[int, list[str]]) -> list[str]:
    return [f"R{n}" for n in sorted(rules) if n not in tested]


def _rules() -> set[int]:
    if DESIGN.exists():
        return rule_ids(DESIGN.read_text(encoding="utf-8"))
    # Outside the project's shared folder (a bare checkout), the map is the list of rules.
    return rule_ids(MAP.read_text(encoding="utf-8"), MAP_ROW)


def test_every_privacy_rule_has_a_test_named_for_it():
    rules = _rules()
    assert len(rules) >= 77, "the privacy rules were not found"
    assert untested(rules, rules_with_tests(rule_test_files())) == []


def test_the_dpo_map_lists_every_rule_once():
    rows = MAP_ROW.findall(MAP.read_text(encoding="utf-8"))
    assert sorted(int(n) for n in rows) == sorted(_rules())


def test_the_map_names_only_tests_that_exist():
    names = {name for names in rules_with_tests(rule_test_files()).values() for name in names}
    named = set(re.findall(r"`(test_r\d+_\w+)`", MAP.read_text(encoding="utf-8")))
    assert named and sorted(named - names) == []


def test_the_check_notices_a_rule_without_a_test(tmp_path):
    doc = "**R1. One.** Rule: x\n\n**R2. Two.** Rule: y\n\n**R10. Ten.** Rule: z\n"
    tests = tmp_path / "test_x.py"
    tests.write_text("def test_r01_padded_name_counts():\n    pass\n\ndef test_r2x_is_not_a_rule_test():\n    pass\n"
                     "def helper_r10_not_a_test():\n    pass\n")
    assert untested(rule_ids(doc), rules_with_tests([tests])) == ["R2", "R10"]


@pytest.mark.skipif(not DESIGN.exists(), reason="the design folder is not beside this checkout")
def test_the_design_document_numbers_rules_one_to_seventy_seven():
    assert rule_ids(DESIGN.read_text(encoding="utf-8")) == set(range(1, 78))
