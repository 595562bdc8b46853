"""Default plugin of the lifecycle pages: support operations admin view, alerts after extracts, access polling jobs."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from portal import alerts, lifecycle
from portal.jobs import JobSpec
from portal.models import ConnectionState, RunStatus
from portal.plugins import hookimpl
from portal.school.admin_views import OperationsView

log = logging.getLogger(__name__)

POLL_ACCESS = "lifecycle:poll-access"
PROVIDER_REVOKES = "lifecycle:provider-revokes"


@hookimpl
def portal_admin_views(app: Flask) -> list[Any]:
    """The support operations page (failing first, held runs, run now, resync, pause/resume)."""
    return [OperationsView(name="Operations", endpoint="operations", url="/admin/operations")]


@hookimpl
def portal_extract_finished(run: Any) -> None:
    """Email the school when a run needs it; a successful run clears a failing connection."""
    connection = run.connection
    if connection is not None and run.status == RunStatus.succeeded and connection.state == ConnectionState.failing:
        lifecycle.mark_healthy(connection)
    alerts.extract_finished(run)


@hookimpl
def portal_register_jobs(app: Flask, connectors: Mapping[str, Any]) -> list[JobSpec]:
    """Poll providers for requested/pending connections (when no webhook comes) and retry undelivered revokes (R4)."""
    return [
        JobSpec(POLL_ACCESS, lifecycle.poll_pending_connections, "interval", {"minutes": 15}, kind="housekeeping"),
        JobSpec(PROVIDER_REVOKES, lifecycle.retry_provider_revokes, "interval", {"hours": 1}, kind="housekeeping"),
    ]
