"""Finding the subject of a request: by provider id, UPN (internal use only) or surname plus date of birth (issue 8).

Only schools where the user may act on requests are searched (portal.scope); an ambiguous search
returns every match for an explicit choice.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from portal import store
from portal.models import User
from portal.privacy.register import RequestError
from portal.scope import Action, school_ids


@dataclass(frozen=True)
class Match:
    school_id: int
    external_id: str
    forename: str | None
    surname: str | None
    date_of_birth: date | None
    year_group: str | None


def find(user: User, *, external_id: str | None = None, upn: str | None = None, surname: str | None = None,
         date_of_birth: date | None = None, school_id: int | None = None) -> list[Match]:
    """Return the pupils matching the search in the schools the user may handle requests for."""
    if not (external_id or upn or (surname and date_of_birth)):
        raise RequestError("search_terms", "Search by MIS id, UPN, or surname and date of birth.", "search")
    schools = school_ids(user, Action.release_export)
    if school_id is not None:
        schools = [s for s in schools if s == school_id]
    if not schools:
        return []
    rows = store.dsr_search_pupils(schools, external_id=external_id, upn=upn, surname=surname, date_of_birth=date_of_birth)
    return [Match(r["school_id"], r["external_id"], r["legal_forename"], r["legal_surname"], r["date_of_birth"],
                  r["year_group"]) for r in rows]
