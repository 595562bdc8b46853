"""The extract engine: run_extract(connection_id) streams a connector's records into the MIS store."""
from __future__ import annotations

from portal.extract.engine import RunStopped, approve_held_run, held_runs, job_id_for, reject_held_run, run_extract
from portal.extract.plan import ExtractRefused

__all__ = ["ExtractRefused", "RunStopped", "approve_held_run", "held_runs", "job_id_for", "reject_held_run", "run_extract"]
