"""The base of every provider sandbox: a WSGI app served on a thread, a request log and fault injection.

Served by cheroot, which keeps a client's connection open between requests (HTTP/1.1 keep-alive), as
providers' servers do: werkzeug's development server closes every connection, so each request cost a
new connection and a new server thread.

A connector package's sandbox subclasses ``SandboxServer``, returns its WSGI app from ``wsgi_app()``,
calls ``log_request()`` and ``take_fault()`` as a request comes in, and names its own kinds of fault
(a subclass of ``Fault``). Tests, the conformance kit, the demo and ``make run`` then drive every
sandbox the same way: ``start()``/``stop()`` (or ``with``), ``add_fault()``, ``requests()``, ``count()``.
Nothing starts at import.
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cheroot import wsgi as cheroot_wsgi
from werkzeug.wrappers import Request

__all__ = ["SERVER_THREADS", "Fault", "LoggedRequest", "SandboxServer"]

#: Requests a sandbox answers at once (werkzeug's server had a thread per request, without a limit).
SERVER_THREADS = 32


@dataclass(kw_only=True)
class Fault:
    """A misbehaviour injected into the requests whose path contains ``match`` (case-insensitive).

    The first ``skip`` matching requests (of ``method``, if given) pass; the fault then fires ``times``
    times (None: for ever). ``fired`` counts how often it did. A sandbox's subclass says what it does.
    """

    match: str = ""
    method: str | None = None
    skip: int = 0
    times: int | None = 1
    fired: int = 0
    seen: int = 0

    def applies(self, method: str, path: str) -> bool:
        """Whether this request meets the fault (counting it as seen, and as fired if it does)."""
        if self.match.lower() not in path.lower() or (self.method and self.method != method):
            return False
        self.seen += 1
        if self.seen <= self.skip or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


@dataclass
class LoggedRequest:
    """One request the sandbox answered: what a test asserts about what the connector asked."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int = 0
    authorization: str = field(default="", repr=False)
    #: The client's end of the connection ("host:port"): requests sent over one kept-alive connection share it.
    peer: str = ""

    def param(self, name: str) -> str | None:
        """The last value of a query parameter, its name matched case-insensitively (XoD's are)."""
        wanted = name.lower()
        values = [v for key, vs in self.query.items() if key.lower() == wanted for v in vs]
        return values[-1] if values else None


class _Gateway(cheroot_wsgi.Gateway_10):
    """Cheroot's WSGI gateway, plus what a sandbox needs of its answers' headers."""

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        # An answer that says "Connection: close" (a fault that breaks the connection mid-answer) ends
        # the connection after it, as a provider's server would; others keep it open for the next request.
        if any(k.lower() == "connection" and v.lower() == "close" for k, v in headers):
            self.req.close_connection = True
        # The Date header: the sandbox's own clock when it has one (a provider whose clock is not ours).
        own = self.req.server.sandbox_date()
        if own and not any(k.lower() == "date" for k, _ in headers):
            headers = [*headers, ("Date", own)]
        return super().start_response(status, headers, exc_info)


class _Server(cheroot_wsgi.Server):
    """Cheroot's WSGI server, its port reusable at once by a sandbox started again (as werkzeug's was)."""

    @classmethod
    def prepare_socket(cls, bind_addr, family, type, proto, nodelay, ssl_adapter, reuse_port=False):  # noqa: A002
        sock = super().prepare_socket(bind_addr, family, type, proto, nodelay, ssl_adapter, reuse_port)
        # Cheroot leaves SO_REUSEADDR off for port 0, and the connections it then accepts inherit that:
        # one a client still holds open would keep a restart on the same port from binding.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return sock


class SandboxServer:
    """A provider sandbox on 127.0.0.1: ``start()`` serves it on a thread (port 0: a free one), ``stop()`` ends it."""

    #: The kind of fault ``add_fault`` builds; subclasses name theirs.
    fault_type: ClassVar[type[Fault]] = Fault
    #: The serving thread's name (shows in stack dumps).
    thread_name: ClassVar[str] = "sandbox"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.faults: list[Fault] = []
        self.log: list[LoggedRequest] = []
        self._lock = threading.RLock()
        self._server: cheroot_wsgi.Server | None = None
        self._thread: threading.Thread | None = None

    def wsgi_app(self) -> Callable[[dict[str, Any], Callable], Iterable[bytes]]:
        """The WSGI application this sandbox serves."""
        raise NotImplementedError

    # ------------------------------------------------------------ lifecycle

    def start(self, host: str | None = None, port: int | None = None):
        """Bind the port and serve on a background thread; returns the sandbox (already running: unchanged)."""
        if self._server is not None:
            return self
        self.host = host or self.host
        self.port = self.port if port is None else port
        # numthreads: answers in progress at once. Cheroot's pool does not grow, and a delayed answer (the
        # provider latency the national bench plays) holds its thread: 8 capped that bench's 16 run threads
        # at 100 requests a second. timeout: an idle kept-alive connection is closed after that many
        # seconds (clients open another); shutdown_timeout: stop() waits at most that long for requests in
        # progress (a delayed answer).
        server = _Server((self.host, self.port), self.wsgi_app(), numthreads=SERVER_THREADS, timeout=10,
                         shutdown_timeout=1)
        server.gateway = _Gateway
        server.expiration_interval = 0.05  # how long its loop waits between looks at stop(): stops quickly
        server.sandbox_date = self.date_header  # type: ignore[attr-defined]
        server.prepare()
        self._server = server
        self.port = server.bind_addr[1]
        self._thread = threading.Thread(target=server.serve, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def date_header(self) -> str | None:
        """The answers' Date header, or None for the real time (a sandbox with its own clock overrides this)."""
        return None

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is None:
            return
        self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"

    def serve_until_interrupted(self, banner: Iterable[str] = (), echo: Callable[[str], Any] = print) -> None:
        """Serve in the foreground (``flask portal sandbox``, ``make run``) until Ctrl-C or SIGTERM's KeyboardInterrupt."""
        self.start()
        for line in banner:
            echo(line)
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # ------------------------------------------------------------ request log

    def log_request(self, request: Request) -> LoggedRequest:
        """Record an incoming request (the subclass sets ``status`` once it has answered)."""
        entry = LoggedRequest(request.method, request.path, {k: request.args.getlist(k) for k in request.args},
                              authorization=request.headers.get("Authorization", ""),
                              peer=f"{request.environ.get('REMOTE_ADDR', '')}:{request.environ.get('REMOTE_PORT', '')}")
        with self._lock:
            self.log.append(entry)
        return entry

    def requests(self, path_contains: str = "", method: str | None = None) -> list[LoggedRequest]:
        """The logged requests whose path contains the text (case-insensitive), oldest first."""
        wanted = path_contains.lower()
        with self._lock:
            return [r for r in self.log if wanted in r.path.lower() and (method is None or r.method == method)]

    def count(self, path_contains: str = "", method: str | None = None) -> int:
        """How many requests reached the sandbox whose path contains the text (case-insensitive)."""
        return len(self.requests(path_contains, method))

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    # ------------------------------------------------------------ faults

    def add_fault(self, **fields: Any) -> Fault:
        """Inject a fault (a ``fault_type``); returns it so a test can read ``fired``."""
        fault = self.fault_type(**fields)
        with self._lock:
            self.faults.append(fault)
        return fault

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The first injected fault this request meets, if any."""
        with self._lock:
            return next((f for f in self.faults if f.applies(method, path)), None)

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()
