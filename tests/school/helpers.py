"""Shared set-up for the school-page tests: a school with an admin, connections and runs in given states."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from portal.extensions import db
from portal.models import Connection, ConnectionState, ErrorKind, JobRun, RunStatus


def connection(school, state=ConnectionState.approved, connector="fake") -> Connection:
    conn = Connection(school_id=school.id, connector=connector, state=state, provider_school_id=f"fake-{school.urn}")
    db.session.add(conn)
    db.session.flush()
    return conn


def run(conn, status=RunStatus.succeeded, *, ago=timedelta(hours=1), seconds=90, categories=None, error=None) -> JobRun:
    start = datetime.now(timezone.utc) - ago
    row = JobRun(
        job_id=f"extract:{conn.id}",
        kind="extract",
        scheduled_for=start,
        connection_id=conn.id,
        status=status,
        created_at=start,
        started_at=start if status != RunStatus.queued else None,
        finished_at=start + timedelta(seconds=seconds) if status not in (RunStatus.queued, RunStatus.running) else None,
        stats={"categories": categories or {}},
    )
    if error:
        row.error_kind, row.error_code, row.error_message = error
    db.session.add(row)
    db.session.flush()
    return row


def counts(inserted=0, updated=0, unchanged=0, tombstoned=0) -> dict:
    return {"inserted": inserted, "updated": updated, "unchanged": unchanged, "tombstoned": tombstoned}


SCHOOL_ACTION = (ErrorKind.school_action, "authorisation_lost", "The school has switched off access for this connector in its MIS.")
