"""A threaded Celery worker's runs get the database connections they need at once (docs/scaling.md)."""
from __future__ import annotations

import pytest

from portal.extensions import db
from portal.jobs.celery import CONNECTIONS_PER_RUN, pool_shortfall
from portal.testing.databases import POSTGRES_TEST_CONNECT_ARGS

# The thread count docs/scaling.md recommends for a worker process.
RECOMMENDED_THREADS = 12


def _postgres_app(backend, make_app, **options):
    if backend != "postgresql":
        pytest.skip("the connection pool of a threaded worker is PostgreSQL's (SQLite has one writer)")
    return make_app(SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True, "connect_args": POSTGRES_TEST_CONNECT_ARGS, **options})


def test_every_run_of_a_recommended_threaded_worker_gets_its_connections_at_once(backend, make_app):
    # A second's wait instead of 30: a pool without room fails here at once, as a run would after 30 s.
    app = _postgres_app(backend, make_app, pool_timeout=1)
    held = []
    with app.app_context():
        try:
            for _ in range(CONNECTIONS_PER_RUN * RECOMMENDED_THREADS):
                held.append(db.engine.connect())
        finally:
            for connection in held:
                connection.close()
        assert len(held) == CONNECTIONS_PER_RUN * RECOMMENDED_THREADS
    assert pool_shortfall(app, "threads", RECOMMENDED_THREADS) is None


def test_a_worker_whose_pool_is_too_small_for_its_threads_says_so_at_start(backend, make_app):
    app = _postgres_app(backend, make_app, pool_size=4, max_overflow=6)
    problem = pool_shortfall(app, "threads", 8)
    assert problem is not None
    assert "24 database connections" in problem and "allows 10" in problem and "max_overflow to at least 20" in problem
    # Processes of a prefork pool each have a pool of their own; a small pool for few threads is enough.
    assert pool_shortfall(app, "prefork", 8) is None
    assert pool_shortfall(app, "threads", 3) is None
