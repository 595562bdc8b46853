"""`flask portal check --deploy`: the settings a production deployment gets wrong, each problem with its fix.

In the spirit of Django's ``check --deploy``. Every check yields Findings; an error makes the command
exit non-zero, a warning does not. Messages name settings, hosts and ids only, never personal data.
"""
from __future__ import annotations

import os
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from portal.connectors import is_loopback_host
from portal.extensions import db
from portal.plugins.manager import get_plugins

# Key values published in this repository (tests, examples): never a deployment's.
KNOWN_KEYS = {
    "test-secret-key-not-for-production",
    "cNhVdIuD3mmvnJbRnSmMT2Dsw8kI3Tn8c1mz4O3mzaQ=",
}
PLACEHOLDER_MARK = "REPLACE"  # deploy/portal.cfg.example marks values to fill in with this word
DEMO_EMAIL_DOMAIN = "@demo.example"
# Password checks are argon2 verifications (slow on purpose): bounded, support staff first.
MAX_PASSWORD_CHECKS = 200


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning"
    setting: str
    problem: str
    fix: str

    def line(self) -> str:
        return f"{self.level.upper()} {self.setting}: {self.problem}. Fix: {self.fix}"


def _error(setting: str, problem: str, fix: str) -> Finding:
    return Finding("error", setting, problem, fix)


def _warning(setting: str, problem: str, fix: str) -> Finding:
    return Finding("warning", setting, problem, fix)


GEN_SECRET = 'python3 -c "import secrets; print(secrets.token_urlsafe(48))"'
GEN_FERNET = 'python3 -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'


def web_processes() -> int:
    """How many processes `portal serve` starts with these settings."""
    from portal.ops.serve import default_workers

    return current_app.config.get("SERVE_WORKERS") or default_workers()


def _several_processes() -> bool:
    # The scheduler is its own service unless the one web process schedules itself.
    return web_processes() > 1 or not current_app.config.get("SCHEDULER_ENABLED")


def _generated(filename: str, value: str) -> bool:
    path = Path(current_app.instance_path) / filename
    try:
        return path.exists() and path.read_text().strip() == str(value).strip()
    except OSError:
        return False


def check_keys() -> Iterator[Finding]:
    cfg = current_app.config
    secret = str(cfg.get("SECRET_KEY") or "")
    if secret in KNOWN_KEYS or PLACEHOLDER_MARK in secret:
        yield _error("SECRET_KEY", "it is a published example or test value", f"set SECRET_KEY to the output of {GEN_SECRET}")
    elif len(secret) < 32:
        yield _error("SECRET_KEY", "it is shorter than 32 characters", f"set SECRET_KEY to the output of {GEN_SECRET}")
    elif _generated("secret_key", secret):
        yield _error("SECRET_KEY", "it was generated into the instance folder on first run (as the demo does), so other machines "
                     "and a rebuilt one would not share it", "copy it into SECRET_KEY in the settings file and keep a copy with the backup key")
    keys = [k.strip() for k in str(cfg.get("ENCRYPTION_KEYS") or "").split(",") if k.strip()]
    if any(k in KNOWN_KEYS or PLACEHOLDER_MARK in k for k in keys):
        yield _error("ENCRYPTION_KEYS", "it holds a published example or test key", f"set ENCRYPTION_KEYS to the output of {GEN_FERNET}")
    elif keys and _generated("encryption_key", ",".join(keys)):
        yield _error("ENCRYPTION_KEYS", "it was generated into the instance folder on first run (as the demo does): losing that file "
                     "loses every stored secret", "copy it into ENCRYPTION_KEYS in the settings file and keep a copy with the backup key")


