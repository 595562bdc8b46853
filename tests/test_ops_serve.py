"""Done-means of issue 18: `portal serve` and `portal scheduler` as separate processes on PostgreSQL serve a sign-in
page and run a scheduled job; /readyz turns not-ready while PostgreSQL is unreachable and ready again when it returns.

PostgreSQL stays up for everyone else: the processes reach it through a TCP proxy this test runs, and the
test cuts that proxy.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from portal.models import JobRun, RunStatus
from portal.testing.databases import TEST_ENCRYPTION_KEY, TEST_SECRET_KEY
from tests.celery_support import free_port
from tests.plugins.ticking_jobs import TICK

ROOT = Path(__file__).resolve().parent.parent
PORTAL = Path(sys.executable).with_name("portal")
DEADLINE = 90


class TcpProxy:
    """Forwards a local port to PostgreSQL; cut() refuses and drops every connection, resume() listens again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.resume()

    def resume(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone would leave the port listening.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.sockets.clear()


def wait_for(condition, what):
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            value = condition()
        except (requests.RequestException, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.3)


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@pytest.mark.slow
@pytest.mark.one_backend("postgresql")  # not parametrized onto SQLite only to be skipped there
def test_serve_and_scheduler_processes_on_postgresql_and_readyz_follows_the_database(backend, database_url, tmp_path):
    if backend != "postgresql":
        pytest.skip("the production layout (several processes) runs on PostgreSQL")
    real = make_url(database_url)
    proxy = TcpProxy((real.host or "127.0.0.1", real.port or 5432))
    via_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    web_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_") or k.startswith("PORTAL_TEST_")}
    env.update({
        "PYTHONPATH": str(ROOT),  # the test plugin with a job every second
        "PORTAL_DATABASE_URL": via_proxy, "PORTAL_SECRET_KEY": TEST_SECRET_KEY, "PORTAL_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "PORTAL_DATA_LOCATION": "UK", "PORTAL_INSTANCE_PATH": str(tmp_path / "instance"),
        "PORTAL_PLUGINS": json.dumps(["tests.plugins.ticking_jobs"]), "PORTAL_SCHEDULER_HEARTBEAT_SECONDS": "1",
        "PORTAL_LOG_FORMAT": "json", "PORTAL_ARGON2_PROFILE": "CHEAPEST",
    })
    web_log, scheduler_log = tmp_path / "web.log", tmp_path / "scheduler.log"
    with web_log.open("w") as out:
        web = subprocess.Popen([str(PORTAL), "serve", "--bind", f"127.0.0.1:{web_port}", "--workers", "2", "--threads", "2"],
                               cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    with scheduler_log.open("w") as out:
        scheduler = subprocess.Popen([str(PORTAL), "scheduler"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{web_port}"
    engine = create_engine(database_url)  # the test's own view, not through the proxy
    try:
        wait_for(lambda: requests.get(f"{base}/healthz", timeout=5).status_code == 200, "the web server")
        page = requests.get(f"{base}/login?next=%2Fsecret-query-value", timeout=10)
        assert page.status_code == 200 and 'name="password"' in page.text and "Sign in" in page.text
        request_id = page.headers["X-Request-ID"]

        def ticks() -> int:
            with engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(JobRun.__table__).where(
                    JobRun.__table__.c.job_id == TICK, JobRun.__table__.c.status == RunStatus.succeeded.value)).scalar()

        wait_for(lambda: ticks() >= 2, "the scheduler process to run the scheduled job")
        last: list = []

        def is_ready():
            r = requests.get(f"{base}/readyz", timeout=10)
            last[:] = [r.status_code, r.text]
            return r.status_code == 200 and r.json()["status"] == "ready" and r.json()

        ready = wait_for(is_ready, lambda: f"/readyz ready with the scheduler's heartbeat (last answer: {last})")
        assert set(ready["checks"]) == {"database", "migrations", "scheduler", "ledger"}

        proxy.cut()
        down = wait_for(lambda: (r := requests.get(f"{base}/readyz", timeout=15)).status_code == 503 and r.json(),
                        "/readyz to notice PostgreSQL is unreachable")
        assert down["status"] == "not_ready" and down["checks"]["database"]["ok"] is False
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200  # alive, just not ready

        proxy.resume()
        wait_for(lambda: requests.get(f"{base}/readyz", timeout=15).status_code == 200, "/readyz ready again")
        before = ticks()
        wait_for(lambda: ticks() > before, "the scheduler to run jobs again")

        # Graceful reload (systemctl reload): the master stays, new workers serve.
        web.send_signal(signal.SIGHUP)
        wait_for(lambda: "Handling signal: hup" in web_log.read_text(), "gunicorn to take the reload")
        wait_for(lambda: web_log.read_text().count("Booting worker") >= 4, "new workers after the reload")
        assert wait_for(lambda: requests.get(f"{base}/login", timeout=30).status_code == 200, "pages after the reload")
        assert web.poll() is None
    finally:
        codes = stop(web), stop(scheduler)
        proxy.cut()
        engine.dispose()
    assert codes == (0, 0), web_log.read_text()[-2000:] + scheduler_log.read_text()[-2000:]
    # Access log: JSON lines with the request id and no query string.
    lines = [json.loads(line) for line in web_log.read_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "gunicorn.access"]
    assert any(request_id in line["message"] and '"GET /login HTTP/1.1" 200' in line["message"] for line in access), access[:5]
    assert "secret-query-value" not in web_log.read_text()
    assert "Scheduler running with" in scheduler_log.read_text()
