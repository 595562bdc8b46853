"""An HTTP client for the Example MIS API: token auth, timeouts, retries with backoff, cursor paging, typed errors."""
from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import requests

from portal.connectors import (
    AccessRefused,
    BadResponse,
    ConnectorError,
    InvalidJson,
    NotFound,
    ProviderUnavailable,
    RateLimited,
    is_loopback_host,
)

__all__ = ["DEFAULT_BASE_URL", "ExampleClient", "format_since"]

DEFAULT_BASE_URL = "https://api.example-mis.invalid/api/v1"
# The hosts the token may be sent to (R61); ``allowed_hosts`` adds more.
ALLOWED_HOSTS = frozenset({"api.example-mis.invalid"})


def format_since(value: datetime) -> str:
    """updated_since is UTC ISO 8601 with a Z."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ExampleClient:
    """Talk to one Example MIS server with one token; knows nothing of the portal's database."""

    def __init__(self, base_url: str, token: str, *, allow_insecure_http: bool = False, allowed_hosts=(),
                 connect_timeout: float = 5.0, read_timeout: float = 30.0, max_retries: int = 4,
                 backoff_base: float = 0.5, backoff_cap: float = 20.0, page_size: int = 200,
                 stats: dict[str, int] | None = None, before_request: Callable[[], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not token:
            raise ConnectorError("No Example MIS token is configured (setting 'token').")
        parts = urlsplit(base_url)
        loopback = is_loopback_host(parts.hostname)
        if parts.scheme != "https" and not (allow_insecure_http and parts.scheme == "http" and loopback):
            raise ConnectorError("The Example MIS base URL must use HTTPS (plain HTTP only to a local test sandbox).")
        if not loopback and (parts.hostname or "") not in ALLOWED_HOSTS | set(allowed_hosts):
            raise ConnectorError(f"The Example MIS host {parts.hostname} is not an allowed host (see allowed_hosts).")
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.max_retries, self.backoff_base, self.backoff_cap = max_retries, backoff_base, backoff_cap
        self.page_size = page_size
        self.stats = stats if stats is not None else {"requests": 0, "retries": 0}
        self.before_request = before_request
        self.sleep = sleep
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Token {token}", "Accept": "application/json"})

    def close(self) -> None:
        self.session.close()

    def _wait(self, attempt: int, retry_after: str | None = None) -> None:
        self.stats["retries"] += 1
        try:
            seconds = float(retry_after) if retry_after is not None else None
        except ValueError:
            seconds = None
        if seconds is None:  # full jitter, so many clients do not retry in step
            seconds = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** attempt))  # nosec B311
        self.sleep(min(seconds, self.backoff_cap))

    def request(self, method: str, path: str, *, endpoint: str, params: Mapping[str, Any] | None = None) -> Any:
        """Send one request with retries; return the decoded JSON or raise a ConnectorError (no personal data)."""
        garbled = 0
        attempt = 0
        while True:
            self.stats["requests"] += 1
            if self.before_request is not None:
                self.before_request()
            last = attempt >= self.max_retries
            try:
                response = self.session.request(method, f"{self.base_url}/{path}", params=params, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if last:
                    raise ProviderUnavailable(f"The Example MIS did not answer for {endpoint} after {attempt + 1} "
                                              f"attempts ({type(exc).__name__}).", endpoint=endpoint) from None
                self._wait(attempt)
                attempt += 1
                continue
            status = response.status_code
            if status in (401, 403):
                error = _error_code(response)
                raise AccessRefused(f"The Example MIS refused {endpoint} (HTTP {status}, {error}).", status=status,
                                    endpoint=endpoint)
            if status == 404:
                raise NotFound(f"The Example MIS has no {endpoint} list (HTTP 404).", endpoint=endpoint)
            if status == 429 or status >= 500:
                if last:
                    kind = RateLimited if status == 429 else ProviderUnavailable
                    raise kind(f"The Example MIS answered HTTP {status} for {endpoint} after {attempt + 1} attempts.",
                               endpoint=endpoint)
                self._wait(attempt, response.headers.get("Retry-After"))
                attempt += 1
                continue
            if status >= 400:
                raise BadResponse(f"The Example MIS answered HTTP {status} for {endpoint}.", endpoint=endpoint)
            try:
                return response.json()
            except ValueError:
                # A garbled answer is asked again once; twice running it is a typed error.
                garbled += 1
                if garbled > 1:
                    raise InvalidJson(f"The Example MIS sent invalid JSON for {endpoint}, twice running.",
                                      endpoint=endpoint) from None
                self._wait(0)

    def pages(self, path: str, *, endpoint: str, params: Mapping[str, Any],
              cursor: str | None = None) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        """Yield (items, next cursor) page by page, from ``cursor`` on; the last page's next cursor is None."""
        while True:
            query = {"limit": self.page_size, **params, **({"cursor": cursor} if cursor else {})}
            body = self.request("GET", path, endpoint=endpoint, params=query)
            items = body.get("items") if isinstance(body, dict) else None
            following = body.get("next_cursor") if isinstance(body, dict) else None
            if not isinstance(items, list) or not (following is None or isinstance(following, str)):
                raise BadResponse(f"The Example MIS answer for {endpoint} is not a page of items.", endpoint=endpoint)
            yield items, following
            if following is None:
                return
            cursor = following


def _error_code(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return "no detail"
    return str(body.get("error") or "no detail") if isinstance(body, dict) else "no detail"
