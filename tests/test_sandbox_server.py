"""The provider sandboxes' HTTP server: many answers in progress at once, as a provider's server gives."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import requests

from portal.sandbox.server import SandboxServer


class _Gathering(SandboxServer):
    """Answers only once ``expected`` requests are being answered together (a barrier, not a timer)."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(expected, timeout=10)

    def wsgi_app(self):
        def app(environ, start_response):
            try:
                self.barrier.wait()
                status = "200 OK"
            except threading.BrokenBarrierError:
                status = "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [b"ok"]

        return app


def test_a_sandbox_answers_as_many_slow_requests_at_once_as_the_national_bench_sends():
    # 2 worker processes x 8 run threads, each waiting on a delayed answer: all must be in progress together.
    wanted = 16
    with _Gathering(wanted) as sandbox, ThreadPoolExecutor(wanted) as pool:
        url = f"http://{sandbox.host}:{sandbox.port}/"
        statuses = list(pool.map(lambda _: requests.get(url, timeout=20).status_code, range(wanted)))
    assert statuses == [200] * wanted
