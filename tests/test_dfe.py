"""The DfE normalisers every connector shares (portal.connectors) turn what an MIS sends into the canonical codes."""
from __future__ import annotations

import pytest

from portal.connectors import (
    normalise_bool,
    normalise_ethnicity,
    normalise_gender,
    normalise_language,
    normalise_sen_status,
    normalise_year_group,
)


@pytest.mark.parametrize(("sent", "expected"), [
    ("Year  4", "4"), ("Y10", "10"), ("07", "7"), ("Reception", "R"), ("r", "R"), ("Nursery 1", "N1"),
    ("", None), (None, None), ("Sixth form", "Sixth form"),
])
def test_year_groups(sent, expected):
    assert normalise_year_group(sent) == expected


@pytest.mark.parametrize(("sent", "expected"), [
    ("Male", "M"), ("f", "F"), ("M", "M"), ("X", "X"), (" ", None), (None, None),
])
def test_genders(sent, expected):
    assert normalise_gender(sent) == expected


@pytest.mark.parametrize(("sent", "expected"), [
    ("k", "K"), ("SEN Support", "K"), ("Education, Health and Care Plan", "E"), ("S", "E"), ("No SEN", "N"),
    ("unheard of", None), ("", None),
])
def test_sen_provision(sent, expected):
    assert normalise_sen_status(sent) == expected


def test_ethnicity_and_language_codes_from_codes_or_descriptions():
    assert normalise_ethnicity("White - British") == "WBRI"
    assert normalise_ethnicity("wbri") == "WBRI"
    assert normalise_language("Polish") == "POL" and normalise_language("eng") == "ENG"
    assert normalise_language("A language we have no code for") == "A language we have no code for"
    assert normalise_ethnicity(None) is None and normalise_language("  ") is None


@pytest.mark.parametrize(("sent", "expected"), [("Y", True), ("0", False), (1, True), ("maybe", None), (None, None)])
def test_flags(sent, expected):
    assert normalise_bool(sent) is expected
