"""The error an account step raises: a stable code and a plain-English message without personal data."""
from __future__ import annotations


class AccountError(ValueError):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.field = code, field
