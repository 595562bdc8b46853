"""Garbage-collector settings for the long-running processes that run extracts (workers, the scheduler, the web)."""
from __future__ import annotations

import gc

# CPython collects its youngest generation every 700 net allocations of container objects. A run
# decodes provider pages into tens of thousands of dicts and lists that reference counting frees
# anyway, so most of those collections find nothing; every tenth of a tenth is a full collection
# that walks every object the process holds (about 240,000 in a worker). 20,000 keeps cyclic
# garbage bounded (a few megabytes) at a twentieth of the collections.
YOUNG_THRESHOLD = 20_000
OLDER_THRESHOLDS = (20, 20)


def tune_for_long_runs() -> None:
    """Leave what start-up built out of every collection, and collect young objects less often.

    Called once a process has started and before it runs anything (a Celery worker's worker_init,
    wsgi.py, `flask portal scheduler`); never at import, and never in a test process, whose start-up
    objects (earlier apps) would then never be collected. A national worker spent about a tenth of
    its CPU in the collector (issue 19, docs/performance.md); frozen objects still go by reference
    counting, only a cycle among them outlives the process's need for it.
    """
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
