"""Real services for the Celery tests: a private redis-server, `celery worker` processes, a timed Wonde sandbox."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from portal.testing.databases import SERVICE_UNAVAILABLE, TEST_ENCRYPTION_KEY, TEST_SECRET_KEY

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_SECONDS = 120
# Fast retries against the sandbox: these tests assert what ran, not how long the client waited.
FAST = {"backoff_base": 0.01, "backoff_cap": 0.02, "retry_after_cap": 0.02, "max_retries": 3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_services() -> None:
    """Skip (as a missing service, which CI counts as a failure) when redis-server or celery is absent."""
    if shutil.which("redis-server") is None:
        pytest.skip(f"{SERVICE_UNAVAILABLE} redis-server is not installed")
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        pytest.skip(f"{SERVICE_UNAVAILABLE} celery[redis] is not installed (pip install -e '.[celery]')")


class RedisServer:
    """redis-server on a free port, without persistence; stop() and start() again keep the port."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=out, stderr=subprocess.STDOUT,
            )
        wait_for(self._answers, "redis-server to answer")
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class Worker:
    """`celery -A portal.tasks worker` in a process group of its own, configured by PORTAL_* variables."""

    def __init__(self, name: str, env: dict[str, str], log: Path, concurrency: int = 2) -> None:
        self.name, self.log = name, log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "portal.tasks", "worker", "-n", f"{name}@%h",
                 "-c", str(concurrency), "--pool", "prefork", "--loglevel", "INFO",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text()

    def wait_ready(self) -> None:
        wait_for(lambda: "ready." in self.output() or self.proc.poll() is not None, f"worker {self.name} to start")
        assert self.proc.poll() is None, f"worker {self.name} exited:\n{self.output()[-3000:]}"

    def owns(self, pid: int) -> bool:
        """Whether a process (a pool child) belongs to this worker."""
        try:
            return os.getpgid(pid) == self.proc.pid
        except ProcessLookupError:
            return False

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once, like a machine dying."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def worker_env(database_url: str, broker_url: str, wonde_settings: dict[str, Any], instance: Path, **extra: Any) -> dict[str, str]:
    """The PORTAL_* variables a worker reads, as a deployment would set them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    settings = {
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "INSTANCE_PATH": str(instance),
        "PLUGINS_LOAD_ENTRYPOINTS": False,
        "PLUGINS": ["portal_wonde.plugin"],
        "ENABLED_CONNECTORS": ["wonde"],
        "CONNECTORS": {"wonde": wonde_settings},
        "EXECUTOR": "celery",
        "CELERY": {"broker_url": broker_url},
        "JOB_LEASE_SECONDS": 4,
        "JOB_HEARTBEAT_SECONDS": 1,
        "DATA_LOCATION": "UK",
        "ARGON2_PROFILE": "CHEAPEST",
        **extra,
    }
    for key, value in settings.items():
        env[f"PORTAL_{key}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def wait_for(condition, what: str, *, every: float = 0.2, tick=None) -> None:
    """Poll until ``condition()`` holds (calling ``tick`` between polls), failing after DEADLINE_SECONDS."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            describe = getattr(condition, "describe", None)
            pytest.fail(f"timed out waiting for {what}" + (f" ({describe()})" if describe else ""))
        if tick is not None:
            tick()
        time.sleep(every)


def timed_sandbox_class():
    """A WondeSandbox whose request log also records when each request started and ended."""
    from portal_wonde.sandbox import WondeSandbox

    class TimedSandbox(WondeSandbox):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.timings: list[tuple[str, float, float]] = []
            self._timing_lock = threading.Lock()

        def wsgi(self, environ, start_response):
            began = time.monotonic()
            body = list(super().wsgi(environ, start_response))
            with self._timing_lock:
                self.timings.append((environ.get("PATH_INFO", ""), began, time.monotonic()))
            return body

    return TimedSandbox


def add_connections(schools, connector: str = "wonde") -> list[int]:
    """Create each school with an approved connection, under one LA and one product needing every category."""
    from portal.extensions import db
    from portal.models import Connection, ConnectionState, Feature, Organisation, OrgKind, Product, ProductAuthorisation

    product = Product(name="All features", purpose="test")
    product.features = list(db.session.execute(select(Feature)).scalars())
    db.session.add(product)
    las: dict[str, Organisation] = {}
    orgs = []
    for school in schools:
        if school.la_code not in las:
            las[school.la_code] = Organisation(kind=OrgKind.local_authority, name=f"LA {school.la_code}", la_code=school.la_code)
            db.session.add(las[school.la_code])
            db.session.flush()
        org = Organisation(kind=OrgKind.school, name=school.name, urn=school.urn, dfe_number=school.dfe_number,
                           local_authority_id=las[school.la_code].id)
        orgs.append(org)
    db.session.add_all(orgs)
    db.session.flush()
    connections = []
    for org in orgs:
        db.session.add(ProductAuthorisation(school_id=org.id, product_id=product.id))
        connections.append(Connection(school_id=org.id, connector=connector, state=ConnectionState.approved,
                                      settings_encrypted=json.dumps({})))
    db.session.add_all(connections)
    db.session.commit()
    return [c.id for c in connections]


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)
