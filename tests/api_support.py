"""Helpers for the product API tests: products, credentials, connected schools and store rows written through the store."""
from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

from portal import deletions, store
from portal.api import authorisations, credentials
from portal.api.products import register_product
from portal.connectors import Tombstone
from portal.extensions import db
from portal.models import Connection, ConnectionState, JobRun, RunStatus
from portal.models.base import utcnow

MATRIX_PATH = Path(__file__).resolve().parent.parent / "portal" / "data" / "usage-matrix.json"
SENTINEL_NAME = "Zebedee-Sentinel"
SENTINEL_UPN = "A999999999999"


def matrix() -> dict:
    """The usage matrix as shipped (the JSON is authoritative)."""
    return json.loads(MATRIX_PATH.read_text())


_names = iter(range(1, 10_000))


def product(*feature_ids: str, name: str | None = None):
    p = register_product(name or f"Product {next(_names)}", "Analyse school and pupil performance.", list(feature_ids))
    db.session.flush()
    return p


def token_for(p, **kwargs) -> str:
    _, token = credentials.issue(p, **kwargs)
    db.session.commit()
    return token


def connected_school(make, *products, state: ConnectionState = ConnectionState.approved):
    """A school with a live fake connection that authorises the given products."""
    school = make.school()
    connection = Connection(school_id=school.id, connector="fake", state=state)
    db.session.add(connection)
    db.session.flush()
    for p in products:
        authorisations.authorise_product(school, p, None)
    db.session.commit()
    return school, connection


def run_for(connection, status: RunStatus = RunStatus.succeeded) -> JobRun:
    now = utcnow()
    run = JobRun(job_id=f"extract:{connection.id}", kind="extract", scheduled_for=now, connection_id=connection.id,
                 status=status, started_at=now, claimed_at=now)
    db.session.add(run)
    db.session.flush()
    return run


def write(connection, records, run: JobRun | None = None, commit: bool = True) -> JobRun:
    """Write records through the store's Writer, as the extract engine does; tombstones are applied at once."""
    run = run or run_for(connection)
    writer = store.Writer(connection, run.id, full=False)
    for record in records:
        writer.add(record)
    writer.finish()
    if any(isinstance(r, Tombstone) for r in records):
        store.apply_removals(connection, run.id, publish=deletions.publish_provider_deletion)
    if commit:
        db.session.commit()
    return run


def pupils(n: int, prefix: str = "p", **fields):
    from portal.connectors import PupilRecord

    defaults = {"admission_date": date(2020, 9, 1), "year_group": "7"}
    defaults.update(fields)
    return [PupilRecord(external_id=f"{prefix}{i}", legal_forename=f"Pupil{i}", legal_surname="Example", **defaults)
            for i in range(n)]


def tombstone(kind: str, category: str, external_id: str) -> Tombstone:
    return Tombstone(external_id=external_id, record_kind=kind, record_category=category, deleted_at=utcnow())


def get(client, token: str | None, path: str, **params):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(f"/api/v1{path}", headers=headers, query_string=params)


def records_path(feature: str, school_id: int, category: str, record_type: str) -> str:
    return f"/features/{feature}/schools/{school_id}/categories/{category}/{record_type}"


def yesterday() -> date:
    return date.today() - timedelta(days=1)
