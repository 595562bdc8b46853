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
    "extract.held": "Extract held for review: it would remove an unusually large share of records",
    "store.records_written": "Records saved from the MIS",
    "store.reconciliation_staged": "Records no longer in the MIS found; they are removed if the extract completes",
    "store.records_tombstoned": "Records that left the MIS marked as removed",
    "store.removals_discarded": "Planned removals cancelled: the extract did not complete",
    "store.rows_deleted": "Records deleted on schedule",
    "store.pupils_deleted": "Pupil records deleted",
    "store.dsr_read": "Records read for a data protection request",
    "store.dsr_search": "Records searched for a data protection request",
    "store.dsr_erased": "Records erased for a data protection request",
    "store.special_category_withheld": "Sensitive data held back from products",
    "retention.deletion_scheduled": "Deletion scheduled",
    "retention.deletion_cancelled": "Scheduled deletion cancelled",
    "retention.deleted": "Data deleted on schedule",
    "retention.user_data_deleted": "A user's data deleted on schedule",
    "retention.hold_created": "Deletion paused: legal hold",
    "retention.hold_changed": "Legal hold changed",
    "retention.hold_approved": "Legal hold approved",
    "retention.hold_released": "Legal hold ended",
    "retention.school_retention": "Retention settings changed",
    "demo.organisation_created": "Added to the demo",
    "demo.membership_created": "User added to the demo",
    "school.created": "School added to the portal",
    "dsr.received": "Data protection request received",
    "dsr.completed": "Data protection request completed",
    "dsr.refused": "Data protection request refused",
    "dsr.extended": "Data protection request deadline extended",
    "dsr.identity_verified": "Requester's identity confirmed",
    "dsr.export_prepared": "Copy of the data prepared",
    "dsr.export_downloaded": "Copy of the data downloaded",
    "dsr.erased": "Data erased on request",
    "dsr.restricted": "Use of a pupil's data restricted on request",
    "dsr.restriction_lifted": "Restriction lifted",
    "dsr.rectification_flagged": "Correction passed to the school's MIS team",
    "dsr.suppressed": "A pupil's data is no longer extracted",
    "dsr.suppression_lifted": "A pupil's data is extracted again",
}

# The first word of an audit action, for actions without their own wording: never the internal code itself.
_AREAS = {
    "admin": "Changed by support staff",
    "store": "Your school's data updated",
    "extract": "Extract updated",
    "retention": "Retention updated",
    "dsr": "Data protection request updated",
    "connection": "Connection updated",
    "product": "Product authorisation updated",
    "deletions": "Deletion instructions updated",
    "account": "Account updated",
    "auth": "Sign-in",
}

# Actions the provider takes, whoever's request or poll brought the news.
PROVIDER_ACTIONS = frozenset({"connection.approved", "connection.declined", "connection.revoked_by_provider"})


def action_label(action: str) -> str:
    """Return the plain-English label of an audit action."""
    if action in _ACTIONS:
        return _ACTIONS[action]
    return _AREAS.get(action.split(".", 1)[0], "Recorded for your school")
