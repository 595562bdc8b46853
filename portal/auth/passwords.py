"""Password hashing with argon2 and the password policy."""
from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
MIN_LENGTH = 12


@cache
def _dummy_hash() -> str:
    # Verifying against this keeps the time of a failed sign-in for an unknown email like a known one.
    return _hasher.hash("not-a-real-password-0000")


def hash_password(password: str) -> str:
    """Return the argon2 hash of a password."""
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Return whether the password matches; constant work for unknown users."""
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)


def policy_problem(password: str) -> str | None:
    """Return what is wrong with a new password, or None."""
    if len(password) < MIN_LENGTH:
        return f"Password must be at least {MIN_LENGTH} characters long."
    if password.strip() != password:
        return "Password must not start or end with a space."
    return None
