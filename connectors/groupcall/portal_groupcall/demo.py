"""The demo's Groupcall school: Demo Village School connected to the Groupcall sandbox as if it had authorised us."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from portal.plugins import api
from portal.sandbox.synthetic import ACADEMIC_YEAR_START
from portal_groupcall.sandbox import (
    DEMO_ESTABLISHMENTS, DEMO_LA, RELYING_PARTY, GroupcallSandbox, demo_secret, load_demo_schools,
)

DEMO_ESTABS = {f"{DEMO_LA}{number}" for number in DEMO_ESTABLISHMENTS}


def demo_connections(schools: list[Any]) -> list[Any]:
    """Approve a Groupcall connection for each demo school the sandbox serves (idempotent).

    It walks the real lifecycle: a school admin accepts the terms and asks for access, then the
    approval the sandbox's authorisation callback would bring is applied with its school secret.
    """
    return api.connect_demo_schools(schools, "groupcall", lambda school: school.dfe_number in DEMO_ESTABS, _approve)


def _approve(connection: Any, school: Any, admin: Any) -> None:
    if connection.state not in (api.ConnectionState.requested, api.ConnectionState.pending):
        api.request_access(connection, admin, {"name": admin.name, "email": admin.email})
    connection.provider_school_id = school.dfe_number
    api.mark_approved(connection, "provider", settings={
        "school_secret": demo_secret(school.dfe_number), "relying_party": RELYING_PARTY,
        # The synthetic schools' data is for the 2025/26 academic year, whatever today is.
        "date_from": ACADEMIC_YEAR_START.replace(day=1).isoformat(),
        "date_to": ACADEMIC_YEAR_START.replace(year=ACADEMIC_YEAR_START.year + 1, month=8, day=31).isoformat(),
    })


@contextmanager
def demo_sandbox() -> Iterator[dict[str, Any]]:
    """Serve the demo's Groupcall school on a free local port while the demo loads; yield the connector settings for it."""
    with load_demo_schools(GroupcallSandbox()) as sandbox:
        yield {"base_url": sandbox.url, "allow_insecure_http": True}