def check_https_and_cookies() -> Iterator[Finding]:
    cfg = current_app.config
    if urlsplit(str(cfg.get("BASE_URL") or "")).scheme != "https":
        yield _error("BASE_URL", f"{cfg.get('BASE_URL')!r} is not https, so links in emails and secure cookies break",
                     'set BASE_URL = "https://portal.example.org" (the address users type)')
    for key in ("SESSION_COOKIE_SECURE", "REMEMBER_COOKIE_SECURE"):
        if cfg.get(key) is not True:
            yield _error(key, "cookies would be sent over plain http", f"set {key} = True (remove PORTAL_{key} from the environment)")
    if cfg.get("WTF_CSRF_ENABLED") is not True:
        yield _error("WTF_CSRF_ENABLED", "forms are not protected against cross-site requests", "set WTF_CSRF_ENABLED = True")
    if cfg.get("RATELIMIT_ENABLED") is not True:
        yield _error("RATELIMIT_ENABLED", "sign-in attempts are not limited", "set RATELIMIT_ENABLED = True")
    for key in ("DEBUG", "TESTING"):
        if cfg.get(key):
            yield _error(key, "it is on", f"remove {key} (and FLASK_{key}) from the settings and environment")


def check_data_location() -> Iterator[Finding]:
    if current_app.config.get("DATA_LOCATION") != "UK":
        yield _error("DATA_LOCATION", "pupil data must be stored in the UK and the deployment must say so (R64)", 'set DATA_LOCATION = "UK"')


