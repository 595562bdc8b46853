"""A thin HTTP client for Groupcall Xporter on Demand: tokens, retries, paging, changesets, errors inside HTTP 200."""
from __future__ import annotations

import email.utils
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import requests

from portal.connectors import (
    AccessRefused,
    AuthorisationLost,
    BadResponse,
    ConnectorError,
    InvalidJson,
    NotFound,
    ProviderSession,
    ProviderUnavailable,
    RateLimited,
    is_loopback_host,
)

log = logging.getLogger(__name__)

USER_AGENT = "mis-connection-portal/portal-groupcall"
THIRD_PARTY_ID = "XporterOnDemand"
# Statuses worth asking again (S-xodc retries 500/502/503; 429 and 504 are the same kind of trouble).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Groupcall's own words for "this school has not (or no longer) authorised you" (spec §2.3, §15.2).
NOT_AUTHORISED_MARKERS = ("relying party not found", "authorization has been denied", "not authorised", "not authorized")
PAUSED_MARKER = "authorisation is currently paused"
# However short a token's life, it is replaced at least this long before it expires (clock skew, request time).
TOKEN_MIN_MARGIN = timedelta(seconds=5)
# Hosts the school secret and tokens may be sent to (R61); a deployment adds others with ``allowed_hosts``.
ALLOWED_HOSTS = frozenset({"xporter.groupcall.com", "login.groupcall.com", "api.xporter.com"})


class AuthorisationPaused(ConnectorError):
    """The school paused its authorisation while it chooses which people to share: wait, do not revoke."""

    code = "authorisation_paused"
    kind = "school_action"


class ProviderReportedError(BadResponse):
    """Groupcall answered with an error envelope (ExceptionMessage), possibly inside an HTTP 200."""

    code = "provider_error"
    kind = "provider_problem"


def parse_groupcall_datetime(value: str | None) -> datetime | None:
    """Parse Groupcall's date-times: 'Z' or naive, with up to 7 fractional digits (Python reads 6)."""
    if not value or value.startswith("0001-01-01"):
        return None
    text = value.strip()
    tz = None
    if text.endswith("Z"):
        text, tz = text[:-1], timezone.utc
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{(frac + '000000')[:6]}"
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=tz) if tz else parsed


def error_message_of(body: Any) -> str | None:
    """Return the envelope's ExceptionMessage (or Message when only that is set on an error), else None."""
    if not isinstance(body, Mapping):
        return None
    message = body.get("ExceptionMessage")
    if message:
        return str(message)
    # Some failures carry only Message and no data sets at all (spec §3.2 and §11).
    if body.get("Message") and body.get("ExceptionType"):
        return str(body["Message"])
    return None


def classify_error(message: str, *, where: str, page: int | None = None, status: int | None = None) -> ConnectorError:
    """Turn Groupcall's error text into one of the typed connector errors, in plain English without it.

    Only GetToken's own refusal ("Relying Party not found ...") says the authorisation has gone; a
    refused data request (a 401/403, or any text about scopes) is AccessRefused, which the connector
    confirms with GetToken and TokenDetails before anything changes.
    """
    lowered = message.lower()
    if PAUSED_MARKER in lowered:
        return AuthorisationPaused(
            "The school has paused its Groupcall authorisation while it chooses which pupils and staff to share. "
            "Extracts resume when the school finishes in the Groupcall portal.",
            endpoint=where,
            page=page,
        )
    if where == "GetToken" and any(marker in lowered for marker in NOT_AUTHORISED_MARKERS):
        return AuthorisationLost(
            "Groupcall says the school has not authorised the portal (or has revoked it). "
            "A school administrator must authorise the portal again in the Groupcall portal.",
            endpoint=where,
            page=page,
        )
    if status in (401, 403) or "scope" in lowered or any(marker in lowered for marker in NOT_AUTHORISED_MARKERS):
        return AccessRefused(f"Groupcall refused the request for {where}.", status=status or 403, endpoint=where, page=page)
    return ProviderReportedError(
        f"Groupcall reported an error while answering {where}; nothing from that answer was used. "
        "If it keeps happening, contact Groupcall support.",
        endpoint=where,
        page=page,
    )


