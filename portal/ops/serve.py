"""`portal serve`: gunicorn with portal/ops/gunicorn_conf.py, workers and threads sized from the CPU count."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from portal.jobs.commands import scheduler_command as run_scheduler
from portal.ops.requestlog import configure_logging

CONFIG = Path(__file__).with_name("gunicorn_conf.py")


def default_workers() -> int:
    """One worker per CPU (at least 2, so one busy worker never stops the site; at most 8)."""
    return max(2, min(os.cpu_count() or 1, 8))


DEFAULT_THREADS = 4


def gunicorn_argv(bind: str, workers: int, threads: int) -> list[str]:
    """Return the gunicorn command line `portal serve` runs."""
    return [sys.executable, "-m", "gunicorn", "--config", str(CONFIG), "--bind", bind,
            "--workers", str(workers), "--threads", str(threads), "portal.ops.wsgi:app"]


@click.command("serve")
@click.option("--bind", help="host:port or unix:/path (default SERVE_BIND, 127.0.0.1:8000).")
@click.option("--workers", type=click.IntRange(min=1), help="Processes (default SERVE_WORKERS, else one per CPU, 2 to 8).")
@click.option("--threads", type=click.IntRange(min=1), help="Threads per process (default SERVE_THREADS, else 4).")
@with_appcontext
def serve_command(bind: str | None, workers: int | None, threads: int | None) -> None:
    """Serve the portal in production with gunicorn (the scheduler runs apart: `portal scheduler`).

    SIGHUP (systemctl reload) starts new workers with new code and lets the old ones finish their requests.
    """
    cfg = current_app.config
    argv = gunicorn_argv(
        bind or cfg.get("SERVE_BIND") or "127.0.0.1:8000",
        workers or cfg.get("SERVE_WORKERS") or default_workers(),
        threads or cfg.get("SERVE_THREADS") or DEFAULT_THREADS,
    )
    # gunicorn_conf.py reads the log format from the environment (it runs before any app exists).
    os.environ["PORTAL_LOG_FORMAT"] = cfg.get("LOG_FORMAT", "text")
    sys.stdout.flush()
    sys.stderr.flush()
    # gunicorn replaces this process (so systemd's MAINPID is gunicorn's master and SIGHUP reaches it);
    # the master never imports the app, so a reload loads new code.
    os.execv(sys.executable, argv)


@click.command("scheduler")
@click.pass_context
@with_appcontext
def scheduler_command(ctx: click.Context) -> None:
    """Run the scheduler service in the foreground (one per deployment; logs to stderr in LOG_FORMAT)."""
    configure_logging(current_app.config["LOG_FORMAT"], current_app.config["LOG_LEVEL"])
    ctx.invoke(run_scheduler)
