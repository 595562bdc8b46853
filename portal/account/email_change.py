"""Changing a user's email address: it applies only once the link sent to the new address is followed (R49).

The old address stays in use until then. Links are single-use and expire; only their hash is stored.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from flask import current_app
from sqlalchemy import func, select, update

from portal import audit, mail
from portal.account.errors import AccountError
from portal.extensions import db
from portal.models import EmailChangeToken, User
from portal.models.base import utcnow

def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _taken(email: str, user: User) -> bool:
    return db.session.execute(
        select(User.id).where(func.lower(User.email) == email.lower(), User.id != user.id)
    ).first() is not None


def pending(user: User) -> EmailChangeToken | None:
    """Return the user's newest unused, unexpired change, if any."""
    return db.session.execute(
        select(EmailChangeToken).where(EmailChangeToken.user_id == user.id, EmailChangeToken.used_at.is_(None),
                                       EmailChangeToken.expires_at > utcnow())
        .order_by(EmailChangeToken.id.desc()).limit(1)
    ).scalar()


def request_change(user: User, new_email: str, *, by: User | None = None) -> str:
    """Send a confirmation link to the new address (and a notice to the old one); return the token; caller commits.

    ``by`` is the support user acting on a rectification request, when it is not the user themselves.
    """
    new_email = (new_email or "").strip()
    if not new_email:
        raise AccountError("email_required", "Enter the new email address.", "email")
    if new_email.lower() == user.email.lower():
        raise AccountError("email_unchanged", "That is already the account's email address.", "email")
    if _taken(new_email, user):
        raise AccountError("email_taken", "Another account uses that email address.", "email")
    now = utcnow()
    # Only the newest link works: earlier pending changes are retired.
    db.session.execute(update(EmailChangeToken).where(EmailChangeToken.user_id == user.id, EmailChangeToken.used_at.is_(None))
                       .values(used_at=now).execution_options(synchronize_session=False))
    token = secrets.token_urlsafe(32)
    max_age = current_app.config["EMAIL_CHANGE_MAX_AGE"]
    db.session.add(EmailChangeToken(user_id=user.id, new_email=new_email, token_hash=_hash(token),
                                    expires_at=now + timedelta(seconds=max_age)))
    link = current_app.config["BASE_URL"].rstrip("/") + f"/account/email/{token}"
    hours = max_age // 3600
    mail.send(new_email, "Confirm your new email address for the MIS connection portal",
              "Someone asked to use this address for an MIS connection portal account.\n\n"
              f"To confirm it, open this link within {hours} hours:\n{link}\n\n"
              "Until you do, the account keeps its current address. If it was not you, ignore this email.\n")
    mail.send(user.email, "A change of email address was requested for your MIS connection portal account",
              "A change of this account's email address was requested. This address stays in use until the new "
              "one is confirmed from a link sent to it.\n\nIf it was not you, sign in and change your password, "
              "or contact support.\n")
    audit.record("account.email_change_requested", target=user,
                 details={"user_id": user.id, "by": (by or user).id})
    return token


def confirm(token: str) -> User:
    """Apply the change the link stands for, once; raise AccountError when the link is not usable."""
    row = db.session.execute(select(EmailChangeToken).where(EmailChangeToken.token_hash == _hash(token))).scalar()
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        raise AccountError("link_invalid", "This link is not valid: it has been used, has expired, or was replaced.")
    # A conditional UPDATE claims the link, so two requests racing with it cannot both apply it.
    claimed = db.session.execute(
        update(EmailChangeToken).where(EmailChangeToken.id == row.id, EmailChangeToken.used_at.is_(None))
        .values(used_at=utcnow()).execution_options(synchronize_session=False)
    ).rowcount
    user = db.session.get(User, row.user_id)
    if claimed != 1 or user is None:
        raise AccountError("link_invalid", "This link is not valid: it has been used, has expired, or was replaced.")
    if _taken(row.new_email, user):
        raise AccountError("email_taken", "Another account now uses that email address.")
    user.email = row.new_email
    audit.record("account.email_changed", target=user, details={"user_id": user.id, "token_id": row.id})
    return user
