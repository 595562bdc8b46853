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
    """

    id: str
    func: Callable[..., Any]
    trigger: str = "cron"
    trigger_args: Mapping[str, Any] = field(default_factory=dict)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "job"
    connection_id: int | None = None
