"""Password hashing with argon2 and the password policy."""
from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app, has_app_context

MIN_LENGTH = 12
DEFAULT_PROFILE = "RFC_9106_LOW_MEMORY"


@cache
def _hasher_for(profile: str) -> PasswordHasher:
    return PasswordHasher.from_parameters(getattr(profiles, profile))


def _hasher() -> PasswordHasher:
    # ARGON2_PROFILE names a profile of argon2-cffi; tests choose CHEAPEST, deployments keep the RFC default.
    profile = current_app.config.get("ARGON2_PROFILE", DEFAULT_PROFILE) if has_app_context() else DEFAULT_PROFILE
    return _hasher_for(profile)


@cache
def _dummy_hash_for(profile_hasher: PasswordHasher) -> str:
    return profile_hasher.hash("not-a-real-password-0000")


def _dummy_hash() -> str:
    # Verifying against this keeps the time of a failed sign-in for an unknown email like a known one.
    return _dummy_hash_for(_hasher())


def hash_password(password: str) -> str:
    """Return the argon2 hash of a password."""
    return _hasher().hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Return whether the password matches; constant work for unknown users."""
    try:
        return _hasher().verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher().check_needs_rehash(stored_hash)


def policy_problem(password: str) -> str | None:
    """Return what is wrong with a new password, or None."""
    if len(password) < MIN_LENGTH:
        return f"Password must be at least {MIN_LENGTH} characters long."
    if password.strip() != password:
        return "Password must not start or end with a space."
    return None
