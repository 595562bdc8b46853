# The portal's container image (docs/deploy.md, "Containers"): one process per container, chosen by the command:
#   portal serve | portal scheduler | celery -A portal.tasks worker | flask --app portal portal upgrade
# Runs as a non-root user and works with a read-only root filesystem (writable: the two volumes and /tmp).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    FLASK_APP=portal \
    PORTAL_INSTANCE_PATH=/var/lib/portal \
    PORTAL_RETENTION_LEDGER_PATH=/var/lib/portal-ledger/deletion-ledger.jsonl \
    PORTAL_SERVE_BIND=0.0.0.0:8000 \
    PORTAL_SERVE_FORWARDED_ALLOW_IPS=* \
    PORTAL_LOG_FORMAT=json

# pg_dump/pg_restore for `flask portal backup` and `restore` (the server's major version or newer).
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 portal \
    && useradd --system --uid 10001 --gid portal --home-dir /var/lib/portal --shell /usr/sbin/nologin portal \
    && install -d -o portal -g portal -m 0750 /var/lib/portal /var/lib/portal-ledger

WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY connectors ./connectors
COPY portal ./portal
COPY migrations ./migrations
# Installed from the source tree (editable): migrations/ lives beside the package, not inside it.
RUN python -m venv /opt/venv \
    && pip install -e ".[postgres,celery]" -e ./connectors/wonde -e ./connectors/groupcall \
    && python -m compileall -q /app/portal /app/connectors

USER 10001:10001
EXPOSE 8000
VOLUME ["/var/lib/portal", "/var/lib/portal-ledger"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["portal"]
CMD ["serve"]
