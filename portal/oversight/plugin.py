"""Default plugin of the oversight area: the breach and sub-processor admin pages, the daily freshness check (R22) and
the destruction of the government data key after the DfE agreement ends (R28)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from portal.jobs import JobSpec
from portal.oversight import freshness, government_key
from portal.oversight.admin import BreachesView, SubProcessorsView
from portal.plugins import hookimpl

FRESHNESS_CHECK = "oversight:freshness"
GOVERNMENT_KEY = "oversight:government-key"


@hookimpl
def portal_admin_views(app: Flask) -> list[Any]:
    return [BreachesView(name="Breaches", endpoint="breaches", url="/admin/breaches"),
            SubProcessorsView(name="Sub-processors", endpoint="sub_processors", url="/admin/sub-processors")]


@hookimpl
def portal_register_jobs(app: Flask, connectors: Mapping[str, Any]) -> list[JobSpec]:
    """Check every morning, once the previous day's extracts had their chance, for two missed days in a row (R22)."""
    return [JobSpec(FRESHNESS_CHECK, freshness.check, "cron", {"hour": 7, "minute": 30}, kind="housekeeping"),
            # R28: after the sweep of the same night, so government rows go first and then every copy becomes unreadable.
            JobSpec(GOVERNMENT_KEY, government_key.destroy_if_agreement_ended, "cron", {"hour": 3, "minute": 0},
                    kind="housekeeping")]
