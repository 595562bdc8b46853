"""A thin HTTP client for the Wonde API: auth, timeouts, retries, paging and Wonde's datetime objects."""
from __future__ import annotations

import email.utils
import functools
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import requests

from portal.connectors import (
    AccessRefused,
    BadResponse,
    ConnectorError,
    InvalidJson,
    NotFound,
    ProviderSession,
    ProviderUnavailable,
    RateLimited,
    is_loopback_host,
)

__all__ = ["NotFound", "Page", "RegionRefused", "WondeClient", "parse_wonde_date", "parse_wonde_datetime"]

DEFAULT_BASE_URL = "https://api.wonde.com/v1.0"
# The attendance list is most of a school's rows: ask for bigger pages there. Classes and groups come
# with their students included, so a row grows with the group (a year group of a large school is
# hundreds of pupils): smaller pages there keep memory flat as schools grow.
DEFAULT_PAGE_SIZES = {"attendance/session": 1000, "classes": 50, "groups": 10}
USER_AGENT = "mis-portal-wonde/0.1"
# R64: the UK region. Wonde's UK (and "rest of the world") domain; other regional domains hold
# schools whose data lives outside the UK and are never called.
UK_REGION_CODES = frozenset({"GBR", "GB", "UK"})
UK_DOMAIN = "api.wonde.com"
# Hosts the token may be sent to (R61); a deployment adds others with the ``allowed_hosts`` setting.
ALLOWED_HOSTS = frozenset({UK_DOMAIN})


class RegionRefused(ConnectorError):
    """R64: the school's Wonde region is not the UK one, so the portal does not read its data."""

    code = "region_not_uk"
    kind = "school_action"


# ---------------------------------------------------------------- dates


def _zone(name: str | None) -> timezone | ZoneInfo:
    if not name or name.upper() in ("UTC", "Z", "GMT"):
        return timezone.utc
    if name[0] in "+-":  # PHP timezone_type 1: an offset such as "+01:00"
        sign = -1 if name[0] == "-" else 1
        hours, _, minutes = name[1:].partition(":")
        from datetime import timedelta

        return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes or 0)))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # PHP abbreviations (timezone_type 2) such as "BST" are not IANA names; Wonde's UK data is London time.
        return ZoneInfo("Europe/London") if name.upper() in ("BST", "GMT") else timezone.utc


def parse_wonde_datetime(value: Any) -> datetime | None:
    """Return a timezone-aware datetime from a Wonde DateTime object or a date/datetime string (None if blank)."""
    given = _text_and_zone(value)
    return _parse(*given) if given else None


def _text_and_zone(value: Any) -> tuple[str, str | None] | None:
    # The text and zone name of a Wonde date field (None if blank): what the cached parsers are keyed on.
    if value is None or value == "":
        return None
    if type(value) is dict or isinstance(value, Mapping):
        if "data" in value and "date" not in value:
            return _text_and_zone(value["data"])
        text, zone_name = value.get("date"), value.get("timezone")
    elif isinstance(value, str):
        text, zone_name = value, None
    else:
        raise ValueError(f"not a Wonde date: {type(value).__name__}")
    if not text:
        return None
    return str(text), zone_name


@functools.lru_cache(maxsize=8192)
def _parse(text: str, zone_name: str | None) -> datetime:
    # Pages repeat the same few dates (a register day's marks share theirs), so parsing is cached.
    zone = _zone(zone_name)
    text = text.strip().replace("T", " ")
    if text.endswith("Z"):
        text = text[:-1]
    parsed = datetime.fromisoformat(text) if len(text) > 10 else datetime.combine(date.fromisoformat(text), datetime.min.time())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)


@functools.lru_cache(maxsize=8192)
def _parse_day(text: str, zone_name: str | None) -> date:
    return _parse(text, zone_name).date()


def parse_wonde_date(value: Any) -> date | None:
    """Return the calendar date of a Wonde date field, in the zone it was given in (never shifted to UTC)."""
    given = _text_and_zone(value)
    return _parse_day(*given) if given else None


def format_filter_datetime(value: datetime) -> str:
    """Format a datetime for Wonde's updated_after filter: UTC, "YYYY-MM-DD HH:MM:SS"."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def read_key(url: str, endpoint: str, params: Mapping[str, Any]) -> tuple[str, str, str]:
    """The identity of a list's first request: the same key is the same request."""
    return url, endpoint, repr(sorted((str(k), str(v)) for k, v in params.items()))


