"""A fake MIS connector for engine tests: a small school of all six categories kept in a JSON file, paged.

The file (``settings["world"]``) is the provider's data; tests change it between runs (updates,
deletions). ``settings["faults"]`` injects a failure, a SIGKILL or a test hook at a given page.
"""
from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from portal.connectors import (
    RECORD_TYPES,
    AccessStatus,
    AuthorisationLost,
    BadResponse,
    Checkpoint,
    Connector,
    Contact,
    ProviderUnavailable,
    RateLimited,
    Record,
    Setting,
    Tombstone,
)
from portal.plugins import hookimpl

T0 = datetime(2026, 9, 1, 8, 0, tzinfo=timezone.utc)
# Test hooks by name, called at a page named in settings["faults"] (e.g. to revoke from "another process").
HOOKS: dict[str, Callable[[], None]] = {}
# Every extract call: (category, since, checkpoint cursor), so tests can assert what was asked.
CALLS: list[tuple[str, datetime | None, str | None]] = []
FAULTS = {
    "authorisation_lost": lambda: AuthorisationLost("The school has switched off access for this connector.", endpoint="pupils", page=2),
    "unavailable": lambda: ProviderUnavailable("The provider did not answer after 5 tries.", endpoint="pupils", page=2),
    "rate_limited": lambda: RateLimited("The provider kept asking us to slow down.", retry_after=30),
    "bad_response": lambda: BadResponse("The provider sent invalid JSON for pupils, page 2.", endpoint="pupils", page=2),
    "internal": lambda: ZeroDivisionError("a bug"),
}


# ---------------------------------------------------------------- the world (the provider's data)


