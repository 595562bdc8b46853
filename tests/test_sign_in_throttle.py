"""Sign-in hardening: equal work for unknown accounts, throttling that never locks the owner out, proxies, Redis."""
from __future__ import annotations

import shutil
import statistics
import time

import pytest

from portal.auth.passwords import hash_password
from portal.extensions import db
from portal.models import Role
from portal.testing.databases import SERVICE_UNAVAILABLE
from tests.conftest import Auth
from tests.factories import PASSWORD

WRONG = "wrong guess 123456"


def _signed_in(client, address: str = "192.0.2.10") -> bool:
    return client.get("/home", environ_base={"REMOTE_ADDR": address}).status_code == 200


@pytest.fixture
def limited(make_app):
    """Build an app with rate limits on and an app context pushed."""
    contexts = []

    def build(**config):
        app = make_app(**{"RATELIMIT_ENABLED": True, **config})
        ctx = app.app_context()
        ctx.push()
        contexts.append(ctx)
        return app

    yield build
    for ctx in reversed(contexts):
        ctx.pop()


def _school_user_on(limited, **config):
    """An app with these limits, a school admin on it, and a test client."""
    from tests import factories

    app = limited(**config)
    user = factories.user(Role.school_admin, factories.school())
    db.session.commit()
    return app, user, app.test_client()


def _attempt(client, email: str, password: str = WRONG, address: str = "192.0.2.10", **headers):
    return client.post(
        "/login", data={"email": email, "password": password}, environ_base={"REMOTE_ADDR": address}, headers=headers
    )


# ------------------------------------------------------------------ timing


def test_wrong_password_for_unknown_and_real_accounts_takes_the_same_time(limited):
    """A statistical check: medians of many interleaved attempts, with a generous tolerance.

    With the deployed argon2 profile a real account's failure costs one hash (~0.1 s); an unknown account
    used to cost nothing, a ratio of about 20. Equal work puts the ratio near 1.
    """
    from tests import factories

    app = limited(ARGON2_PROFILE="RFC_9106_LOW_MEMORY", RATELIMIT_ENABLED=False)
    user = factories.user(Role.school_admin, factories.school())
    inactive = factories.user(Role.school_viewer, factories.school())
    db.session.commit()
    user.password_hash = inactive.password_hash = hash_password(PASSWORD)  # hashed with the deployed profile
    inactive.active = False
    db.session.commit()
    client = app.test_client()
    samples: dict[str, list[float]] = {"real": [], "unknown": [], "inactive": []}
    emails = {"real": user.email, "unknown": "nobody-here@example.org", "inactive": inactive.email}
    _attempt(client, user.email)  # warm up: the dummy hash is computed once per process
    _attempt(client, "warm-up@example.org")
    for n in range(12):
        for kind in ("real", "unknown", "inactive") if n % 2 else ("unknown", "inactive", "real"):
            started = time.perf_counter()
            resp = _attempt(client, emails[kind])
            samples[kind].append(time.perf_counter() - started)
            assert resp.status_code == 401
    real = statistics.median(samples["real"])
    for kind in ("unknown", "inactive"):
        ratio = statistics.median(samples[kind]) / real
        assert 0.5 < ratio < 2.0, f"{kind}: median {statistics.median(samples[kind]):.3f}s against {real:.3f}s"


# ------------------------------------------------------------------ throttling, not lockout


def test_failures_throttle_one_address_but_the_owner_signs_in_from_another(limited):
    app, user, attacker = _school_user_on(limited, LOGIN_RATE_LIMIT_ACCOUNT="3 per minute; 6 per hour", LOGIN_RATE_LIMIT_ADDRESS="100 per hour")
    for _ in range(3):
        assert _attempt(attacker, user.email).status_code == 401
    refused = _attempt(attacker, user.email.upper(), PASSWORD)
    # The guesser waits, with a page that says how long and what else to do; even the right password waits here.
    assert refused.status_code == 429
    assert b"Too many attempts" in refused.data and b"Wait a minute" in refused.data
    assert b"reset your password" in refused.data and b'name="email"' in refused.data
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert not _signed_in(attacker)
    # The account's owner, from their own network, is not locked out.
    owner = app.test_client()
    resp = _attempt(owner, user.email, PASSWORD, address="198.51.100.7")
    assert resp.status_code == 302 and _signed_in(owner, "198.51.100.7")


def test_the_wait_grows_with_more_failures(limited):
    app, user, client = _school_user_on(limited, LOGIN_RATE_LIMIT_ACCOUNT="2 per minute; 3 per hour", LOGIN_RATE_LIMIT_ADDRESS="100 per hour")
    for _ in range(2):
        _attempt(client, user.email)
    first = _attempt(client, user.email)
    assert first.status_code == 429 and int(first.headers["Retry-After"]) <= 60
    # A minute later (the minute's counts forgotten) one more failure is allowed; then the wait is the hour's.
    from portal.extensions import limiter

    storage = limiter.storage
    for key in [k for k in list(storage.storage) if "/1/minute" in k]:
        storage.clear(key)
    assert _attempt(client, user.email).status_code == 401
    second = _attempt(client, user.email)
    assert second.status_code == 429 and 60 < int(second.headers["Retry-After"]) <= 3600
    assert b"Wait 60 minutes" in second.data or b"Wait 59 minutes" in second.data


