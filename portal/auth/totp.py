"""TOTP second factor: check a code once per time-step (replay protection), allowing one step of clock drift."""
from __future__ import annotations

import hmac

import pyotp
from sqlalchemy import or_, update

from portal.extensions import db
from portal.models import User
from portal.models.base import utcnow

# Phones' clocks drift: accept the code of the previous and the next 30-second step too.
DRIFT_STEPS = 1


def new_secret() -> str:
    """Return a fresh base32 TOTP secret."""
    return pyotp.random_base32()


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """Return the otpauth:// link authenticator apps read."""
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def matching_step(secret: str, code: str) -> int | None:
    """Return the time-step whose code equals ``code`` within the drift window, or None."""
    totp = pyotp.TOTP(secret)
    code = (code or "").strip()
    now = totp.timecode(utcnow())
    for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def accept_code(user: User, code: str, secret: str | None = None) -> bool:
    """Return whether the code is right and newer than the last code this user used; remember its step.

    The step is claimed with one conditional UPDATE, so two requests racing with the same code
    cannot both pass. The caller commits.
    """
    step = matching_step(secret or user.totp_secret or "", code)
    if step is None:
        return False
    result = db.session.execute(
        update(User)
        .where(User.id == user.id, or_(User.totp_last_step.is_(None), User.totp_last_step < step))
        .values(totp_last_step=step)
        .execution_options(synchronize_session="fetch")
    )
    return result.rowcount == 1


__all__ = ["accept_code", "matching_step", "new_secret", "provisioning_uri"]