def _encode(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return {"__dt__" if isinstance(value, datetime) else "__d__": value.isoformat()}
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "__dt__" in value:
        return datetime.fromisoformat(value["__dt__"])
    if isinstance(value, dict) and "__d__" in value:
        return date.fromisoformat(value["__d__"])
    return value


def generate(pupils: int = 6, days: int = 3, staff: int = 2) -> dict[str, Any]:
    """Return a deterministic world: {"records": [{kind, fields}], "deletions": [...]}."""
    out: list[Record] = []
    for s in range(1, 4):
        out.append(RECORD_TYPES["subject"](external_id=f"SUB{s}", updated_at=T0, code=f"S{s}", name=f"Subject {s}"))
        out.append(RECORD_TYPES["group"](external_id=f"G{s}", updated_at=T0, name=f"7X/{s}", group_type="class",
                                         subject_external_id=f"SUB{s}"))
        out.append(RECORD_TYPES["lesson"](external_id=f"L{s}", updated_at=T0, group_external_id=f"G{s}",
                                          period_name=f"P{s}", day_of_week=s, starts_at="09:00", ends_at="10:00"))
    for n in range(1, pupils + 1):
        pid = f"P{n}"
        out.append(RECORD_TYPES["pupil"](
            external_id=pid, updated_at=T0, legal_forename=f"Forename{n}", legal_surname="Surname",
            preferred_forename=f"Pref{n}", date_of_birth=date(2014, 1 + n % 12, 1 + n % 28), gender="F" if n % 2 else "M",
            upn=f"A{n:012d}", year_group="7", registration_group="7X", admission_date=date(2025, 9, 1),
        ))
        out.append(RECORD_TYPES["demographics"](
            external_id=pid, updated_at=T0, fsm=n % 3 == 0, fsm_ever6=n % 3 == 0, pupil_premium=n % 4 == 0,
            sen_status="K" if n % 5 == 0 else "N", sen_need="SLCN" if n % 5 == 0 else None, first_language="ENG",
            eal=n % 6 == 0, ethnicity="WBRI", looked_after=False, ever_in_care=n == 1, service_child=False,
        ))
        out.append(RECORD_TYPES["membership"](external_id=f"G{1 + n % 3}:{pid}", updated_at=T0,
                                              group_external_id=f"G{1 + n % 3}", pupil_external_id=pid))
        out.append(RECORD_TYPES["assessment_result"](
            external_id=f"R{n}", updated_at=T0, pupil_external_id=pid, stage="KS2", statutory=True,
            aspect="KS2 Reading scaled score", template="KS2 SATs", result=str(95 + n), result_date=date(2025, 7, 8),
        ))
        for d in range(days):
            day = date(2026, 9, 7) + timedelta(days=d)
            for session in ("AM", "PM"):
                out.append(RECORD_TYPES["attendance_mark"](
                    external_id=f"{pid}:{day.isoformat()}:{session}", updated_at=T0, pupil_external_id=pid,
                    session_date=day, session=session, code="/" if session == "AM" else "\\",
                ))
        if n % 4 == 0:
            out.append(RECORD_TYPES["exclusion"](external_id=f"X{n}", updated_at=T0, pupil_external_id=pid,
                                                 exclusion_type="fixed", start_date=date(2026, 9, 8),
                                                 end_date=date(2026, 9, 9), sessions=4))
    for n in range(1, staff + 1):
        out.append(RECORD_TYPES["staff"](external_id=f"ST{n}", updated_at=T0, title="Ms", forename=f"Staff{n}",
                                         surname="Teacher", email=f"staff{n}@school.example", roles=("Teacher",),
                                         currently_employed=True))
    return {"records": [{"kind": r.kind, "fields": {k: _encode(v) for k, v in asdict(r).items()}} for r in out],
            "deletions": []}


class World:
    """The JSON file a FakeMis connector serves; tests edit it between runs."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def save(self, data: dict[str, Any]) -> World:
        self.path.write_text(json.dumps(data))
        return self

    def load(self) -> dict[str, Any]:
        return json.loads(self.path.read_text())

    def records(self) -> list[Record]:
        return [RECORD_TYPES[r["kind"]](**{k: frozenset(v) if k == "absent" else _decode(v) for k, v in r["fields"].items()})
                for r in self.load()["records"]]

    def update(self, kind: str, external_id: str, at: datetime, **changes: Any) -> None:
        data = self.load()
        for r in data["records"]:
            if r["kind"] == kind and r["fields"]["external_id"] == external_id:
                r["fields"].update({k: _encode(v) for k, v in changes.items()}, updated_at=_encode(at))
        self.save(data)

    def delete(self, kind: str, external_id: str, at: datetime, *, feed: bool = True) -> None:
        """Remove a record; with ``feed`` it also appears in the deletions feed."""
        data = self.load()
        data["records"] = [
            r for r in data["records"] if not (r["kind"] == kind and r["fields"]["external_id"] == external_id)
        ]
        if feed:
            data["deletions"].append({"kind": kind, "external_id": external_id, "deleted_at": at.isoformat()})
        self.save(data)


# ---------------------------------------------------------------- the connector


class FakeMis(Connector):
    """Serves the world file page by page; the cursor is the next page number within a category."""

    name = "fakemis"
    title = "Fake MIS (all categories)"
    settings_schema = {
        "world": Setting(str, required=True, per_connection=True, title="The JSON file holding the provider's data"),
        "faults": Setting(list, [], per_connection=True, title="Failures to inject at given pages"),
        "page_size": Setting(int, 5, title="Records per page"),
    }

    def check_connection(self) -> None:
        return None

    def request_access(self, school: Any, contacts: Sequence[Contact] = ()) -> AccessStatus:
        return AccessStatus("approved", provider_school_id=f"fakemis-{school.urn}")

    def revoke_access(self, school: Any) -> None:
        return None

    def access_status(self, school: Any) -> AccessStatus:
        return AccessStatus("approved", f"fakemis-{school.urn}")

    def _fault(self, category: str, page: int) -> None:
        for fault in self.settings.get("faults", []):
            if fault.get("category", category) != category or fault["page"] != page:
                continue
            what = fault["do"]
            if what == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif what == "hook":
                HOOKS[fault["name"]]()
            else:
                raise FAULTS[what]()

    def extract(
        self, connection: Any, categories: Iterable[str], since: datetime | None, checkpoint: Checkpoint | None
    ) -> Iterator[Record | Checkpoint]:
        world = World(self.settings["world"])
        size = int(self.settings.get("page_size", 5))
        for category in categories:
            CALLS.append((category, since, checkpoint.cursor if checkpoint else None))
            records = [
                r for r in world.records()
                if r.category == category and (since is None or r.updated_at is None or r.updated_at > since)
            ]
            deletions = [
                Tombstone(external_id=d["external_id"], record_kind=d["kind"], record_category=RECORD_TYPES[d["kind"]].category,
                          deleted_at=datetime.fromisoformat(d["deleted_at"]))
                for d in world.load()["deletions"]
                if RECORD_TYPES[d["kind"]].category == category
                and (since is None or datetime.fromisoformat(d["deleted_at"]) > since)
            ]
            items: list[Record] = records + deletions
            start = int(checkpoint.cursor) if checkpoint and checkpoint.category == category and checkpoint.cursor else 0
            pages = [items[i:i + size] for i in range(0, len(items), size)] or [[]]
            for page in range(start, len(pages)):
                self.stats["requests"] += 1
                self._fault(category, page + 1)
                yield from pages[page]
                yield Checkpoint(category, str(page + 1))


@hookimpl
def portal_register_connectors() -> list[type[Connector]]:
    return [FakeMis]
