"""flask-login wiring: users are loaded by their rotating session token, so logout is server-side."""
from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from portal.extensions import db, login_manager
from portal.models import User


def init_login(app: Flask) -> None:
    """Bind flask-login to the app."""
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Sign in to see this page."
    login_manager.session_protection = "strong"


@login_manager.user_loader
def load_user(token: str) -> User | None:
    if not token:
        return None
    return db.session.execute(select(User).where(User.session_token == token, User.active.is_(True))).scalar()