@dataclass
class _Token:
    value: str
    expires: datetime
    issued: datetime | None = None

    def fresh(self, now: datetime, margin: timedelta) -> bool:
        """Whether the token is still good to use: not within the refresh margin of its expiry.

        The margin is at most a tenth of the token's lifetime (and at least a few seconds), so a token
        of an hour or less is still used for most of its life instead of being minted before every request.
        """
        if self.issued is not None:
            lifetime = self.expires - self.issued
            margin = min(margin, max(lifetime / 10, TOKEN_MIN_MARGIN))
        return self.expires - margin > now


@dataclass
class TokenCache:
    """Tokens per school, shared by every client in the process; a token is never logged or shown."""

    tokens: dict[tuple[str, ...], _Token] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.tokens.clear()


# One cache per process: connector instances are built per use, tokens last days.
TOKENS = TokenCache()


@dataclass
class Page:
    """One answer of a data endpoint: its named sets and the pagination/changeset blocks."""

    body: dict[str, Any]
    number: int
    count: int

    def rows(self, name: str) -> list[dict[str, Any]]:
        value = self.body.get(name)
        return value if isinstance(value, list) else []

    @property
    def changed_rows(self) -> dict[str, Any] | None:
        block = self.body.get("__changedRows__")
        return block[0] if isinstance(block, list) and block else None


