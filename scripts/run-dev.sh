#!/usr/bin/env bash
# Development server: start the sandbox providers, load the demo through the real connectors, serve the portal.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export FLASK_APP=portal
# Plain http on 127.0.0.1 in development; production keeps secure cookies (the default).
export PORTAL_SESSION_COOKIE_SECURE=${PORTAL_SESSION_COOKIE_SECURE:-false}
export PORTAL_REMEMBER_COOKIE_SECURE=${PORTAL_REMEMBER_COOKIE_SECURE:-false}
export PORTAL_BASE_URL=${PORTAL_BASE_URL:-http://127.0.0.1:5000}
# R64: the development machine declares a UK data location (a deployment must declare its own).
export PORTAL_DATA_LOCATION=${PORTAL_DATA_LOCATION:-UK}

pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

# Each installed connector package with a sandbox gets one, on the fixed dev port its package declares
# (Connector.sandbox.dev_port); the connector is pointed at it unless PORTAL_CONNECTORS__<name>__* is set.
while read -r name port; do
  "$VENV/bin/flask" portal sandbox "$name" --port "$port" &
  pids+=($!)
done < <("$VENV/bin/python" -m portal.plugins.discover sandboxes)
while IFS= read -r assignment; do
  export "${assignment?}"
done < <("$VENV/bin/python" -m portal.plugins.discover env)
sleep 1  # let the sandboxes bind before the demo talks to them

"$VENV/bin/flask" portal demo
echo
echo "Serving the portal on http://127.0.0.1:5000 (Ctrl+C stops it and the sandboxes)"
PORTAL_SCHEDULER_ENABLED=${PORTAL_SCHEDULER_ENABLED:-true} "$VENV/bin/python" -c '
import sys
from werkzeug.serving import run_simple
sys.path.insert(0, ".")
import wsgi
run_simple("127.0.0.1", 5000, wsgi.app, use_reloader=False, threaded=True)
'
