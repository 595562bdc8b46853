"""Per-provider limits shared by every worker process: runs in flight (slots) and requests per second (gates).

A provider's rate limit is per application token, not per worker, so the number of runs one
connector may have in flight is counted in one Redis sorted set per connector: member = run
id, score = when the slot was taken. Taking a slot is one Lua script (atomic in Redis). A slot
whose run is no longer running (its worker died, or it finished without releasing) is pruned
against the job_runs table, so a dead worker cannot hold a slot for ever.

Requests per second (PROVIDER_REQUESTS_PER_SECOND) are a token bucket per connector: in Redis
(one Lua script, Redis's own clock) when the executor runs them in several processes (Celery workers), so every process on every
machine draws from the same bucket; in process memory otherwise (one process runs everything).
The engine hands the bucket's ``wait`` to the connector (``Connector.request_gate``), and the
connector's HTTP client calls it before every request, retries included.

``redis`` is imported where it is used: it comes with the optional ``celery`` extra.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from flask import current_app
from sqlalchemy import select

from portal.connectors import ConnectorError
from portal.extensions import db
from portal.jobs import get_executor
from portal.models import JobRun, RunStatus
from portal.models.base import utcnow

__all__ = ["LocalRate", "ProviderSlots", "RateLimitUnavailable", "RedisRate", "request_gate"]

# A slot taken this recently is kept even before its run shows as running (the worker is starting it).
STARTING_GRACE_SECONDS = 30

_TAKE = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
"""


class ProviderSlots:
    """The shared slots of one deployment; ``limit(connector)`` is None when that connector is unlimited."""

    def __init__(self, redis_url: str, limits: dict[str, int]) -> None:
        import redis

        self.redis = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
        self.limits = dict(limits)
        self._take = self.redis.register_script(_TAKE)

    @classmethod
    def from_config(cls, app: Any = None) -> ProviderSlots | None:
        """Build the slots from PROVIDER_CONCURRENCY and the broker URL; None when no limit is set."""
        cfg = (app or current_app).config
        limits = cfg.get("PROVIDER_CONCURRENCY") or {}
        url = (cfg.get("CELERY") or {}).get("broker_url", "")
        if not limits or not url.startswith(("redis://", "rediss://")):
            return None
        return cls(url, {str(k): int(v) for k, v in limits.items()})

    @staticmethod
    def key(connector: str) -> str:
        return f"portal:provider-slots:{connector}"

    def limit(self, connector: str) -> int | None:
        return self.limits.get(connector)

    def take(self, connector: str, run_id: int) -> bool:
        """Take a slot for this run (True), or report that the connector is at its limit (False)."""
        limit = self.limit(connector)
        if limit is None:
            return True
        if self._take(keys=[self.key(connector)], args=[run_id, limit, time.time()]):
            return True
        self._prune(connector)
        return bool(self._take(keys=[self.key(connector)], args=[run_id, limit, time.time()]))

    def release(self, connector: str, run_id: int) -> None:
        if self.limit(connector) is not None:
            self.redis.zrem(self.key(connector), run_id)

    def _prune(self, connector: str) -> None:
        """Free the slots of runs that are not running any more (their worker died or forgot to release)."""
        held = {int(m): score for m, score in self.redis.zrange(self.key(connector), 0, -1, withscores=True)}
        if not held:
            return
        alive = set(
            db.session.scalars(
                select(JobRun.id).where(
                    JobRun.id.in_(list(held)), JobRun.status == RunStatus.running, JobRun.lease_expires_at >= utcnow()
                )
            )
        )
        db.session.rollback()
        fresh = time.time() - STARTING_GRACE_SECONDS
        stale = [run_id for run_id, taken in held.items() if run_id not in alive and taken < fresh]
        if stale:
            self.redis.zrem(self.key(connector), *stale)


# A reservation: take one token, letting the bucket go negative, and answer how long the caller
# must wait before sending (0 when a token was there). Waiting callers queue up in order instead of
# polling, and the bucket's clock is Redis's, the same for every machine.
_RESERVE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate) - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 3600)
if tokens >= 0 then return '0' end
return tostring(-tokens / rate)
"""


class RateLimitUnavailable(ConnectorError):
    """The shared rate limit could not be consulted (Redis unreachable): no request is sent, the run can be retried."""

    code = "rate_limit_unavailable"
    kind = "temporary"
    retryable = True


class RedisRate:
    """A requests-per-second bucket of one connector shared through Redis by every process."""

    def __init__(self, redis_url: str, connector: str, rate: float, burst: float = 1.0) -> None:
        import redis

        self.redis = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
        self.key = f"portal:provider-rate:{connector}"
        self.rate, self.burst = float(rate), float(burst)
        self._reserve = self.redis.register_script(_RESERVE)

    def wait(self) -> None:
        """Block until this process may send one request to the provider."""
        import redis

        try:
            delay = float(self._reserve(keys=[self.key], args=[self.rate, self.burst]))
        except redis.RedisError:
            # Sending anyway could break the provider's limit for every school: stop this run instead.
            raise RateLimitUnavailable(
                "The shared limit on requests to the provider could not be checked because the task queue's "
                "Redis did not answer, so no request was sent. The next run will try again."
            ) from None
        if delay > 0:
            time.sleep(delay)


class LocalRate:
    """The same bucket in process memory, shared by the threads of one process (in-process executor)."""

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        self.rate, self.burst = float(rate), float(burst)
        self.tokens, self.at = self.burst, time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate) - 1
            self.at = now
            delay = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if delay > 0:
            time.sleep(delay)


_buckets: dict[tuple[Any, ...], RedisRate | LocalRate] = {}
_buckets_lock = threading.Lock()


def request_gate(connector: str, app: Any = None) -> Callable[[], None] | None:
    """Return the wait of the connector's requests-per-second bucket, or None when it has no limit."""
    app = app or current_app
    rate = (app.config.get("PROVIDER_REQUESTS_PER_SECOND") or {}).get(connector)
    if not rate:
        return None
    url = (app.config.get("CELERY") or {}).get("broker_url", "")
    shared = get_executor(app).shared and url.startswith(("redis://", "rediss://"))
    key = (connector, float(rate), url if shared else None)
    with _buckets_lock:
        bucket = _buckets.get(key)
        if bucket is None:
            # One bucket per process and connector, so concurrent runs in this process share it too.
            bucket = _buckets[key] = RedisRate(url, connector, rate) if shared else LocalRate(rate)
    return bucket.wait
