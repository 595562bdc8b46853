"""flask-login wiring: users are loaded by their rotating session token, so logout is server-side."""
from __future__ import annotations

from flask import Flask, g
from sqlalchemy import select

from portal.extensions import db, login_manager
from portal.models import User


def init_login(app: Flask) -> None:
    """Bind flask-login to the app."""
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Sign in to see this page."
    login_manager.session_protection = "strong"

    @app.before_request
    def _forget_cached_user() -> None:
        # flask-login caches the user, and flask-wtf the CSRF token, on g, which lives as long as the app
        # context: where one context serves several requests (tests, scripts), each request must still
        # read both from its own cookie.
        g.pop("_login_user", None)
        g.pop("login_failed", None)  # set by the sign-in views for the rate limiter's deduct_when
        g.pop(app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), None)


@login_manager.user_loader
def load_user(token: str) -> User | None:
    if not token:
        return None
    return db.session.execute(select(User).where(User.session_token == token, User.active.is_(True))).scalar()
