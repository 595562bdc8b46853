"""Webhook verification: a secret in the URL (Wonde signs nothing) and, when configured, an HMAC with a timestamp."""
from __future__ import annotations

import hashlib
import hmac
import time


class VerificationFailed(Exception):
    """The request is not from the provider; ``code`` is stable for the JSON error."""

    def __init__(self, code: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def check_secret(expected: str | None, given: str) -> None:
    """Compare the URL secret in constant time."""
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        raise VerificationFailed("unknown_webhook", "No webhook is registered at this address.", 404)


def sign(key: str, timestamp: str, body: bytes) -> str:
    """Return the hex HMAC-SHA256 of "<timestamp>.<body>" (what a sender puts in X-Webhook-Signature)."""
    return hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def check_signature(key: str, timestamp: str | None, signature: str | None, body: bytes, tolerance: int, now: float | None = None) -> None:
    """Require a fresh timestamp and a matching signature."""
    if not timestamp or not signature:
        raise VerificationFailed("signature_missing", "The X-Webhook-Timestamp and X-Webhook-Signature headers are required.")
    try:
        sent = int(timestamp)
    except ValueError:
        raise VerificationFailed("bad_timestamp", "X-Webhook-Timestamp must be whole seconds since 1970.") from None
    if abs((now if now is not None else time.time()) - sent) > tolerance:
        raise VerificationFailed("stale_timestamp", f"The timestamp is more than {tolerance} seconds from our clock.")
    if not hmac.compare_digest(sign(key, timestamp, body), signature.strip().lower()):
        raise VerificationFailed("bad_signature", "The signature does not match the body.")