class GroupcallClient:
    """Talks to one school's Xporter on Demand data over HTTPS with a school-secret token."""

    def __init__(
        self,
        *,
        base_url: str,
        relying_party: str,
        estab: str,
        school_secret: str,
        token_url: str | None = None,
        timeout: float | tuple[float, float] = (10.0, 120.0),
        retries: int = 3,
        backoff: float = 0.5,
        page_size: int = 1000,
        allow_insecure_http: bool = False,
        allowed_hosts: Iterable[str] = (),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        token_margin: timedelta = timedelta(hours=1),
        tokens: TokenCache = TOKENS,
        session: requests.Session | None = None,
        counters: dict[str, int] | None = None,
        before_request: Callable[[], None] | None = None,
    ) -> None:
        base = base_url.rstrip("/")
        allowed = ALLOWED_HOSTS | {h.strip().lower() for h in allowed_hosts if h and h.strip()}
        for url in (base, token_url or base):
            parts = urlsplit(url)
            loopback = is_loopback_host(parts.hostname)
            if parts.scheme != "https" and not (allow_insecure_http and parts.scheme == "http" and loopback):
                # R61: school data and secrets travel only over TLS; plain http only to a local sandbox.
                raise ConnectorError("The Groupcall address must start with https:// (plain http is allowed only "
                                     "to a local test sandbox).")
            if not loopback and (parts.hostname or "").lower() not in allowed:
                raise ConnectorError(f"The Groupcall address's host {parts.hostname} is not an allowed Groupcall host "
                                     "(add it to the connector's allowed_hosts setting if it really is Groupcall's).")
        self.api_base = f"{base}/api/v1"
        self.token_url = token_url or f"{base}/api/oauth/GetToken"
        self.relying_party = relying_party
        self.estab = str(estab)
        self._secret = school_secret
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.page_size = page_size
        self.sleep = sleep
        self.clock = clock
        self.token_margin = token_margin
        self.tokens = tokens
        # Requests sent and retries waited, for the run's statistics.
        self.counters = counters if counters is not None else {"requests": 0, "retries": 0}
        self.http = session or ProviderSession()
        # Blocks until the portal's shared per-provider rate limit lets one request go (retries too).
        self.before_request = before_request
        self.http.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})

    def __repr__(self) -> str:  # never show the secret or a token
        return f"<GroupcallClient estab={self.estab} rp={self.relying_party}>"

    # ------------------------------------------------------------ tokens

    @property
    def _cache_key(self) -> tuple[str, ...]:
        # The secret is part of the key (hashed): a school that re-authorises gets a new secret and a new token.
        digest = hashlib.sha256(self._secret.encode()).hexdigest()
        return (self.token_url, self.relying_party, self.estab, digest)

    def token(self, *, refresh: bool = False) -> str:
        """Return a cached token for this school, minting one when missing, near expiry or asked to."""
        with self.tokens.lock:
            cached = self.tokens.tokens.get(self._cache_key)
            if cached and not refresh and cached.fresh(self.clock(), self.token_margin):
                return cached.value
            minted = self._mint_token()
            self.tokens.tokens[self._cache_key] = minted
            return minted.value

    def _mint_token(self) -> _Token:
        payload = {
            "estab": self.estab,
            "relyingParty": self.relying_party,
            "password": self._secret,
            "thirdpartyid": THIRD_PARTY_ID,
        }
        for attempt in (1, 2):
            issued = self.clock()
            resp, body = self._send_json("POST", self.token_url, where="GetToken", json=payload)
            message = error_message_of(body)
            token = body.get("token") if isinstance(body, Mapping) else None
            if message or not token:
                # Success is decided from the body; the HTTP status of a refusal is undocumented (spec §2.3).
                error = classify_error(message or "relying party not found", where="GetToken")
                if isinstance(error, AuthorisationLost) and attempt == 1:
                    continue  # a revocation is never read from one answer: ask once more
                raise error
            break
        expires = parse_groupcall_datetime(body.get("expires"))
        if expires is None:
            raise BadResponse("Groupcall issued a token without an expiry time.", endpoint="GetToken")
        log.info("groupcall token minted for estab %s, expires %s", self.estab, expires.isoformat())
        return _Token(str(token), expires, issued)

    # ------------------------------------------------------------ requests

    def get(self, path: str, params: Mapping[str, Any] | None = None, *, where: str | None = None, page: int | None = None) -> dict[str, Any]:
        """GET an API path with the school's token; re-mint once on 401; raise typed errors."""
        where = where or path.split("?")[0]
        url = f"{self.api_base}/{path.lstrip('/')}"
        resp, body = self._send_json("GET", url, where=where, page=page, params=params, auth=True)
        if resp.status_code == 401:
            # The cached token may have expired early or been invalidated: mint a new one, once.
            resp, body = self._send_json("GET", url, where=where, page=page, params=params, auth=True, refresh=True)
        if resp.status_code in (401, 403):
            raise classify_error(error_message_of(body) or "authorization has been denied", where=where, page=page,
                                 status=resp.status_code)
        if resp.status_code == 404:
            raise NotFound(f"Groupcall has no {where} for this school (HTTP 404).", endpoint=where, page=page)
        if resp.status_code >= 400:
            raise BadResponse(f"Groupcall answered {where} with HTTP {resp.status_code}.", endpoint=where, page=page)
        message = error_message_of(body)
        if message:
            # An error inside an HTTP 200 is still an error, never data (spec §11).
            raise classify_error(message, where=where, page=page)
        if not isinstance(body, dict):
            raise BadResponse(f"Groupcall answered {where} with something other than a JSON object.", endpoint=where, page=page)
        return body

    def _send(
        self,
        method: str,
        url: str,
        *,
        where: str,
        page: int | None = None,
        auth: bool = False,
        refresh: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with timeouts and retries (exponential backoff with jitter; Retry-After honoured)."""
        attempt = 0
        while True:
            headers = {"Content-Type": "application/json"}
            if auth:
                headers["Authorization"] = f"Idaas {self.token(refresh=refresh)}"
                refresh = False
            self.counters["requests"] = self.counters.get("requests", 0) + 1
            if self.before_request is not None:
                self.before_request()
            try:
                resp = self.http.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
            except requests.RequestException as exc:  # timeouts, refused or broken connections
                if attempt >= self.retries:
                    raise ProviderUnavailable(
                        f"Groupcall did not answer {where} after {attempt + 1} attempts; the next run will try again.",
                        endpoint=where,
                        page=page,
                    ) from None
                log.warning("groupcall %s attempt %d failed: %s", where, attempt + 1, type(exc).__name__)
                self._wait(self._delay(attempt))
                attempt += 1
                continue
            if resp.status_code not in RETRY_STATUSES:
                try:
                    resp.content  # read the body now: a connection that breaks mid-answer is retried too
                except requests.RequestException as exc:
                    if attempt >= self.retries:
                        raise ProviderUnavailable(
                            f"Groupcall's answer to {where} kept breaking off; the next run will try again.",
                            endpoint=where,
                            page=page,
                        ) from None
                    log.warning("groupcall %s answer broke off: %s", where, type(exc).__name__)
                    self._wait(self._delay(attempt))
                    attempt += 1
                    continue
                return resp
            retry_after = _retry_after(resp)
            if attempt >= self.retries:
                if resp.status_code == 429:
                    raise RateLimited(
                        f"Groupcall kept asking the portal to slow down on {where}; the next run will try again.",
                        retry_after=retry_after,
                        endpoint=where,
                        page=page,
                    )
                raise ProviderUnavailable(
                    f"Groupcall was unavailable (HTTP {resp.status_code}) for {where} after {attempt + 1} attempts; "
                    "the next run will try again.",
                    endpoint=where,
                    page=page,
                )
            log.warning("groupcall %s answered HTTP %d, attempt %d", where, resp.status_code, attempt + 1)
            self._wait(retry_after if retry_after is not None else self._delay(attempt))
            attempt += 1

    def _send_json(self, method: str, url: str, *, where: str, page: int | None = None, **kwargs: Any) -> tuple[requests.Response, Any]:
        """Send, and decode a successful answer's JSON; an answer that is not JSON is asked again once.

        Error statuses (4xx) are decoded leniently (None when not JSON): their body is only read for Groupcall's message.
        """
        for attempt in range(2):
            if attempt:
                self._wait(self._delay(0))
                kwargs.pop("refresh", None)  # a token just minted is not minted again
            resp = self._send(method, url, where=where, page=page, **kwargs)
            if resp.status_code >= 400:
                return resp, self._json(resp, where=where, page=page, strict=False)
            try:
                return resp, resp.json()
            except ValueError:
                log.warning("groupcall %s answered with invalid JSON (attempt %d)", where, attempt + 1)
        raise InvalidJson(
            f"Groupcall answered {where} with something that is not valid JSON, twice running; nothing from it "
            "was used. If it keeps happening, report it to Groupcall support.", endpoint=where, page=page,
        )

    def _wait(self, seconds: float) -> None:
        self.counters["retries"] = self.counters.get("retries", 0) + 1
        self.sleep(seconds)

    def _delay(self, attempt: int) -> float:
        return self.backoff * (2**attempt) * (1 + random.random() / 4)

    @staticmethod
    def _json(resp: requests.Response, *, where: str, page: int | None = None, strict: bool = True) -> Any:
        try:
            return resp.json()
        except ValueError:
            if not strict:
                return None
            raise BadResponse(f"Groupcall answered {where} with something that is not valid JSON.", endpoint=where, page=page) from None

    # ------------------------------------------------------------ school data

    def token_details(self) -> dict[str, Any]:
        """Return TokenDetails: the estab, expiry and scopes this school has granted."""
        return self.get("TokenDetails", where="TokenDetails")

    def granted_scopes(self) -> frozenset[str]:
        return frozenset(self.token_details().get("Scopes") or ())

    def pages(
        self,
        resource: str,
        params: Mapping[str, Any] | None = None,
        *,
        start_page: int = 1,
    ) -> Iterator[Page]:
        """Yield each page of a school resource; stop at PageCount, whatever NextPage says (spec §5)."""
        number = start_page
        while True:
            query = {**(params or {}), "page": number, "pageSize": self.page_size}
            body = self.get(f"School/{self.estab}/{resource}", query, where=resource, page=number)
            block = body.get("__pagination__")
            info = block[0] if isinstance(block, list) and block else None
            count = int(info.get("PageCount") or 0) if isinstance(info, Mapping) else 1
            yield Page(body, number, count)
            # NextPage still points past the end on the last page: trust PageCount only.
            if info is None or number >= count:
                return
            number += 1

    def fetch(self, resource: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET a small, unpaged school resource."""
        return self.get(f"School/{self.estab}/{resource}", params, where=resource)


# A Retry-After longer than this is not waited out inside a run: the run fails and the next one tries.
RETRY_AFTER_CAP = 120.0


def _retry_after(resp: requests.Response) -> float | None:
    """Seconds the provider asked us to wait (RFC 9110: a number of seconds or an HTTP date), capped; None if not said."""
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return max(0.0, min(seconds, RETRY_AFTER_CAP))
