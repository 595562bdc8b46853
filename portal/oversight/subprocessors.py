"""R66: the sub-processor register. Personal data goes to a provider outside the UK only under a UK-recognised
mechanism recorded here, and pupil data never leaves the UK (R64)."""
from __future__ import annotations

import re

from sqlalchemy import func, select

from portal import audit
from portal.extensions import db
from portal.models import SubProcessor, TransferMechanism
from portal.models.base import utcnow

UK = "GB"
_COUNTRY = re.compile(r"^[A-Z]{2}$")
# Mechanisms that are no longer valid, with the reason the operator is shown.
_INVALID = {
    "privacy_shield": "Privacy Shield is not a valid safeguard: it was struck down in July 2020 (Schrems II).",
    "eu_scc": "The EU standard contractual clauses alone are not a UK safeguard: use the UK Addendum.",
}


class RegisterError(ValueError):
    """An entry the register refuses; the message says what to change."""


def validate(name: str, purpose: str, location: str, data_types: str, mechanism: str | None, pupil_data: bool) -> tuple:
    """Return the cleaned fields of a register entry, or raise RegisterError."""
    name, purpose, data_types = (name or "").strip(), (purpose or "").strip(), (data_types or "").strip()
    location = (location or "").strip().upper()
    if location == "UK":
        location = UK
    if not name or not purpose or not data_types:
        raise RegisterError("Enter the sub-processor's name, its purpose and the personal data types it receives.")
    if not _COUNTRY.match(location):
        raise RegisterError("Enter the location as a two-letter country code (GB for the United Kingdom).")
    if mechanism in _INVALID:
        raise RegisterError(_INVALID[mechanism])
    if location == UK:
        mechanism = mechanism or TransferMechanism.in_uk.value
    try:
        mech = TransferMechanism(mechanism)
    except ValueError:
        raise RegisterError("A sub-processor outside the UK needs a UK transfer mechanism: UK adequacy regulations, the "
                            "UK IDTA, the UK Addendum or the UK–US data bridge.") from None
    if location != UK and mech == TransferMechanism.in_uk:
        raise RegisterError("A sub-processor outside the UK needs a UK transfer mechanism, not 'processed in the UK'.")
    if pupil_data and location != UK:
        raise RegisterError("Pupil data stays in the UK: a sub-processor outside the UK cannot receive it.")
    return name[:200], purpose[:300], location, data_types[:300], mech, bool(pupil_data)


def add(name: str, purpose: str, location: str, data_types: str, mechanism: str | None, pupil_data: bool = False,
        *, actor: str | None = None) -> SubProcessor:
    """Add an entry to the register (validated, audited)."""
    name, purpose, location, data_types, mech, pupil_data = validate(name, purpose, location, data_types, mechanism, pupil_data)
    taken = db.session.execute(select(SubProcessor.id).where(func.lower(SubProcessor.name) == name.lower(),
                                                             SubProcessor.removed_at.is_(None))).first()
    if taken:
        raise RegisterError(f"{name} is already in the register.")
    existing = db.session.execute(select(SubProcessor).where(SubProcessor.name == name)).scalar()
    item = existing or SubProcessor(name=name)
    item.purpose, item.location, item.data_types, item.mechanism, item.pupil_data = purpose, location, data_types, mech, pupil_data
    item.added_at, item.removed_at = utcnow(), None
    db.session.add(item)
    db.session.flush()
    audit.record("subprocessor.added", target=item, actor=actor,
                 details={"location": location, "mechanism": mech.value, "pupil_data": pupil_data})
    return item


def remove(item: SubProcessor, *, actor: str | None = None) -> None:
    if item.removed_at is None:
        item.removed_at = utcnow()
        audit.record("subprocessor.removed", target=item, actor=actor)


def register() -> list[SubProcessor]:
    """The current register, by name."""
    return list(db.session.execute(select(SubProcessor).where(SubProcessor.removed_at.is_(None))
                                   .order_by(SubProcessor.name)).scalars())
