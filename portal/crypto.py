"""Encryption at rest for secrets and special-category fields (Fernet, keys from configuration)."""
from __future__ import annotations

from typing import Any

from cryptography.fernet import InvalidToken, MultiFernet
from flask import current_app
from sqlalchemy import Text
from sqlalchemy.types import TypeDecorator

from portal.configuration import fernet_keys

MASK = "••••••••"


def _fernet() -> MultiFernet:
    ext = current_app.extensions
    if "portal.fernet" not in ext:
        ext["portal.fernet"] = MultiFernet(fernet_keys(current_app.config))
    return ext["portal.fernet"]


def encrypt(value: str) -> str:
    """Encrypt a string with the newest configured key."""
    return _fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    """Decrypt a string encrypted with any configured key."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError("a stored secret cannot be decrypted with the configured ENCRYPTION_KEYS") from None


def mask(value: str | None) -> str:
    """Return the on-screen stand-in for a secret: never any of its characters."""
    return MASK if value else ""


class EncryptedText(TypeDecorator):
    """A text column stored encrypted; reads and writes plain strings inside an app context."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else encrypt(str(value))

    def process_result_value(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else decrypt(value)
