"""Plain-English wording for run failures (who must act, what happens next) and audit-trail actions."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorKindText:
    heading: str
    next_step: str
    tag: str  # CSS modifier


ERROR_KINDS = {
    "school_action": ErrorKindText(
        "The school needs to act",
        "Extracts stop until this is fixed. Once the school has fixed it, the next scheduled extract runs as normal.",
        "red",
    ),
    "provider_problem": ErrorKindText(
        "The provider has a problem",
        "Nothing for the school to do. Support staff have been told; the next scheduled extract will try again.",
        "orange",
    ),
    "temporary": ErrorKindText(
        "Temporary problem",
        "Nothing for the school to do. The portal will retry automatically.",
        "yellow",
    ),
    "internal": ErrorKindText(
        "A problem in the portal",
        "Nothing for the school to do. Support staff have been told and will fix it.",
        "orange",
    ),
}

_ACTIONS = {
    "terms.accepted": "Terms accepted",
    "connection.requested": "Connection authorised (access requested)",
    "connection.pending": "Waiting for the provider to approve",
    "connection.approved": "Connection approved by the provider",
    "connection.declined": "Access request declined",
    "connection.revoked": "Connection revoked",
    "connection.revoked_by_provider": "Access switched off at the provider",
    "connection.runs_cancelled": "Running extracts stopped",
    "connection.provider_revoke_queued": "Provider not reachable; revoke will be sent again",
    "connection.provider_revoke_delivered": "Provider told of the revocation",
    "connection.request_not_delivered": "Provider not reachable; request will be sent again",
    "connection.failing": "Connection failing",
    "connection.recovered": "Connection working again",
    "connection.paused": "Extracts paused by support staff",
    "connection.resumed": "Extracts resumed by support staff",
    "connection.migration": "The school is changing MIS",
    "product.authorised": "Product authorised",
    "product.revoked": "Product authorisation revoked",
    "deletions.published": "Products told to delete their copies",
    "deletions.overdue_alerted": "A product has not confirmed deletions within 7 days",
    "deletions.acknowledged": "A product confirmed it deleted its copies",
    "extract.run_requested": "Extract started by support staff",
    "extract.hold_approved": "Held removal approved by support staff",
    "extract.hold_rejected": "Held removal rejected by support staff",
}


def action_label(action: str) -> str:
    """Return the plain-English label of an audit action (falls back to the code itself)."""
    return _ACTIONS.get(action, action.replace("_", " ").replace(".", ": ").capitalize())
