"""The per-provider requests-per-second limit (PROVIDER_REQUESTS_PER_SECOND) in one process, through the engine and the Wonde client."""
from __future__ import annotations

import bisect
import json
import threading

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.extract import run_extract
from portal.models import Connection, ConnectionState, Feature, Product, ProductAuthorisation, RunStatus
from portal.sandbox import synthetic
from portal.testing.conformance import add_synthetic_school
from tests import celery_support as cs

pytest.importorskip("portal_wonde.sandbox")

RATE = 6


@pytest.fixture
def served(make_app):
    schools = synthetic.generate_schools(2, 81, pupils=5, days=2)
    sandbox = cs.timed_sandbox_class()(schools).start()
    settings = {**sandbox.settings, **cs.FAST}
    app = make_app(PLUGINS=["portal_wonde.plugin"], ENABLED_CONNECTORS=["wonde"], CONNECTORS={"wonde": settings},
                   PROVIDER_REQUESTS_PER_SECOND={"wonde": RATE})
    with app.app_context():
        product = Product(name="All features", purpose="test")
        product.features = list(db.session.execute(select(Feature)).scalars())
        db.session.add(product)
        ids = []
        for school in schools:
            org = add_synthetic_school(school)
            db.session.add(ProductAuthorisation(school_id=org.id, product_id=product.id))
            conn = Connection(school_id=org.id, connector="wonde", state=ConnectionState.approved, settings_encrypted=json.dumps({}))
            db.session.add(conn)
            db.session.flush()
            ids.append(conn.id)
        db.session.commit()
        yield app, sandbox, ids
    sandbox.stop()


def test_two_runs_at_once_in_one_process_share_the_request_rate(served, backend):
    app, sandbox, ids = served
    results: dict[int, str] = {}

    def extract(connection_id: int) -> None:
        with app.app_context():
            results[connection_id] = run_extract(connection_id, mode="full").status.value
            db.session.remove()

    if backend == "sqlite":
        # One writer at a time on SQLite: run the two extracts one after the other.
        for cid in ids:
            extract(cid)
    else:
        threads = [threading.Thread(target=extract, args=(cid,)) for cid in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert set(results.values()) == {RunStatus.succeeded.value}
    starts = sorted(began for _, began, _ in sandbox.timings)
    window = 2.0
    assert len(starts) > RATE * window * 2  # enough requests for the limit to matter
    busiest = max(bisect.bisect_left(starts, t + window) - i for i, t in enumerate(starts))
    assert busiest <= RATE * window + 2, f"{busiest} requests reached Wonde within {window} s (limit {RATE}/s)"


def test_with_redis_unreachable_the_shared_limit_stops_the_run_as_temporary():
    from portal.jobs.limits import RateLimitUnavailable, RedisRate

    gate = RedisRate(f"redis://127.0.0.1:{cs.free_port()}/0", "wonde", 5)
    with pytest.raises(RateLimitUnavailable) as caught:
        gate.wait()
    assert caught.value.kind == "temporary" and "no request was sent" in caught.value.message
