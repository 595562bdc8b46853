"""DfE code normalisers every connector shares: gender, SEN provision, year group, ethnicity, language, yes/no flags.

Connector packages reach them through ``portal.connectors`` (the public plugin API), never here.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ETHNICITY_DESCRIPTIONS",
    "LANGUAGE_NAMES",
    "normalise_bool",
    "normalise_ethnicity",
    "normalise_gender",
    "normalise_language",
    "normalise_sen_status",
    "normalise_year_group",
    "parse_year_group",
]

TRUE_TEXT = frozenset({"true", "t", "yes", "y", "1"})
FALSE_TEXT = frozenset({"false", "f", "no", "n", "0"})
GENDERS = {"male": "M", "m": "M", "female": "F", "f": "F"}
# DfE ethnicity codes for the descriptions an MIS may send instead of the code.
ETHNICITY_DESCRIPTIONS = {
    "white - british": "WBRI", "white british": "WBRI", "white - irish": "WIRI", "white - any other white background": "WOTH",
    "any other white background": "WOTH", "traveller of irish heritage": "WIRT", "gypsy/roma": "WROM",
    "white and black caribbean": "MWBC", "white and black african": "MWBA", "white and asian": "MWAS",
    "any other mixed background": "MOTH", "indian": "AIND", "pakistani": "APKN", "bangladeshi": "ABAN",
    "any other asian background": "AOTH", "black - african": "BAFR", "african": "BAFR", "black - caribbean": "BCRB",
    "caribbean": "BCRB", "any other black background": "BOTH", "chinese": "CHNE", "any other ethnic group": "OOTH",
    "refused": "REFU", "information not yet obtained": "NOBT",
}
# DfE language codes for the names an MIS may send instead of the code.
LANGUAGE_NAMES = {"english": "ENG", "believed to be english": "ENB", "polish": "POL", "urdu": "URD", "panjabi": "PNJ",
                  "punjabi": "PNJ", "bengali": "BNG", "gujarati": "GUJ", "arabic": "ARA", "somali": "SOM",
                  "tamil": "TAM", "portuguese": "POR", "spanish": "SPA", "turkish": "TUR", "lithuanian": "LIT",
                  "french": "FRN", "chinese": "CHI"}
_YEAR = re.compile(r"(?:year|yr|y)?\s*(\d{1,2})")
_NURSERY = re.compile(r"nursery\s*(\d)")


def _blank(value: Any) -> bool:
    return value is None or str(value).strip() == ""


def normalise_bool(value: Any) -> bool | None:
    """Return True/False from a bool, a number or Y/N/true/1-style text; None when missing or unreadable."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE_TEXT:
        return True
    if text in FALSE_TEXT:
        return False
    return None


def normalise_gender(value: Any) -> str | None:
    """Return "M" or "F" from a code or a word (any case); other text as sent (the spec lists several vocabularies)."""
    if _blank(value):
        return None
    text = str(value).strip()
    return GENDERS.get(text.lower(), text)


def normalise_sen_status(value: Any) -> str | None:
    """Return the DfE SEN provision code N, K or E from a code or an MIS description; None when unreadable."""
    if _blank(value):
        return None
    text = str(value).strip().lower()
    if text in ("n", "k", "e"):
        return text.upper()
    if text in ("s", "a", "p") or "statement" in text or "ehc" in text or "health and care" in text:
        return "E"
    if text.startswith("no ") or text in ("none", "no sen", "not sen"):
        return "N"
    if "support" in text or "school action" in text or text == "sen":
        return "K"
    return None


def normalise_year_group(value: Any) -> str | None:
    """Return the national curriculum year: "Year  4" (sic) or "04" -> "4", "Reception" -> "R", "Nursery 1" -> "N1"."""
    if _blank(value):
        return None
    squashed = re.sub(r"\s+", " ", str(value)).strip()
    lowered = squashed.lower()
    if lowered.startswith("reception") or lowered == "r":
        return "R"
    if match := _YEAR.fullmatch(lowered):
        return str(int(match.group(1)))
    if match := _NURSERY.fullmatch(lowered):
        return f"N{match.group(1)}"
    return squashed


def _code(value: Any, names: Mapping[str, str]) -> str | None:
    if _blank(value):
        return None
    text = str(value).strip()
    return names.get(text.lower(), text.upper() if len(text) <= 4 else text)


def normalise_ethnicity(value: Any) -> str | None:
    """Return the DfE ethnicity code from a code (any case) or its description; longer unknown text as sent."""
    return _code(value, ETHNICITY_DESCRIPTIONS)


def normalise_language(value: Any) -> str | None:
    """Return the DfE language code from a code (any case) or a language's name; longer unknown text as sent."""
    return _code(value, LANGUAGE_NAMES)


def parse_year_group(value: str | None) -> int | None:
    """Return the NC year as a number (Reception 0, nursery below 0); None when it is not a year group."""
    text = (value or "").strip().upper().removeprefix("YEAR").removeprefix("Y").strip()
    if text in ("R", "REC", "RECEPTION"):
        return 0
    if text.startswith("N") and text[1:].isdigit():
        return -int(text[1:])  # N1 -> -1, N2 -> -2
    return int(text) if text.isdigit() else None
