"""Default plugin of the oversight area: the breach and sub-processor admin pages, and the daily freshness check (R22)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from portal.jobs import JobSpec
from portal.plugins import hookimpl

FRESHNESS_CHECK = "oversight:freshness"


@hookimpl
def portal_admin_views(app: Flask) -> list[Any]:
    from portal.oversight.admin import BreachesView, SubProcessorsView

    return [BreachesView(name="Breaches", endpoint="breaches", url="/admin/breaches"),
            SubProcessorsView(name="Sub-processors", endpoint="sub_processors", url="/admin/sub-processors")]


@hookimpl
def portal_register_jobs(app: Flask, connectors: Mapping[str, Any]) -> list[JobSpec]:
    """Check every morning, once the previous day's extracts had their chance, for two missed days in a row (R22)."""
    from portal.oversight import freshness

    return [JobSpec(FRESHNESS_CHECK, freshness.check, "cron", {"hour": 7, "minute": 30}, kind="housekeeping")]
