"""R67: every endpoint that returns pupil data is tagged with the one lawful route it serves, so an inventory can check."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Flask

# The only ways pupil data leaves the portal (R67).
PURPOSES = frozenset({"authorised_product", "school_users", "data_subject", "legal_disclosure"})
ATTRIBUTE = "pupil_data_purpose"

F = TypeVar("F", bound=Callable)


def returns_pupil_data(purpose: str) -> Callable[[F], F]:
    """Tag a view as returning pupil data for one of the four purposes."""
    if purpose not in PURPOSES:
        raise ValueError(f"{purpose!r} is not one of {sorted(PURPOSES)}")

    def tag(view: F) -> F:
        setattr(view, ATTRIBUTE, purpose)
        return view

    return tag


def pupil_data_endpoints(app: Flask) -> dict[str, str]:
    """Return endpoint -> purpose for every tagged view of the app."""
    return {name: getattr(view, ATTRIBUTE) for name, view in app.view_functions.items() if hasattr(view, ATTRIBUTE)}
