"""Load configuration in one direction (defaults, instance file, PORTAL_* variables, test mapping) and validate it."""
from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from flask import Flask
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from portal.errors import StartupError

ENV_PREFIX = "PORTAL"


def instance_path(test_config: Mapping[str, Any] | None) -> str | None:
    """Return the instance folder: INSTANCE_PATH in the test mapping, else PORTAL_INSTANCE_PATH, else Flask's default."""
    if test_config is not None:
        chosen = test_config.get("INSTANCE_PATH")
    else:
        chosen = os.environ.get(f"{ENV_PREFIX}_INSTANCE_PATH")
    if not chosen:
        return None  # Flask's default: instance/ beside the package
    path = Path(chosen)
    if not path.is_absolute():
        raise StartupError(f"setting {ENV_PREFIX}_INSTANCE_PATH is invalid: it must be an absolute path")
    return str(path)


def load_config(app: Flask, test_config: Mapping[str, Any] | None) -> None:
    """Fill app.config from defaults, then the instance file, then PORTAL_* variables, then the test mapping."""
    app.config.from_object("portal.config")
    if test_config is None:
        try:
            app.config.from_pyfile("portal.cfg", silent=True)
        except Exception as exc:  # a syntax error in the deployment's file
            raise StartupError(f"instance/portal.cfg could not be read: {exc}") from None
        app.config.from_prefixed_env(ENV_PREFIX)
    else:
        app.config.from_mapping(test_config)
    _fill_generated_defaults(app)
    validate_config(app.config)


def _instance_secret(app: Flask, filename: str, make: Any) -> str:
    """Return a secret kept in the instance folder, creating it (mode 0600) on first run."""
    path = Path(app.instance_path) / filename
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


# Connections a process may hold on PostgreSQL: kept open, and opened beyond that when needed.
DATABASE_POOL_SIZE = 10
DATABASE_POOL_OVERFLOW = 30


def _fill_generated_defaults(app: Flask) -> None:
    cfg = app.config
    if not cfg.get("DATABASE_URL"):
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
        cfg["DATABASE_URL"] = f"sqlite:///{Path(app.instance_path) / 'portal.sqlite3'}"
    if not cfg.get("SECRET_KEY"):
        cfg["SECRET_KEY"] = _instance_secret(app, "secret_key", lambda: secrets.token_urlsafe(48))
    if not cfg.get("ENCRYPTION_KEYS"):
        cfg["ENCRYPTION_KEYS"] = _instance_secret(
            app, "encryption_key", lambda: Fernet.generate_key().decode()
        )
    cfg["SQLALCHEMY_DATABASE_URI"] = cfg["DATABASE_URL"]
    options = cfg.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"pool_pre_ping": True})
    if str(cfg["DATABASE_URL"]).startswith("postgresql"):
        # Room for a threaded Celery worker (docs/scaling.md): each of its runs holds up to three
        # connections at once (the run's session, a full run's writer thread, the lease heartbeat), and
        # SQLAlchemy's 5 + 10 could leave a night of full runs on 8 threads failing after 30 s' wait.
        # Connections open only when used, so a web process keeps the few it needs.
        options.setdefault("pool_size", DATABASE_POOL_SIZE)
        options.setdefault("max_overflow", DATABASE_POOL_OVERFLOW)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# key -> (check, what the value must be). Checked after every source is applied.
