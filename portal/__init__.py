"""The MIS connection portal: create_app() wires one application and starts nothing."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

__all__ = ["create_app"]


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Create and configure one portal application.

    Configuration flows one way: portal/config.py defaults, then instance/portal.cfg, then
    PORTAL_* environment variables, then ``test_config`` (which replaces the middle two).
    Raises portal.errors.StartupError with a one-line message when a setting is wrong or the
    database cannot be reached.
    """
    from portal.configuration import instance_path, load_config

    app = Flask(__name__, instance_relative_config=True, instance_path=instance_path(test_config))
    from portal import converters, security_headers

    converters.init_app(app)
    load_config(app, test_config)
    register_proxies(app)
    security_headers.init_app(app)
    register_logging(app)
    register_extensions(app)
    from portal.plugins import manager

    plugins = manager.init_app(app)
    register_blueprints(app)
    register_errorhandlers(app)
    from portal.admin import init_admin

    init_admin(app)
    register_commands(app)
    from portal.jobs import scheduler

    scheduler.init_app(app)
    plugins.startup(app)
    check_database(app)
    return app


def register_proxies(app: Flask) -> None:
    """Take the client's address and scheme from the TRUSTED_PROXIES reverse proxies in front, if any."""
    hops = app.config["TRUSTED_PROXIES"]
    if hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Only the headers a proxy sets: X-Forwarded-Prefix/Port are left off, a client could forge them.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]


def register_logging(app: Flask) -> None:
    """Set the portal's log level; handlers are the deployment's business."""
    import logging

    logging.getLogger("portal").setLevel(app.config["LOG_LEVEL"])
    from portal import ops

    ops.init_app(app)  # request ids, JSON logs, /healthz /readyz /metrics


def register_extensions(app: Flask) -> None:
    """Bind the unbound extensions to this app."""
    from portal import models  # noqa: F401  (register every table on the metadata)
    from portal.auth.session import init_login
    from portal.extensions import csrf, db, limiter, migrate

    db.init_app(app)
    from portal import sqlite_settings

    sqlite_settings.init_app(app)
    migrate.init_app(app, db, directory=str(_migrations_dir()), render_as_batch=True, compare_type=True)
    csrf.init_app(app)
    limiter.init_app(app)
    init_login(app)
    from portal import audit

    audit.init_app(app)


def _migrations_dir():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "migrations"


def register_blueprints(app: Flask) -> None:
    """Mount the page and API blueprints."""
    from portal import scope

    scope.init_app(app)
    from portal.auth.views import bp as auth_bp
    from portal.school.products import bp as school_products_bp
    from portal.school.views import bp as school_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(school_bp)
    app.register_blueprint(school_products_bp)
    from portal.extensions import csrf
    from portal.api.statements import bp as statements_bp
    from portal.api.views import bp as api_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(statements_bp)
    from portal.retention.views import bp as retention_bp

    app.register_blueprint(retention_bp)
    from portal.members import bp as members_bp

    app.register_blueprint(members_bp)
    from portal.privacy.views import bp as privacy_bp

    app.register_blueprint(privacy_bp)
    from portal.account.views import bp as account_bp
    from portal.account.views import marketing_opt_out

    # The one-click opt-out (RFC 8058) is posted by mail programs without a session; the signed link replaces CSRF.
    csrf.exempt(marketing_opt_out)
    app.register_blueprint(account_bp)
    from portal.oversight import views as oversight_views

    oversight_views.init_app(app)
    register_connector_blueprints(app)


def register_connector_blueprints(app: Flask) -> None:
    """Mount the routes each enabled connector brings (``Connector.blueprint``: Wonde's webhook, Groupcall's callback)."""
    from portal.extensions import csrf
    from portal.plugins.manager import get_plugins

    for connector in get_plugins(app).connectors().values():
        blueprint = connector.blueprint
        if blueprint is not None and blueprint.name not in app.blueprints:
            # Providers post from their servers with no session cookie: each route checks its own shared secret.
            csrf.exempt(blueprint)
            app.register_blueprint(blueprint)


def register_errorhandlers(app: Flask) -> None:
    """Answer errors with a page (or JSON for the API), never a traceback."""
    from portal.web_errors import init_app

    init_app(app)


def register_commands(app: Flask) -> None:
    """Add the ``flask portal ...`` commands."""
    from portal.cli import portal_cli, register_area_commands

    register_area_commands(portal_cli)
    if "portal" not in app.cli.commands:
        app.cli.add_command(portal_cli)


def check_database(app: Flask) -> None:
    """Fail start-up with one line when the database cannot be reached."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from portal.errors import StartupError
    from portal.extensions import db

    with app.app_context():
        try:
            with db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            url = db.engine.url.render_as_string(hide_password=True)
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0][:200]
            raise StartupError(f"the database at {url} cannot be reached: {reason}") from None
