"""Marketing email on consent (R52): off by default, opt-in and opt-out equally easy, a one-click opt-out in every send.

Service messages (extract failures, breach notices, terms changes) go through portal.alerts and ignore this preference.
"""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select

from portal import audit, mail
from portal.extensions import db
from portal.models import User
from portal.models.base import utcnow

_SALT = "marketing-opt-out"


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=_SALT)


def opt_out_token(user: User) -> str:
    """Return the signed token of the user's opt-out link; it never expires, so an old email's link still works."""
    return _serializer().dumps({"u": user.id})


def opt_out_link(user: User) -> str:
    # A plain path, not url_for: sends run from the command line, outside any request.
    return current_app.config["BASE_URL"].rstrip("/") + f"/marketing/opt-out/{opt_out_token(user)}"


def user_for_token(token: str) -> User | None:
    try:
        data = _serializer().loads(token)
    except BadSignature:
        return None
    return db.session.get(User, data.get("u")) if isinstance(data, dict) else None


def set_preference(user: User, opt_in: bool, *, via: str) -> bool:
    """Record the user's choice at once; return whether it changed. ``via`` is "account" or "email_link"; caller commits."""
    if user.marketing_opt_in == opt_in:
        return False
    user.marketing_opt_in, user.marketing_changed_at = opt_in, utcnow()
    audit.record("account.marketing_opt_in" if opt_in else "account.marketing_opt_out", target=user,
                 actor=f"user:{user.id}", actor_user_id=user.id, details={"user_id": user.id, "via": via})
    return True


@dataclass
class SendResult:
    sent: int
    left_out: int


def recipients() -> list[User]:
    """Active users who opted in and whose processing is not restricted, read at send time."""
    return list(db.session.execute(
        select(User).where(User.active.is_(True), User.marketing_opt_in.is_(True),
                           User.processing_restricted_at.is_(None)).order_by(User.id)
    ).scalars())


def send(subject: str, body: str) -> SendResult:
    """Send one marketing email to each opted-in user, each with their own one-click opt-out link; caller commits.

    The send only reads the preference: it never sets it, so an opt-out is never overridden.
    """
    if not subject.strip() or not body.strip():
        raise ValueError("a marketing email needs a subject and a body")
    to = recipients()
    total = db.session.execute(select(User.id).where(User.active.is_(True))).all()
    for user in to:
        link = opt_out_link(user)
        mail.send(user.email, subject, f"{body.rstrip()}\n\n--\nYou get these emails because you chose to. "
                  f"Stop them with one click: {link}\n",
                  headers={"List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
    result = SendResult(sent=len(to), left_out=len(total) - len(to))
    audit.record("marketing.sent", actor="system", details={"sent": result.sent, "left_out": result.left_out})
    return result
