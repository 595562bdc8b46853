"""The in-process executor (EXECUTOR "inprocess"): claimed runs execute in the process that fired them.

A firing is claimed as ``running`` and its body runs at once in the scheduler's thread. Runs
queued for later (support's resync, the R49 resync) and runs whose process died are started by
the housekeeping job jobs:recover in whichever scheduling process claims them first.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import current_app

from portal.extract import run_extract
from portal.jobs import JobSpec
from portal.jobs.builtin import extract_specs
from portal.jobs.claims import (
    claim_run,
    finish,
    owner_id,
    queued_extracts,
    request_extract,
    start_queued,
    take_over_lapsed,
)
from portal.jobs.runner import execute
from portal.jobs.scheduler import registry
from portal.models import ErrorKind, JobRun, RunStatus

__all__ = ["InProcessExecutor"]

log = logging.getLogger(__name__)


class InProcessExecutor:
    """Runs every claimed run in this process; the Executor of a single-machine deployment."""

    name = "inprocess"
    # One process runs everything: a provider's rate limit can live in this process's memory.
    shared = False

    def submit(self, spec: JobSpec, scheduled_for: datetime, *, owner: str) -> JobRun | None:
        """Claim one firing as running and run its body here; None when another process has it."""
        run = claim_run(spec.id, scheduled_for, kind=spec.kind, connection_id=spec.connection_id, owner=owner)
        if run is None:
            log.info("job %s at %s already claimed by another process; skipped", spec.id, scheduled_for.isoformat())
            return None
        log.info("job %s at %s claimed as run %s", spec.id, scheduled_for.isoformat(), run.id)
        return execute(spec, run)

    def queue_extract(self, connection_id: int, *, owner: str, mode: str = "incremental",
                      categories: list[str] | None = None, **params: Any) -> JobRun | None:
        """Claim an extract as queued; a scheduling process's jobs:recover starts it. None when claimed already."""
        run = request_extract(connection_id, owner=owner, mode=mode, categories=categories, **params)
        if run is not None:
            log.info("extract of connection %s queued as run %s (%s)", connection_id, run.id, mode)
        return run

    def extract_now(self, connection_id: int, *, mode: str = "incremental",
                    categories: list[str] | None = None) -> JobRun | None:
        """Run the extract in this process now and return the finished run (ExtractRefused when it may not run)."""
        return run_extract(connection_id, mode=mode, categories=categories)

    def recover(self) -> int:
        """Take over every run whose process died and start queued extracts, and run them to the end here.

        Returns how many runs this process took.
        """
        app = current_app._get_current_object()
        taken = take_over_lapsed(owner_id())
        # Extracts queued to run in-process (R49 resync): started here, one process wins each.
        taken += [run for run in (start_queued(run_id, owner_id()) for run_id in queued_extracts()) if run is not None]
        if not taken:
            return 0
        specs = {**{spec.id: spec for spec in extract_specs(app)}, **registry(app).specs()}
        for run in taken:
            spec = specs.get(run.job_id)
            if spec is None:
                finish(
                    run,
                    RunStatus.failed,
                    error_kind=ErrorKind.internal,
                    error_code="not_declared",
                    error_message="The run was interrupted and its job is no longer scheduled, so it was not resumed.",
                )
                continue
            execute(spec, run)
        return len(taken)
