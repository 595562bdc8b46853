"""Helpers for extract and store tests: an app with the fake MIS, an authorised school, store snapshots."""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable

import pytest
from sqlalchemy import select

from portal.connectors import Record
from portal.extensions import db
from portal.models import Connection, ConnectionState, Feature, Product, ProductAuthorisation
from portal.models.mis import STORE_MODELS
from tests.plugins import fake_mis

FAKE_PLUGINS = ["tests.plugins.fake_connector", "tests.plugins.fake_mis"]
ENABLED = ["fake", "fakemis"]
# Columns that legitimately differ between two stores holding the same data.
VOLATILE = {"id", "school_id", "connection_id", "pupil_id", "extracted_at", "seen_run_id"}


def extract_config(**overrides: Any) -> dict[str, Any]:
    """Return config overrides that load the fake MIS connector."""
    return {"PLUGINS": FAKE_PLUGINS, "ENABLED_CONNECTORS": ENABLED, "EXTRACT_BATCH_SIZE": 10, **overrides}


@pytest.fixture
def xapp(make_app):
    """An app with the fake MIS connector enabled, app context pushed."""
    fake_mis.CALLS.clear()
    fake_mis.HOOKS.clear()
    app = make_app(**extract_config())
    with app.app_context():
        yield app


def authorise_all_features(school) -> Product:
    """Authorise, for the school, a product providing every matrix feature (so every category is granted)."""
    product = Product(name=f"Everything {school.id}", purpose="test")
    product.features = list(db.session.execute(select(Feature)).scalars())
    db.session.add(product)
    db.session.flush()
    db.session.add(ProductAuthorisation(school_id=school.id, product_id=product.id))
    db.session.flush()
    return product


def connect(school, world_path, connector: str = "fakemis", **settings: Any) -> Connection:
    """Return an approved connection of the school to the fake MIS serving the world file."""
    conn = Connection(
        school_id=school.id,
        connector=connector,
        state=ConnectionState.approved,
        settings_encrypted=json.dumps({"world": str(world_path), **settings}),
    )
    db.session.add(conn)
    db.session.commit()
    return conn


def set_settings(conn: Connection, **settings: Any) -> None:
    """Change the connection's own settings (faults, page size)."""
    current = json.loads(conn.settings_encrypted or "{}")
    current.update(settings)
    conn.settings_encrypted = json.dumps(current)
    db.session.commit()


def committed_position(run) -> tuple[str, str | None]:
    """Where a run stopped mid-way resumes: its first category not completed, at the checkpoint it committed."""
    stats = run.stats
    category = next(c for c in run.params["categories"] if c not in stats.get("completed", []))
    checkpoint = stats.get("checkpoint") or {}
    return category, checkpoint.get("cursor") if checkpoint.get("category") == category else None


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Wait until ``condition()`` holds (another thread's commit, say); fail naming ``what`` if it never does."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {timeout} s for {what}"
        pause.wait(0.01)


def snapshot(connection_id: int) -> dict[str, dict[str, dict[str, Any]]]:
    """Return the connection's store: kind -> external id -> row values (decrypted, volatile columns left out)."""
    out = {}
    for kind, model in STORE_MODELS.items():
        table = model.__table__
        rows = db.session.execute(select(table).where(table.c.connection_id == connection_id)).mappings()
        out[kind] = {r["external_id"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in rows}
    return out


def live(snap: dict, kind: str) -> set[str]:
    """Return the external ids of a kind that are not tombstoned."""
    return {ext for ext, row in snap[kind].items() if row["deleted_at"] is None}


def assert_matches_source(snap: dict, records: list[Record]) -> int:
    """Assert every source record is in the store, live, field by field; return how many were checked."""
    checked = 0
    for record in records:
        row = snap[record.kind].get(record.external_id)
        assert row is not None, (record.kind, record.external_id)
        assert row["deleted_at"] is None
        assert row["provider_updated_at"] == record.updated_at
        assert row["data_type"] == "customer"
        assert row["category"] == record.category
        for name, value in record.values().items():
            if name in ("external_id", "updated_at", "absent"):
                continue
            stored = row[name]
            expected = list(value) if isinstance(value, tuple) else value
            assert stored == expected, (record.kind, record.external_id, name)
        checked += 1
    stored_total = sum(len(live(snap, kind)) for kind in snap)
    assert stored_total == checked
    return checked
