"""Default plugin: support staff's admin views for products, the matrix, API credentials and product authorisations."""
from __future__ import annotations

from typing import Any

from flask import Flask

from portal import deletions
from portal.api.admin import api_views
from portal.jobs import JobSpec
from portal.plugins import hookimpl


@hookimpl
def portal_admin_views(app: Flask) -> list[Any]:
    """Return the product API's admin views."""
    return api_views()


@hookimpl
def portal_register_jobs(app: Flask, connectors: Any) -> list[Any]:
    """R42: hourly, email the school and support staff about newly overdue deletion acknowledgements."""
    return [JobSpec("deletions:overdue-alerts", deletions.send_overdue_alerts, "interval", {"hours": 1}, kind="housekeeping")]
