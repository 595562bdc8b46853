"""Default plugin of the data-subject request module: its admin views and the daily deadline reminders."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from portal.extensions import db
from portal.jobs import JobSpec
from portal.plugins import hookimpl
from portal.privacy.admin import privacy_views
from portal.privacy.register import send_reminders as send

REMINDERS = "dsr:reminders"


def send_reminders() -> dict[str, int]:
    """Email each open request's controller once when its deadline is 7 days away or less (R44)."""
    sent = send()
    db.session.commit()
    return {"sent": sent}


@hookimpl
def portal_register_jobs(app: Flask, connectors: Mapping[str, Any]) -> list[JobSpec]:
    """Remind controllers of approaching deadlines every morning (London time, the scheduler's zone)."""
    return [JobSpec(REMINDERS, send_reminders, "cron", {"hour": 7, "minute": 30}, kind="dsr")]


@hookimpl
def portal_admin_views(app: Flask) -> list[Any]:
    """Return the data-subject request admin views."""
    return privacy_views()
