"""A tiny connector that proves the contract: it yields canned records from its settings, over no network."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, timezone
from typing import Any

from portal.connectors import (
    AccessStatus,
    AuthorisationLost,
    Checkpoint,
    Connector,
    Contact,
    PupilRecord,
    Record,
    Setting,
    StaffRecord,
)
from portal.plugins import hookimpl

UPDATED = datetime(2026, 9, 1, 8, 0, tzinfo=timezone.utc)


class FakeConnector(Connector):
    """Serves two pupils and one member of staff; ``revoked: true`` in settings makes it refuse."""

    name = "fake"
    title = "Fake MIS"
    settings_schema = {
        "api_key": Setting(str, secret=True, per_connection=True, title="API key"),
        "revoked": Setting(bool, False, title="Answer as if the school had revoked access"),
    }
    categories = ("student_basic", "staff_basic")

    def check_connection(self) -> None:
        if self.settings.get("revoked"):
            raise AuthorisationLost("The school has switched off access for this connector in its MIS.")

    def request_access(self, school: Any, contacts: Sequence[Contact] = ()) -> AccessStatus:
        return AccessStatus("pending", provider_school_id=f"fake-{school.urn}")

    def revoke_access(self, school: Any) -> None:
        return None

    def access_status(self, school: Any) -> AccessStatus:
        return AccessStatus("revoked" if self.settings.get("revoked") else "approved", f"fake-{school.urn}")

    def extract(
        self, connection: Any, categories: Iterable[str], since: datetime | None, checkpoint: Checkpoint | None
    ) -> Iterator[Record | Checkpoint]:
        self.check_connection()
        wanted = set(categories)
        if "student_basic" in wanted:
            for n in (1, 2):
                yield PupilRecord(
                    external_id=f"P{n}",
                    updated_at=UPDATED,
                    legal_forename=f"Pupil{n}",
                    legal_surname="Example",
                    date_of_birth=date(2014, 1, n),
                    year_group="6",
                )
            yield Checkpoint("student_basic", "end")
        if "staff_basic" in wanted:
            yield StaffRecord(external_id="S1", updated_at=UPDATED, forename="Sam", surname="Teacher", currently_employed=True)
            yield Checkpoint("staff_basic", "end")


@hookimpl
def portal_register_connectors() -> list[type[Connector]]:
    return [FakeConnector]
