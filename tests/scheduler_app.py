"""The app a scheduler-process test runs in a subprocess: `flask --app "tests.scheduler_app:build()" portal scheduler`."""
from __future__ import annotations

import json
import logging
import os

from portal import create_app
from portal.testing.databases import base_config

DATABASE_ENV = "PORTAL_TEST_SCHEDULER_DATABASE_URL"
OVERRIDES_ENV = "PORTAL_TEST_SCHEDULER_OVERRIDES"


def build():
    """Build the test app on the database and with the overrides the parent test passed in."""
    # The parent test reads which process claimed or skipped each firing from stderr.
    logging.basicConfig(level=logging.INFO, format="%(process)d %(name)s %(message)s")
    overrides = json.loads(os.environ.get(OVERRIDES_ENV, "{}"))
    return create_app(base_config(os.environ[DATABASE_ENV], **overrides))
