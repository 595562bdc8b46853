"""WSGI entry point: builds the app and, when SCHEDULER_ENABLED, starts the in-process scheduler."""
from __future__ import annotations

import sys

from portal import create_app
from portal.errors import StartupError
from portal.gc_settings import tune_for_long_runs

try:
    app = create_app()
except StartupError as exc:
    print(f"Error: {exc}", file=sys.stderr)
    sys.exit(2)

tune_for_long_runs()

# Under gunicorn, start the scheduler in the workers (no --preload): threads do not survive a fork.
# Several workers or machines may all schedule; each firing is claimed once in the database.
if app.config["SCHEDULER_ENABLED"]:
    from portal.jobs.scheduler import start_scheduler

    start_scheduler(app)
