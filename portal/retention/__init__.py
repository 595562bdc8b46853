"""Retention: rules as data, the daily sweep, the dry-run preview, deletion proofs and tracked deletions."""
from __future__ import annotations

from portal.retention.orders import cancel_connection_deletion, schedule_category_deletion, schedule_connection_deletion

__all__ = ["cancel_connection_deletion", "schedule_category_deletion", "schedule_connection_deletion"]
