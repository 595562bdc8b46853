"""One-time recovery codes: shown once at two-factor enrolment, stored as argon2 hashes, each usable once."""
from __future__ import annotations

import secrets

from sqlalchemy import delete, select, update

from portal.auth.passwords import hash_password, verify_password
from portal.extensions import db
from portal.models import RecoveryCode, User
from portal.models.base import utcnow

COUNT = 10
# No 0/o, 1/l/i: codes are copied from paper.
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
LENGTH = 10  # 31^10, about 2^50: with argon2 and the sign-in limits, far beyond guessing


def normalise(code: str) -> str:
    """Return the code as stored: lower case, without the spaces and dashes people type."""
    return "".join(ch for ch in (code or "").lower() if ch.isalnum())


def _new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return f"{raw[:5]}-{raw[5:]}"


def replace_codes(user: User) -> list[str]:
    """Retire the user's codes and return fresh ones (shown once; only hashes are kept). The caller commits."""
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [_new_code() for _ in range(COUNT)]
    db.session.add_all(RecoveryCode(user_id=user.id, code_hash=hash_password(normalise(c))) for c in codes)
    return codes


def remaining(user: User) -> int:
    """Return how many unused codes the user has."""
    rows = db.session.execute(
        select(RecoveryCode.id).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
    ).all()
    return len(rows)


def use_code(user: User, code: str) -> bool:
    """Return whether ``code`` is one of the user's unused codes, marking it used. The caller commits.

    The code is claimed with a conditional UPDATE, so two requests racing with it cannot both pass.
    """
    typed = normalise(code)
    if len(typed) != LENGTH:
        return False
    unused = db.session.execute(
        select(RecoveryCode).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
    ).scalars()
    for row in unused:
        if verify_password(row.code_hash, typed):
            claim = (
                update(RecoveryCode)
                .where(RecoveryCode.id == row.id, RecoveryCode.used_at.is_(None))
                .values(used_at=utcnow())
                .execution_options(synchronize_session="fetch")
            )
            return db.session.execute(claim).rowcount == 1
    return False


__all__ = ["COUNT", "normalise", "remaining", "replace_codes", "use_code"]
