"""The WSGI application `portal serve` runs in each gunicorn worker (also usable as portal.ops.wsgi:app)."""
from __future__ import annotations

import sys

from portal import create_app
from portal.errors import StartupError
from portal.gc_settings import tune_for_long_runs
from portal.ops.requestlog import configure_logging

try:
    app = create_app()
except StartupError as exc:
    print(f"Error: {exc}", file=sys.stderr)
    sys.exit(2)

configure_logging(app.config["LOG_FORMAT"], app.config["LOG_LEVEL"])
tune_for_long_runs()
# Off by default: `portal scheduler` runs as its own service (docs/deploy.md says why). A one-process
# install may set SCHEDULER_ENABLED here instead; each worker then schedules, and claims keep firings single.
if app.config["SCHEDULER_ENABLED"]:
    from portal.jobs.scheduler import start_scheduler

    start_scheduler(app)