def _first_answered(asked: Any, send: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a page sender so its first call returns ``asked`` (the first page, already asked for) and later ones send."""
    used = False

    def sender(method: str, url: str, **kwargs: Any) -> Any:
        nonlocal used
        if not used:
            used = True
            return asked
        return send(method, url, **kwargs)

    return sender


# ---------------------------------------------------------------- client


@dataclass(frozen=True)
class Page:
    """One page of a list: its rows, the URL of the next page (None at the end) and its number."""

    items: list[dict[str, Any]]
    next_url: str | None
    number: int
    url: str


class WondeClient:
    """Talk to one Wonde-compatible server with one token. Knows nothing of the portal's database."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str = "",
        *,
        per_page: int = 200,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        retry_after_cap: float = 120.0,
        allow_insecure_http: bool = False,
        allowed_hosts: Iterable[str] = (),
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[float, float], float] | None = None,
        session: requests.Session | None = None,
        stats: dict[str, int] | None = None,
        before_request: Callable[[], None] | None = None,
        page_sizes: Mapping[str, int] | None = None,
        prefetch: bool = True,
    ) -> None:
        if not token:
            raise ConnectorError("No Wonde access token is configured (setting 'token').")
        base_url = base_url.rstrip("/")
        if not base_url.endswith("/v1.0"):
            base_url += "/v1.0"
        parts = urlsplit(base_url)
        if parts.scheme != "https" and not (allow_insecure_http and parts.scheme == "http" and is_loopback_host(parts.hostname)):
            # R61: credentials and pupil data travel over HTTPS only; plain HTTP only to a local sandbox in tests.
            raise ConnectorError("The Wonde base URL must use HTTPS (plain HTTP is allowed only to a local test sandbox).")
        self.allowed_hosts = frozenset(ALLOWED_HOSTS | {h.strip().lower() for h in allowed_hosts if h and h.strip()})
        if not is_loopback_host(parts.hostname) and (parts.hostname or "").lower() not in self.allowed_hosts:
            raise ConnectorError(f"The Wonde base URL's host {parts.hostname} is not an allowed Wonde host "
                                 "(add it to the connector's allowed_hosts setting if it really is Wonde's).")
        self.allow_insecure_http = allow_insecure_http
        self.base_url = base_url
        self.scheme = parts.scheme
        self.host = parts.netloc
        self.per_page = per_page
        # Rows asked for per endpoint where more than ``per_page`` may be accepted (the spec: Wonde caps
        # page size per endpoint, limits unknown). A server that caps lower just sends smaller pages.
        self.page_sizes = dict(DEFAULT_PAGE_SIZES if page_sizes is None else page_sizes)
        self.prefetch = prefetch
        self.timeout = (connect_timeout, read_timeout)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_after_cap = retry_after_cap
        self.sleep = sleep
        self.jitter = jitter or random.uniform
        self.session = session or ProviderSession()
        self.session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json",
                                     "User-Agent": USER_AGENT})
        # Counters shared with the connector's ``stats`` (the engine copies them into the run row).
        self.stats = stats if stats is not None else {}
        self.stats.setdefault("requests", 0)
        self.stats.setdefault("retries", 0)
        # Requests may go from two threads at once (a page fetched ahead while the caller reads the
        # attendance codes a mark needs): the counters and the clock estimate are updated under a lock.
        self._counting = threading.Lock()
        self._school_bases: dict[str, str] = {}
        # Wonde's clock minus ours, a lower bound from the answers' Date headers (see note_clock).
        self.clock_offset: timedelta | None = None
        # Blocks until the portal's shared per-provider rate limit lets one request go (retries too).
        self.before_request = before_request

    def close(self) -> None:
        self.session.close()

    # -- one request

    def _backoff(self, attempt: int) -> float:
        # Full jitter: a random wait up to the capped exponential step, so many clients do not retry in step.
        return self.jitter(0, min(self.backoff_cap, self.backoff_base * (2**attempt)))

    def _retry_after(self, response: requests.Response, attempt: int) -> float:
        header = response.headers.get("Retry-After")
        if header:
            try:
                seconds = float(header)
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(header)
                    seconds = (when - datetime.now(timezone.utc)).total_seconds()
                except (TypeError, ValueError):
                    seconds = self._backoff(attempt)
            return max(0.0, min(seconds, self.retry_after_cap))
        return self._backoff(attempt)

    def request(self, method: str, url: str, *, endpoint: str, page: int | None = None,
                params: Mapping[str, Any] | None = None, json: Any = None) -> Any:
        """Send one request with retries and return the decoded JSON body; raise a ConnectorError on failure."""
        where = f"{endpoint} (page {page})" if page else endpoint
        last_429: float | None = None
        invalid_json = 0
        attempt = -1
        while True:
            attempt += 1
            final = attempt >= self.max_retries
            with self._counting:
                self.stats["requests"] += 1
            if self.before_request is not None:
                self.before_request()
            try:
                response = self.session.request(method, url, params=params, json=json, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if final:
                    raise ProviderUnavailable(
                        f"Wonde did not answer the request for {where} after {attempt + 1} attempts "
                        f"({type(exc).__name__}).", endpoint=endpoint, page=page) from None
                self._wait(self._backoff(attempt))
                continue
            status = response.status_code
            if status in (401, 403):
                # Not a revocation by itself (one permission may be missing, spec §16): the connector
                # confirms with Wonde before anything changes (R5).
                raise AccessRefused(f"Wonde refused the request for {where} (HTTP {status}).",
                                    status=status, endpoint=endpoint, page=page)
            if status == 404:
                raise NotFound(f"Wonde answered HTTP 404 for {where}.", endpoint=endpoint, page=page)
            if status == 429:
                last_429 = self._retry_after(response, attempt)
                if final:
                    raise RateLimited(f"Wonde kept rate-limiting requests for {where} after {attempt + 1} attempts.",
                                      retry_after=last_429, endpoint=endpoint, page=page)
                self._wait(last_429)
                continue
            if status >= 500:
                if final:
                    raise ProviderUnavailable(
                        f"Wonde answered HTTP {status} for {where} after {attempt + 1} attempts.",
                        endpoint=endpoint, page=page)
                # A 503 (maintenance, overload) may say when to come back: honoured like a 429's.
                self._wait(self._retry_after(response, attempt))
                continue
            if status >= 400:
                raise BadResponse(f"Wonde answered HTTP {status} for {where}.", endpoint=endpoint, page=page)
            self.note_clock(response.headers.get("Date"))
            try:
                # orjson: a page of a thousand marks decodes several times faster than with the json module.
                return orjson.loads(response.content)
            except ValueError:
                # A truncated or garbled answer is usually a hiccup: asked again once, then a typed error.
                invalid_json += 1
                if invalid_json > 1:
                    raise InvalidJson(
                        f"Wonde returned invalid JSON for {where}, twice running; nothing from it was used. "
                        "If it keeps happening, report it to Wonde support.", endpoint=endpoint, page=page) from None
                # The one extra try does not use up the retries transport faults have.
                attempt -= 1
                self._wait(self._backoff(0))
                continue

    def note_clock(self, header: str | None, received: datetime | None = None) -> None:
        """Keep the largest lower bound of Wonde's clock minus ours seen in a Date header.

        The header (whole seconds, rounded down) was written before the answer reached us, so
        Date minus our time at receipt never exceeds the true offset: an estimate that errs early.
        """
        if not header:
            return
        try:
            theirs = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            return
        if theirs.tzinfo is None:
            theirs = theirs.replace(tzinfo=timezone.utc)
        offset = theirs - (received or datetime.now(timezone.utc))
        with self._counting:
            if self.clock_offset is None or offset > self.clock_offset:
                self.clock_offset = offset

    def _wait(self, seconds: float) -> None:
        with self._counting:
            self.stats["retries"] += 1
        self.sleep(seconds)

    @property
    def requests_made(self) -> int:
        return self.stats["requests"]

    @property
    def retries(self) -> int:
        return self.stats["retries"]

    # -- documents and lists

    def get_object(self, url: str, *, endpoint: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET a single-object document and return its ``data`` object."""
        body = self.request("GET", url, endpoint=endpoint, params=params)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise BadResponse(f"Wonde's answer for {endpoint} has no 'data' object.", endpoint=endpoint)
        return data

    def _query(self, endpoint: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"per_page": self.page_sizes.get(endpoint, self.per_page), **params}

    def ask_ahead(self, reads: Iterable[tuple[str, str, Mapping[str, Any]]], workers: int) -> dict[tuple[str, str, str], Future]:
        """Ask for the first page of several lists at once, ``workers`` at a time; return each answer's Future.

        ``reads`` are (url, endpoint, params) as ``pages`` takes them; a Future is keyed by ``read_key``
        and handed to ``pages`` as ``asked``, which raises its error when the caller reaches that page,
        as if it had been asked for then. The threads end once the last request is answered.
        """
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wonde-ahead")
        try:
            return {read_key(url, endpoint, params): pool.submit(self.request, "GET", url, endpoint=endpoint, page=1,
                                                                  params=self._query(endpoint, params))
                    for url, endpoint, params in reads}
        finally:
            pool.shutdown(wait=False)  # queued requests still go; nothing waits for them here

    def pages(self, url: str, *, endpoint: str, params: Mapping[str, Any] | None = None,
              first_page: int = 1, asked: Future | None = None) -> Iterator[Page]:
        """Yield the pages of a list one at a time, following ``meta.pagination.next`` to the end.

        ``url`` may be a next-page URL saved from an earlier run; then ``params`` must be None.
        ``asked``: the first page's answer, already asked for (``ask_ahead``).
        """
        query: dict[str, Any] | None = None
        if params is not None:
            query = self._query(endpoint, params)
        if not self.prefetch:
            # Each page is asked for only when the caller reaches it.
            send = functools.partial(functools.partial, self.request)
            if asked is not None:
                send = _first_answered(asked.result, send)
            yield from self._pages(url, endpoint, query, first_page, send)
            return
        # One page ahead: the next page is fetched (and its JSON decoded) in a helper thread while
        # the caller maps and stores this one, so the provider's time and ours overlap. Requests
        # are the same, in the same order; an error surfaces when the caller reaches that page.
        # The first page is asked for in the caller's thread (the caller waits for it either way),
        # so the helper thread starts only for a list with a second page: most reads of a daily
        # incremental run are one page, and a thread started and joined per read was their main cost.
        ahead: ThreadPoolExecutor | None = None
        pending: list[Future] = []
        sent = False

        def fetch(method: str, u: str, **kwargs: Any) -> Future:
            nonlocal ahead, sent
            if not sent:
                sent = True
                if asked is not None:
                    return asked
                done: Future = Future()
                try:
                    done.set_result(self.request(method, u, **kwargs))
                except Exception as exc:  # noqa: BLE001 - raised when the caller reaches the page, as from the thread
                    done.set_exception(exc)
                return done
            if ahead is None:
                ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wonde-page")
            return ahead.submit(self.request, method, u, **kwargs)

        try:
            yield from self._pages(url, endpoint, query, first_page, fetch, pending)
        finally:
            for future in pending:
                future.cancel()
            if ahead is not None:
                ahead.shutdown(wait=True)  # a page already on its way is let finish, as before

    def _pages(self, url: str, endpoint: str, query: dict[str, Any] | None, number: int,
               send: Callable[..., Any], pending: list[Future] | None = None) -> Iterator[Page]:
        # ``send`` returns a Future (fetched ahead) or a call to make when the page is reached.
        body_of = (lambda got: got.result()) if pending is not None else (lambda got: got())
        got = send("GET", url, endpoint=endpoint, page=number, params=query)
        while url:
            if pending is not None:
                pending[:] = [got]
            body = body_of(got)
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise BadResponse(f"Wonde's answer for {endpoint} (page {number}) is not a list in a 'data' key.",
                                  endpoint=endpoint, page=number)
            meta = body.get("meta")
            pagination = meta.get("pagination") if isinstance(meta, dict) else None
            next_url = pagination.get("next") if isinstance(pagination, dict) else None
            if next_url is not None and not isinstance(next_url, str):
                raise BadResponse(f"Wonde's answer for {endpoint} (page {number}) has a malformed next link.",
                                  endpoint=endpoint, page=number)
            current = pagination.get("current_page") if isinstance(pagination, dict) else None
            # The next link is followed verbatim (the spec's rule), but only to the host we were configured with.
            if next_url:
                self._check_host(next_url, endpoint, number)
                got = send("GET", next_url, endpoint=endpoint, page=number + 1, params=None)
            yield Page(body["data"], next_url or None, current if isinstance(current, int) else number, url)
            url = next_url
            number += 1

    def _check_host(self, url: str, endpoint: str, page: int | None = None) -> None:
        parts = urlsplit(url)
        if parts.netloc != self.host and parts.netloc not in {b.split("/")[2] for b in self._school_bases.values()}:
            raise BadResponse(f"Wonde's answer for {endpoint} points to another host; not followed.",
                              endpoint=endpoint, page=page)
        if parts.scheme != self.scheme:
            raise BadResponse(f"Wonde's answer for {endpoint} points to a non-{self.scheme} URL; not followed.",
                              endpoint=endpoint, page=page)

    # -- schools

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def ping(self) -> None:
        """Check that the server answers and accepts the token."""
        self.request("GET", self.base_url, endpoint="root")

    def find_schools(self, listing: str = "all", **filters: str) -> list[dict[str, Any]]:
        """Return the schools in a listing ("all", "approved", "pending", "revoked", "declined") matching the filters."""
        path = "schools" if listing == "approved" else f"schools/{listing}"
        out: list[dict[str, Any]] = []
        for page in self.pages(self.url(path), endpoint=path, params=filters):
            out.extend(page.items)
        return out

    def school(self, school_id: str) -> dict[str, Any]:
        """Return one school's object."""
        return self.get_object(self.url(f"schools/{school_id}"), endpoint="school")

    def school_base(self, school_id: str) -> str:
        """Return ``https://{region domain}/v1.0/schools/{id}`` for a school, from its region (cached)."""
        base = self._school_bases.get(school_id)
        if base is None:
            domain = self.check_region(self.school(school_id))
            base = self._school_bases[school_id] = f"{self.scheme}://{domain}/v1.0/schools/{school_id}"
        return base

    def check_region(self, school: Mapping[str, Any]) -> str:
        """Return the host to read a school's data from; refuse a school outside the UK region (R64).

        The region code decides, and a non-UK regional domain is refused whatever the code says.
        The domain must be the configured host or an allowed one, and keeps the configured scheme:
        plain HTTP stays on a loopback sandbox, whatever the region says (R61).
        """
        region = school.get("region") if isinstance(school.get("region"), Mapping) else {}
        code = str(region.get("code") or "").strip().upper()
        domain = str(region.get("domain") or self.host).strip().lower()
        host = urlsplit(f"//{domain}").hostname or ""
        if code and code not in UK_REGION_CODES:
            raise RegionRefused(f"Wonde holds this school's data in the region {code} ({domain}), not the UK: "
                                "the portal only reads data held in the UK.", endpoint="school")
        if domain != self.host.lower() and host not in self.allowed_hosts:
            raise RegionRefused(f"Wonde gave this school the region domain {domain}, which is not the UK one "
                                f"({UK_DOMAIN}): the portal only reads data held in the UK.", endpoint="school")
        if self.scheme != "https" and not is_loopback_host(host):
            raise ConnectorError("Plain HTTP is allowed only to a local test sandbox; not sending the token "
                                 f"to {domain}.", endpoint="school")
        return domain

    def school_meta(self, school_id: str) -> dict[str, Any]:
        """Return ``/meta/schools/{id}``: the application's status flags at the school (approved, online...)."""
        return self.get_object(self.url(f"meta/schools/{school_id}"), endpoint="meta")

    def school_permissions(self, school_id: str) -> list[dict[str, Any]]:
        """Return ``/meta/schools/{id}/permissions``: each permission with its approval state."""
        body = self.request("GET", self.url(f"meta/schools/{school_id}/permissions"), endpoint="permissions")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise BadResponse("Wonde's answer for permissions has no 'data' list.", endpoint="permissions")
        return [p for p in data if isinstance(p, Mapping)]

    def request_access(self, school_id: str, contacts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Ask the school to approve this application; return Wonde's {success, state, message}."""
        body = {"contacts": contacts} if contacts else None
        answer = self.request("POST", self.url(f"schools/{school_id}/request-access"), endpoint="request-access", json=body)
        if not isinstance(answer, dict):
            raise BadResponse("Wonde's answer to request-access is not an object.", endpoint="request-access")
        return answer

    def revoke_access(self, school_id: str) -> dict[str, Any]:
        """Withdraw this application's approved or pending access to the school."""
        answer = self.request("DELETE", self.url(f"schools/{school_id}/revoke-access"), endpoint="revoke-access")
        return answer if isinstance(answer, dict) else {}
