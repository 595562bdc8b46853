"""In-code configuration defaults; deployments override them in instance/portal.cfg or PORTAL_* variables."""

# The database. SQLite in the instance folder is the embedded default; the factory fills in
# the path. PostgreSQL: postgresql+psycopg://user@host:5432/dbname
DATABASE_URL = None
# SQLite only: the page cache of each connection, in MB (SQLite's own default is 2). A full extract
# upserts into indexes keyed by pupil, so every batch touches pages all over them: with 2 MB they
# are read and written again at every commit (issue 19). Memory grows only as pages are used.
SQLITE_CACHE_MB = 64

# Generated into instance/secret_key on first run when not set.
SECRET_KEY = None
# Fernet key(s) for secrets at rest (comma-separated, newest first). Generated into
# instance/encryption_key on first run when not set.
ENCRYPTION_KEYS = None

# Cookies: secure by default; development over plain http sets PORTAL_SESSION_COOKIE_SECURE=false.
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
REMEMBER_COOKIE_SECURE = True
REMEMBER_COOKIE_HTTPONLY = True
REMEMBER_COOKIE_SAMESITE = "Lax"
PERMANENT_SESSION_LIFETIME = 8 * 3600
WTF_CSRF_ENABLED = True
WTF_CSRF_TIME_LIMIT = 3600

# Sign-in protection (flask-limiter syntax; only failed attempts count). Each list is a growing wait, never a
# lockout: after 5 failures for one account from one address that address waits a minute, after 10 a quarter
# of an hour, and so on; the right password from another address still works. The address limit counts
# failures for every account from one address (a school behind one NAT shares it, hence the higher numbers).
LOGIN_RATE_LIMIT_ACCOUNT = "5 per minute; 10 per 15 minutes; 20 per hour; 50 per day"
LOGIN_RATE_LIMIT_ADDRESS = "30 per 15 minutes; 100 per hour; 300 per day"
# Explicit, because the one module-level limiter would otherwise keep the previous app's choice.
RATELIMIT_ENABLED = True
# Where the limits are counted: memory:// is per process; with several processes or hosts use
# redis://host:6379/0 so that every process sees the same counts.
RATELIMIT_STORAGE_URI = "memory://"
# How many reverse proxies (nginx, a load balancer) stand in front of the portal. Each must append the
# client's address to X-Forwarded-For and set X-Forwarded-Proto and X-Forwarded-Host; the portal then takes
# the client's address from that many hops back. 0 (the default) trusts no such header.
TRUSTED_PROXIES = 0
RATELIMIT_HEADERS_ENABLED = True
PASSWORD_RESET_MAX_AGE = 3600
# R49: seconds a link confirming a new email address stays valid, and how often a user may ask for one.
EMAIL_CHANGE_MAX_AGE = 86400
EMAIL_CHANGE_RATE_LIMIT = "10 per hour"
# A profile name from argon2-cffi's argon2.profiles; the default is RFC 9106's low-memory profile.
ARGON2_PROFILE = "RFC_9106_LOW_MEMORY"
TOTP_ISSUER = "MIS connection portal"
# R63: roles that reach personal data in bulk must sign in with a second factor (support staff always do).
# A school may add "school_viewer".
TOTP_REQUIRED_ROLES = ["school_admin", "trust_admin", "la_officer"]

# Mail: with MAIL_SERVER unset, messages are written to instance/mail/ (development).
MAIL_SERVER = None
MAIL_PORT = 587
MAIL_USE_TLS = True
MAIL_USERNAME = None
MAIL_PASSWORD = None
MAIL_FROM = "portal@localhost"
# Used in links inside emails.
BASE_URL = "http://127.0.0.1:5000"

# Plugins.
PLUGINS_LOAD_ENTRYPOINTS = True
PLUGINS_BLOCKED: list[str] = []
PLUGINS: list[str] = []
# Connectors in use, by name; "*" means every installed connector package (installing one is the opt-in).
ENABLED_CONNECTORS: list[str] = ["*"]
TRACE_PLUGINS = False
# Per-connector settings, namespaced by connector name: CONNECTORS["wonde"]["token"].
CONNECTORS: dict = {}

