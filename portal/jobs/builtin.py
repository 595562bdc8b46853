"""Default plugin: the core's own scheduled jobs, declared through portal_register_jobs."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from portal.jobs import JobSpec
from portal.plugins import hookimpl


@hookimpl
def portal_register_jobs(app: Flask, connectors: Mapping[str, Any]) -> list[JobSpec]:
    """Declare the core jobs; extract and retention jobs join as those engines land."""
    return []
