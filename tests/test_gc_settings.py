"""The processes that run extracts start with the collector tuned (issue 19); test processes keep CPython's defaults."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from portal.gc_settings import OLDER_THRESHOLDS, YOUNG_THRESHOLD

ROOT = Path(__file__).resolve().parent.parent

# Each builds its process's app the way its entry point does, then prints the collector's state.
ENTRY_POINTS = {
    "wsgi.py": "import runpy; runpy.run_path('wsgi.py')",
    "portal serve": "import portal.ops.wsgi",
    "celery worker": ("import portal.tasks; from celery.signals import worker_init; "
                      "portal.tasks.app; worker_init.send(sender=None)"),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_started_process_freezes_its_start_up_and_collects_young_objects_less_often(entry, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    env.update(PORTAL_INSTANCE_PATH=str(tmp_path), PORTAL_DATABASE_URL=f"sqlite:///{tmp_path / 'portal.db'}",
               PORTAL_DATA_LOCATION="UK", PORTAL_SECRET_KEY="gc-settings-test-secret-key-0123456789")
    code = ("import gc, json; before = gc.get_threshold(); " + ENTRY_POINTS[entry]
            + "; print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count()]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, after, frozen = json.loads(done.stdout.strip().splitlines()[-1])
    assert before == [700, 10, 10]
    assert after == [YOUNG_THRESHOLD, *OLDER_THRESHOLDS]
    # What start-up built (the app, SQLAlchemy's metadata, the plugins) is out of every collection.
    assert frozen > 10_000


def test_importing_the_worker_modules_changes_nothing():
    # Nothing happens at import: a test process that imports them keeps the defaults.
    import portal.gc_settings  # noqa: F401
    import portal.tasks  # noqa: F401

    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0