_CHECKS: dict[str, tuple[Any, str]] = {
    "SECRET_KEY": (lambda v: isinstance(v, str) and len(v) >= 16, "a string of at least 16 characters"),
    "SESSION_COOKIE_SECURE": (lambda v: isinstance(v, bool), "true or false"),
    "WTF_CSRF_ENABLED": (lambda v: isinstance(v, bool), "true or false"),
    "SCHEDULER_ENABLED": (lambda v: isinstance(v, bool), "true or false"),
    "PLUGINS_LOAD_ENTRYPOINTS": (lambda v: isinstance(v, bool), "true or false"),
    "ENABLED_CONNECTORS": (
        lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        'a JSON list of connector names, e.g. ["wonde"]',
    ),
    "PLUGINS": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a JSON list of module paths"),
    "PLUGINS_BLOCKED": (lambda v: isinstance(v, list), "a JSON list of plugin names"),
    "CONNECTORS": (lambda v: isinstance(v, dict), "a mapping of connector name to settings"),
    "TRUSTED_PROXIES": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10,
        "a whole number of reverse proxies in front of the portal, 0 to 10",
    ),
    "JOB_LEASE_SECONDS": (_is_positive_int, "a positive whole number of seconds"),
    "JOB_HEARTBEAT_SECONDS": (_is_positive_int, "a positive whole number of seconds"),
    "JOB_DEAD_AFTER_SECONDS": (_is_positive_int, "a positive whole number of seconds"),
    "SCHEDULER_SHUTDOWN_GRACE_SECONDS": (_is_positive_int, "a positive whole number of seconds"),
    "SCHEDULER_MISFIRE_GRACE_SECONDS": (_is_positive_int, "a positive whole number of seconds"),
    "EXTRACT_BATCH_SIZE": (_is_positive_int, "a positive whole number"),
    "EXTRACT_PAGE_CHECK_SECONDS": (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 60,
        "a number of seconds from 0 (every page) to 60",
    ),
    "SQLITE_CACHE_MB": (_is_positive_int, "a positive whole number of megabytes"),
    "FULL_RECONCILIATION_DAYS": (_is_positive_int, "a positive whole number of days"),
    "PASSWORD_RESET_MAX_AGE": (_is_positive_int, "a positive whole number of seconds"),
    "EMAIL_CHANGE_MAX_AGE": (_is_positive_int, "a positive whole number of seconds"),
    "MASS_REMOVAL_THRESHOLD": (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
        "a fraction between 0 and 1, e.g. 0.1",
    ),
    "TOTP_REQUIRED_ROLES": (
        lambda v: isinstance(v, list) and set(v) <= {"school_admin", "school_viewer", "trust_admin", "la_officer"},
        'a JSON list of roles among "school_admin", "school_viewer", "trust_admin", "la_officer"',
    ),
    "ARGON2_PROFILE": (
        lambda v: v in ("RFC_9106_LOW_MEMORY", "RFC_9106_HIGH_MEMORY", "CHEAPEST"),
        '"RFC_9106_LOW_MEMORY", "RFC_9106_HIGH_MEMORY" or (tests only) "CHEAPEST"',
    ),
    "EXECUTOR": (lambda v: v in ("inprocess", "celery"), '"inprocess" or "celery"'),
    # R64: pupil data stays in the UK; the deployment must say so or the portal refuses to start.
    "DATA_LOCATION": (lambda v: v == "UK", '"UK" (pupil data must be stored in the UK)'),
}


# R17/R18: the cadences each category may be set to (the first is the default).
EXTRACT_CADENCES: dict[str, tuple[str, ...]] = {
    "student_attendance_exclusions": ("daily",),
    "student_basic": ("daily",),
    "staff_basic": ("daily",),
    "student_demographics": ("daily", "weekly"),
    "student_timetable": ("daily", "weekly"),
    "student_assessment": ("daily", "weekly"),
}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _check_extract_schedule(cfg: Mapping[str, Any]) -> None:
    schedule = cfg.get("EXTRACT_SCHEDULE") or {}
    if not isinstance(schedule, Mapping):
        raise StartupError(f"setting {ENV_PREFIX}_EXTRACT_SCHEDULE is invalid: it must map categories to \"daily\" or \"weekly\"")
    for category, cadence in schedule.items():
        allowed = EXTRACT_CADENCES.get(category)
        if allowed is None:
            raise StartupError(f"setting {ENV_PREFIX}_EXTRACT_SCHEDULE__{category} is invalid: there is no such category")
        if str(cadence).strip().lower() not in allowed:
            must = "daily" if allowed == ("daily",) else "daily or weekly"
            raise StartupError(f"setting {ENV_PREFIX}_EXTRACT_SCHEDULE__{category} is invalid: it must be {must}")
    day = cfg.get("EXTRACT_WEEKLY_DAY", "sunday")
    if str(day).strip().lower() not in WEEKDAYS:
        raise StartupError(f"setting {ENV_PREFIX}_EXTRACT_WEEKLY_DAY is invalid: it must be a day name, e.g. sunday")


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Raise StartupError naming the first missing or invalid setting."""
    _check_extract_schedule(cfg)
    for key, (check, expected) in _CHECKS.items():
        if key not in cfg or cfg[key] is None:
            raise StartupError(f"setting {ENV_PREFIX}_{key} is missing: it must be {expected}")
        if not check(cfg[key]):
            raise StartupError(f"setting {ENV_PREFIX}_{key} is invalid: it must be {expected}")
    try:
        url = make_url(cfg["DATABASE_URL"])
    except (ArgumentError, TypeError):
        raise StartupError(
            f"setting {ENV_PREFIX}_DATABASE_URL is invalid: use sqlite:///path or postgresql+psycopg://user@host/db"
        ) from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise StartupError(f"setting {ENV_PREFIX}_DATABASE_URL is invalid: only SQLite and PostgreSQL are supported")
    try:
        fernet_keys(cfg)
    except ValueError:
        raise StartupError(f"setting {ENV_PREFIX}_ENCRYPTION_KEYS is invalid: it must hold Fernet keys") from None


def fernet_keys(cfg: Mapping[str, Any]) -> list[Fernet]:
    """Return the configured Fernet keys, newest first."""
    raw = cfg["ENCRYPTION_KEYS"]
    keys = raw if isinstance(raw, list) else str(raw).split(",")
    return [Fernet(k.strip().encode()) for k in keys if k.strip()]
