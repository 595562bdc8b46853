"""The connectors' HTTP session: the environment's outbound proxy honoured (NO_PROXY too), .netrc never replacing a token."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from portal.connectors import ProviderSession
from portal.sandbox.server import SandboxServer

PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                   "NO_PROXY", "no_proxy")


class _Echo(SandboxServer):
    """Answers every request with the host it was asked for, its path and its Authorization header."""

    def wsgi_app(self):
        def app(environ, start_response):
            body = json.dumps({"host": environ.get("HTTP_HOST"), "path": environ.get("PATH_INFO"),
                               "authorization": environ.get("HTTP_AUTHORIZATION")}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]

        return app


@pytest.fixture
def echo(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with _Echo() as server:
        yield server


class _Proxy(BaseHTTPRequestHandler):
    """A forward proxy's front: answers with the absolute URL it was asked to fetch (a proxy's request line)."""

    def do_GET(self):  # noqa: N802 - the stdlib's name
        body = json.dumps({"url": self.path, "host": self.headers.get("Host")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_provider_request_goes_through_the_proxy_the_environment_names(echo, monkeypatch):
    # An IT team whose network lets the portal out only through a proxy sets HTTPS_PROXY/HTTP_PROXY, as for any tool.
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        session = ProviderSession()
        for path in ("/v1.0/schools", "/v1.0/schools/2"):  # the second request uses what the first read
            answer = session.get(f"http://provider.invalid{path}", timeout=10).json()
            assert answer == {"url": f"http://provider.invalid{path}", "host": "provider.invalid"}
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_no_proxy_sends_a_host_directly(echo, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    answer = ProviderSession().get(f"{echo.origin}/v1.0/schools", timeout=10).json()
    assert answer["path"] == "/v1.0/schools"
    # Without NO_PROXY the same request goes to the dead proxy and fails.
    monkeypatch.delenv("NO_PROXY")
    with pytest.raises(requests.ConnectionError):
        ProviderSession().get(f"{echo.origin}/v1.0/schools", timeout=10)


def test_a_netrc_entry_for_the_provider_never_replaces_the_connectors_token(echo, monkeypatch, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {echo.host} login someone password something\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    # A plain requests Session sends the .netrc login instead of the token: what this session exists to avoid.
    plain = requests.Session()
    assert plain.get(echo.origin, headers={"Authorization": "Bearer T"}, timeout=10).json()["authorization"] != "Bearer T"
    session = ProviderSession()
    session.headers["Authorization"] = "Bearer T"
    assert session.get(echo.origin, timeout=10).json()["authorization"] == "Bearer T"