# Jobs.
SCHEDULER_ENABLED = False
SCHEDULER_TIMEZONE = "Europe/London"
SCHEDULER_MISFIRE_GRACE_SECONDS = 3600
JOB_LEASE_SECONDS = 300
JOB_HEARTBEAT_SECONDS = 10
# A running run whose heartbeat is older than this is dead (its process stalled or its host went):
# the next run resumes it. On the same host a run whose process is gone is dead at once.
JOB_DEAD_AFTER_SECONDS = 45
# On stop (SIGTERM), running jobs get this long to finish; a run still going then is resumed later.
SCHEDULER_SHUTDOWN_GRACE_SECONDS = 30
# Housekeeping in every scheduling process: re-sync extract jobs with the connections, and
# take over runs whose process died (see portal.jobs.builtin).
JOB_REFRESH_SECONDS = 300
JOB_RECOVER_SECONDS = 60
EXECUTOR = "inprocess"
# With EXECUTOR = "celery" (docs/scaling.md): Celery settings in lower case, at least
# broker_url (PORTAL_CELERY__broker_url=redis://127.0.0.1:6379/0).
CELERY: dict = {}
# A queued run not picked up by a worker within this many seconds is sent to the broker again.
JOB_REQUEUE_SECONDS = 300
# A worker stops a run after this long (soft limit: the run ends "failed", timed_out).
JOB_TIME_LIMIT_SECONDS = 3600
# Most runs of one connector that may run at once across all workers, e.g. {"wonde": 8}.
PROVIDER_CONCURRENCY: dict = {}
# Most HTTP requests per second to one provider across all workers, e.g. {"wonde": 10}
# (a Redis token bucket with Celery, in-process otherwise; portal.jobs.limits).
PROVIDER_REQUESTS_PER_SECOND: dict = {}

# Extract engine.
EXTRACT_BATCH_SIZE = 5000
# Between commits, how often (seconds) a running extract checks that its connection is still approved
# and the run not cancelled (0: at every page). Every commit checks, locked, whatever this says (R4).
EXTRACT_PAGE_CHECK_SECONDS = 0.25
MASS_REMOVAL_THRESHOLD = 0.10
# Scheduled ("auto") runs are full when a category's last successful full run is older than this many
# days: deletions feeds and changesets can miss rows. A connection's own setting
# "full_reconciliation_days" overrides it.
FULL_RECONCILIATION_DAYS = 7
# R17/R18: how often each category is extracted, e.g. {"student_assessment": "weekly"}
# (PORTAL_EXTRACT_SCHEDULE__student_assessment=weekly). Unlisted categories are daily; attendance,
# basic and staff data are always daily; demographics, timetable and assessment may be weekly.
EXTRACT_SCHEDULE: dict = {}
# The (Europe/London) day on which weekly categories are extracted.
EXTRACT_WEEKLY_DAY = "sunday"

# R2: the terms version a school admin must accept before authorising a connection.
TERMS_VERSION = "2025-09"
TERMS_UPDATED = "2025-09-01"
# Provider webhooks: how far a signed timestamp may be from our clock.
WEBHOOK_TOLERANCE_SECONDS = 300

# Product data API: credential lifetime, per-credential rate limit (flask-limiter syntax), page sizes.
API_CREDENTIAL_DAYS = 365
API_RATE_LIMIT = "600 per minute"
API_PAGE_SIZE = 1000
API_MAX_PAGE_SIZE = 10000
# R73: reference to the DPA 2018 Schedule 1 appropriate policy document; without it special-category fields are withheld.
SPECIAL_CATEGORY_POLICY_DOCUMENT = None

# Retention (portal.retention). R35: live data is deleted this many days before its deadline, so
# no backup outlives it; set it to the backup retention period. R26: False = no bank-holiday calendar.
RETENTION_BACKUP_WINDOW_DAYS = 30
RETENTION_BANK_HOLIDAYS = True
RETENTION_BATCH_SIZE = 500
# R36: an "anonymise" rule keeps aggregate cells only; a cell about fewer pupils than this is suppressed.
RETENTION_SUPPRESSION_THRESHOLD = 10
# R35: the deletion ledger (JSON lines, no personal data) kept outside the database and its backups;
# None = deletion-ledger.jsonl in the instance folder. Keep a copy where database backups are not.
RETENTION_LEDGER_PATH = None
# R35: how often each process compares the ledger with the database to notice a restored backup.
RETENTION_LEDGER_CHECK_SECONDS = 60

# R64: the deployment must declare where pupil data lives ("UK"); unset, the portal refuses to start.
DATA_LOCATION = None

LOG_LEVEL = "INFO"

# Production (portal.ops, docs/deploy.md).
# "text" or "json" (one JSON object per line on stderr, with the request id).
LOG_FORMAT = "text"
# /metrics for Prometheus: off unless enabled, and only with "Authorization: Bearer <METRICS_TOKEN>".
METRICS_ENABLED = False
METRICS_TOKEN = None
# Every scheduling process records a heartbeat this often; /readyz calls it stale after three.
SCHEDULER_HEARTBEAT_SECONDS = 30
# `portal serve` (gunicorn): where to listen, and workers/threads (None: from the CPU count).
SERVE_BIND = "127.0.0.1:8000"
SERVE_WORKERS = None
SERVE_THREADS = None