def check_database() -> Iterator[Finding]:
    from portal.ops import probes

    url = make_url(current_app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "sqlite" and _several_processes():
        yield _error("DATABASE_URL", f"SQLite cannot serve {web_processes()} web processes and a scheduler at once",
                     'use PostgreSQL: DATABASE_URL = "postgresql+psycopg://portal@127.0.0.1:5432/portal" (docs/deploy.md)')
    probe = probes.database()
    if not probe.ok:
        yield _error("DATABASE_URL", f"the database is {probe.detail}", "start PostgreSQL or correct DATABASE_URL")
        return
    migrations = probes.migrations()
    if not migrations.ok:
        yield _error("migrations", migrations.detail, "run `flask portal upgrade`")
    ledger = probes.ledger()
    if not ledger.ok:
        yield _error("RETENTION_LEDGER_PATH", ledger.detail, "see docs/retention.md, 'After a restore'")


def check_rate_limit_storage() -> Iterator[Finding]:
    uri = str(current_app.config.get("RATELIMIT_STORAGE_URI") or "memory://")
    if uri.startswith("memory://") and _several_processes():
        yield _error("RATELIMIT_STORAGE_URI", "memory:// counts sign-in attempts per process, so several processes multiply the limit",
                     'set RATELIMIT_STORAGE_URI = "redis://127.0.0.1:6379/1"')
    elif uri.startswith(("redis://", "rediss://")):
        host, port = urlsplit(uri).hostname or "127.0.0.1", urlsplit(uri).port or 6379
        try:
            socket.create_connection((host, port), timeout=3).close()
        except OSError as exc:
            yield _error("RATELIMIT_STORAGE_URI", f"Redis at {host}:{port} is unreachable ({type(exc).__name__})",
                         "start Redis (systemctl start redis-server) or correct the address")


def check_ledger_path() -> Iterator[Finding]:
    from portal.ops.heartbeat import current_ledger_path, fresh_heartbeats

    cfg = current_app.config
    try:
        path = Path(current_ledger_path())
    except Exception:  # no database: reported by check_database
        db.session.rollback()
        return
    if not cfg.get("RETENTION_LEDGER_PATH"):
        yield _warning("RETENTION_LEDGER_PATH", f"unset, so the ledger is {path} inside the instance folder",
                       "set it to a file on storage the database backups and restores do not touch, "
                       "the same path on every machine (docs/retention.md)")
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        yield _error("RETENTION_LEDGER_PATH", f"{path} is a folder", "name a file, e.g. /var/lib/portal-ledger/deletion-ledger.jsonl")
    elif not folder.is_dir():
        yield _error("RETENTION_LEDGER_PATH", f"the folder {folder} does not exist", f"create it: install -d -o portal -m 0750 {folder}")
    elif not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        yield _error("RETENTION_LEDGER_PATH", f"{path} is not writable by this user", f"chown portal {folder} {path}")
    try:
        others = {h.ledger_path for h in fresh_heartbeats() if h.ledger_path and h.ledger_path != str(path)}
    except Exception:
        db.session.rollback()
        return
    for other in sorted(others):
        yield _error("RETENTION_LEDGER_PATH", f"a running scheduler uses {other}, this process {path}",
                     "give every process the same settings file (one shared ledger)")


def check_mail() -> Iterator[Finding]:
    cfg = current_app.config
    server = cfg.get("MAIL_SERVER")
    if not server:
        yield _error("MAIL_SERVER", "unset, so emails (password resets, deletion alerts) are only written to instance/mail/",
                     'set MAIL_SERVER, MAIL_PORT, MAIL_USERNAME, MAIL_PASSWORD and MAIL_FROM')
        return
    port = cfg.get("MAIL_PORT", 587)
    try:
        with smtplib.SMTP(server, port, timeout=5) as smtp:
            smtp.ehlo()
            if cfg.get("MAIL_USE_TLS"):
                if not smtp.has_extn("starttls"):
                    yield _error("MAIL_USE_TLS", f"{server}:{port} does not offer STARTTLS", "use the submission port 587 of a server with TLS")
                    return
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if cfg.get("MAIL_USERNAME"):
                smtp.login(cfg["MAIL_USERNAME"], cfg.get("MAIL_PASSWORD") or "")
    except smtplib.SMTPAuthenticationError:
        yield _error("MAIL_PASSWORD", f"{server}:{port} refused MAIL_USERNAME and MAIL_PASSWORD", "correct the SMTP credentials")
    except (OSError, smtplib.SMTPException) as exc:
        yield _error("MAIL_SERVER", f"{server}:{port} is unreachable ({type(exc).__name__})", "correct MAIL_SERVER and MAIL_PORT, or open the firewall")
    if "localhost" in str(cfg.get("MAIL_FROM") or "localhost"):
        yield _error("MAIL_FROM", f"{cfg.get('MAIL_FROM')!r} is not an address others can reply to", 'set MAIL_FROM = "portal@example.org"')


def check_providers() -> Iterator[Finding]:
    cfg = current_app.config
    for name in sorted(get_plugins().connectors()):
        settings = (cfg.get("CONNECTORS") or {}).get(name) or {}
        for key, value in sorted(settings.items()):
            if key.endswith("url") and isinstance(value, str) and urlsplit(value).scheme != "https":
                yield _error(f"CONNECTORS.{name}.{key}", f"{value!r} is not https (R61)", f"remove it (the provider's https default) or give an https URL")
        if settings.get("allow_insecure_http"):
            yield _error(f"CONNECTORS.{name}.allow_insecure_http", "it is on (for the sandbox only)", "remove it")


def _loopback_bind(bind: str) -> bool:
    if bind.startswith("unix:"):
        return True
    host = bind.rsplit(":", 1)[0].strip("[]") or "0.0.0.0"  # nosec B104: only read, to warn about a public bind
    return is_loopback_host(host)


def check_proxies() -> Iterator[Finding]:
    cfg = current_app.config
    bind = str(cfg.get("SERVE_BIND") or "127.0.0.1:8000")
    hops = cfg.get("TRUSTED_PROXIES", 0) or 0
    if not isinstance(hops, int) or isinstance(hops, bool) or hops < 0:
        yield _error("TRUSTED_PROXIES", f"{hops!r} is not a whole number", "set TRUSTED_PROXIES to the number of proxies in front (1 for nginx)")
    elif _loopback_bind(bind) and hops == 0:
        yield _error("TRUSTED_PROXIES", f"the portal listens on {bind}, behind a reverse proxy, but trusts none, so every client "
                     "looks like the proxy (one sign-in limit for everyone)", "set TRUSTED_PROXIES = 1 (2 with a load balancer in front of nginx)")
    elif not _loopback_bind(bind) and hops:
        yield _warning("TRUSTED_PROXIES", f"the portal listens on {bind} for anyone yet trusts {hops} X-Forwarded-For hop(s), "
                       "which a client can forge", "listen on 127.0.0.1 behind the proxy, or firewall the port to the proxy")


def check_users() -> Iterator[Finding]:
    from portal.auth.passwords import verify_password
    from portal.demo import DEMO_PASSWORD
    from portal.models import User

    try:
        demo = db.session.scalars(select(User.id).where(func.lower(User.email).like(f"%{DEMO_EMAIL_DOMAIN}"))).all()
    except Exception:
        db.session.rollback()
        return
    if demo:
        yield _error("users", f"{len(demo)} demo user(s) exist (ids {', '.join(map(str, demo[:10]))})",
                     "deploy on a fresh database, never one `flask portal demo` filled")
    rows = db.session.execute(
        select(User.id, User.password_hash).where(User.active.is_(True), User.password_hash.is_not(None))
        .order_by(User.is_support.desc(), User.id).limit(MAX_PASSWORD_CHECKS)
    ).all()
    known = [uid for uid, hashed in rows if verify_password(hashed, DEMO_PASSWORD)]
    if known:
        yield _error("users", f"{len(known)} user(s) have the demo's published password (ids {', '.join(map(str, known[:10]))})",
                     "deactivate them or reset their passwords")


def check_scheduler() -> Iterator[Finding]:
    from portal.ops.heartbeat import fresh_heartbeats

    cfg = current_app.config
    if cfg.get("SCHEDULER_ENABLED") and web_processes() > 1:
        yield _warning("SCHEDULER_ENABLED", f"on for `portal serve`, so each of its {web_processes()} workers schedules",
                       "leave it False for the web and run `portal scheduler` as one service (deploy/portal-scheduler.service)")
    try:
        running = fresh_heartbeats()
    except Exception:
        db.session.rollback()
        return
    if not running:
        yield _warning("scheduler", "no scheduler has beaten recently, so no extract or deletion runs",
                       "systemctl enable --now portal-scheduler (on one machine)")
    elif len(running) > 1:
        yield _warning("scheduler", f"{len(running)} schedulers are running ({', '.join(sorted(h.owner for h in running))}); "
                       "each firing still runs once, but one is the design", "keep portal-scheduler enabled on one machine only")


def check_broker() -> Iterator[Finding]:
    from portal.ops import probes

    probe = probes.broker()
    if probe is not None and not probe.ok:
        yield _error("CELERY.broker_url", f"the Celery broker is {probe.detail}", "start Redis or correct PORTAL_CELERY__broker_url")


def check_metrics() -> Iterator[Finding]:
    cfg = current_app.config
    if cfg.get("METRICS_ENABLED") and len(str(cfg.get("METRICS_TOKEN") or "")) < 24:
        yield _error("METRICS_TOKEN", "metrics are on without a token of at least 24 characters", f"set METRICS_TOKEN to the output of {GEN_SECRET}")
    if cfg.get("LOG_FORMAT") not in ("text", "json"):
        yield _error("LOG_FORMAT", f"{cfg.get('LOG_FORMAT')!r} is not a log format", 'set LOG_FORMAT = "json" (or "text")')


CHECKS: tuple[Callable[[], Iterator[Finding]], ...] = (
    check_keys, check_https_and_cookies, check_data_location, check_database, check_rate_limit_storage,
    check_ledger_path, check_mail, check_providers, check_proxies, check_users, check_scheduler, check_broker, check_metrics,
)


def run_checks() -> list[Finding]:
    """Run every deployment check in the current app context and return the findings, errors first."""
    findings = [finding for check in CHECKS for finding in check()]
    return sorted(findings, key=lambda f: f.level != "error")
