"""Per-provider concurrency limits shared by every worker process, kept in Redis (the broker's server).

A provider's rate limit is per application token, not per worker, so the number of runs one
connector may have in flight is counted in one Redis sorted set per connector: member = run
id, score = when the slot was taken. Taking a slot is one Lua script (atomic in Redis). A slot
whose run is no longer running (its worker died, or it finished without releasing) is pruned
against the job_runs table, so a dead worker cannot hold a slot for ever.
"""
from __future__ import annotations

import time
from typing import Any

from flask import current_app
from sqlalchemy import select

from portal.extensions import db
from portal.models import JobRun, RunStatus
from portal.models.base import utcnow

__all__ = ["ProviderSlots"]

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