def test_address_limit_counts_failures_for_every_account_but_not_successes(limited):
    app, user, client = _school_user_on(limited, LOGIN_RATE_LIMIT_ACCOUNT="100 per hour", LOGIN_RATE_LIMIT_ADDRESS="3 per hour")
    auth = Auth(client)
    for _ in range(4):
        assert auth.login(user).status_code == 302
        auth.logout()
    for n in range(3):
        _attempt(client, f"guess{n}@example.org", address="127.0.0.1")
    assert auth.login(user).status_code == 429
    assert _attempt(client, user.email, PASSWORD, address="203.0.113.5").status_code == 302


def test_second_factor_guesses_are_limited_per_account(limited):
    from tests import factories

    app = limited(LOGIN_RATE_LIMIT_ACCOUNT="3 per hour", LOGIN_RATE_LIMIT_ADDRESS="100 per hour")
    user = factories.user(support=True)
    db.session.commit()
    for page, code in (("/login/totp", "000000"), ("/login/recovery", "aaaaa-bbbbb")):
        limiter_reset()
        statuses = []
        for n in range(4):  # from four addresses: the limit is the account's
            client = app.test_client()
            _attempt(client, user.email, PASSWORD, address=f"192.0.2.{n + 1}")
            statuses.append(client.post(page, data={"code": code}, environ_base={"REMOTE_ADDR": f"192.0.2.{n + 1}"}).status_code)
        assert statuses == [401, 401, 401, 429], page


def limiter_reset() -> None:
    from portal.extensions import limiter

    limiter.reset()


# ------------------------------------------------------------------ behind a reverse proxy


def test_behind_a_trusted_proxy_each_client_has_its_own_limit(limited):
    app, user, client = _school_user_on(limited, TRUSTED_PROXIES=1, LOGIN_RATE_LIMIT_ACCOUNT="100 per hour", LOGIN_RATE_LIMIT_ADDRESS="3 per hour")
    proxy = "10.0.0.2"  # every request reaches the portal from the proxy's address
    for n in range(3):
        _attempt(client, f"guess{n}@example.org", address=proxy, **{"X-Forwarded-For": "192.0.2.66"})
    assert _attempt(client, user.email, PASSWORD, address=proxy, **{"X-Forwarded-For": "192.0.2.66"}).status_code == 429
    # Another client behind the same proxy is not refused because of the first one's failures.
    resp = _attempt(client, user.email, PASSWORD, address=proxy, **{"X-Forwarded-For": "198.51.100.20"})
    assert resp.status_code == 302


def test_without_trusted_proxies_a_forged_forwarded_for_does_not_escape_the_limit(limited):
    app, user, client = _school_user_on(limited, LOGIN_RATE_LIMIT_ACCOUNT="100 per hour", LOGIN_RATE_LIMIT_ADDRESS="3 per hour")
    for n in range(3):
        _attempt(client, f"guess{n}@example.org", **{"X-Forwarded-For": f"198.51.100.{n}"})
    resp = _attempt(client, user.email, PASSWORD, **{"X-Forwarded-For": "203.0.113.99"})
    assert resp.status_code == 429


def test_trusted_proxies_must_be_a_small_whole_number(make_app):
    from portal.errors import StartupError

    with pytest.raises(StartupError, match="TRUSTED_PROXIES"):
        make_app(TRUSTED_PROXIES="one")


# ------------------------------------------------------------------ shared storage


def test_limits_are_kept_in_redis_and_shared_between_processes(limited, tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip(f"{SERVICE_UNAVAILABLE} redis-server is not installed")
    import redis

    from tests.celery_support import RedisServer
    from tests import factories

    server = RedisServer(tmp_path / "redis.log").start()
    try:
        settings = dict(
            RATELIMIT_STORAGE_URI=server.url, LOGIN_RATE_LIMIT_ACCOUNT="2 per hour", LOGIN_RATE_LIMIT_ADDRESS="100 per hour"
        )
        first = limited(**settings)
        user = factories.user(Role.school_admin, factories.school())
        db.session.commit()
        for _ in range(2):
            assert _attempt(first.test_client(), user.email).status_code == 401
        assert redis.Redis.from_url(server.url).keys("*account*"), "no limit was counted in Redis"
        # A second app (another worker process) sees the same count.
        second = limited(**settings)
        assert _attempt(second.test_client(), user.email, PASSWORD).status_code == 429
    finally:
        server.stop()
