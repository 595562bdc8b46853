"""gunicorn settings of `portal serve`; bind, workers and threads come from the command line it builds.

Each setting is the one a proxied production site wants; docs/deploy.md explains them.
"""
import os

# gthread workers: a few threads per process keep slow clients and database waits from blocking a worker.
worker_class = "gthread"
# Longer than nginx's and common load balancers' idle timeout (60 s), so the proxy always closes an idle
# connection first and never sends a request down one gunicorn is closing (a 502).
keepalive = 75
# A request running longer than this is a stuck worker: it is replaced.
timeout = 60
# SIGHUP (systemctl reload) and SIGTERM let requests under way finish within this time.
graceful_timeout = 30
# Workers import the app after the fork: SIGHUP then loads new code, and no database connection is shared.
preload_app = False
# Restarting each worker now and then bounds any slow leak; jittered so they do not restart together.
max_requests = 2000
max_requests_jitter = 200
# Request lines only, never query strings (they may carry search terms or tokens); the proxy logs client addresses.
accesslog = "-"
access_log_format = '%({x-request-id}o)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'
errorlog = "-"
# X-Forwarded-* from the local proxy only; the app applies TRUSTED_PROXIES (ProxyFix) itself.
forwarded_allow_ips = os.environ.get("PORTAL_SERVE_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
proc_name = "portal-web"
# Leave the worker temporary files in memory (a read-only root filesystem in containers).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # nosec B108: gunicorn heartbeat files, no data

_json = os.environ.get("PORTAL_LOG_FORMAT", "text") == "json"
_formatter = (
    {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
     "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}}
    if _json else {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
)
# gunicorn's own loggers write to stderr (journald); the root logger is left to the app (portal.ops.requestlog).
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False, "qualname": "gunicorn.error"},
        "gunicorn.access": {"level": "INFO", "handlers": ["stderr"], "propagate": False, "qualname": "gunicorn.access"},
    },
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "portal", "stream": "ext://sys.stderr"}},
    "formatters": {"portal": _formatter},
}
