"""Jobs are data: a JobSpec names a stable id, the function to run and its trigger."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["JobSpec"]


@dataclass(frozen=True)
class JobSpec:
    """A scheduled job. ``func`` is a plain function run inside an app context with ``kwargs``.

    ``id`` is stable and readable (``extract:12``, ``retention:sweep``): it keys the claimed
    run rows, so two processes firing the same job at the same time run it once.

    ``trigger``/``trigger_args`` are APScheduler's ("cron" with hour=2, "interval" with
    minutes=5...). Every process must compute the same fire times, so ``jitter`` is refused and
    interval triggers are anchored to a fixed start date unless one is given.

    If ``func`` accepts a ``run_id`` argument it is given the id of the claimed JobRun row and
    may finish that run itself (as portal.extract.run_extract does); otherwise the runner
    finishes it from the return value (a dict becomes the run's stats) or the exception.

    ``claim=False`` is for housekeeping that must run in *every* scheduling process (such as
    re-syncing that process's own job list): no run row is claimed or recorded.
    """

    id: str
    func: Callable[..., Any]
    trigger: str = "cron"
    trigger_args: Mapping[str, Any] = field(default_factory=dict)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "job"
    connection_id: int | None = None
    claim: bool = True
