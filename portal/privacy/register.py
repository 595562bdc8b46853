"""The requests register: intake, routing to the controller, identity, extension, refusal and closure (R43–R47, R53).

Every step writes one audit entry (ids and codes only); callers commit.
"""
from __future__ import annotations

from datetime import date, timedelta

from flask import current_app
from sqlalchemy import select

from portal import audit, mail
from portal.extensions import db
from portal.models import Membership, Organisation, Role, User
from portal.models.base import utcnow
from portal.models.dsr import (
    OPEN_STATUSES,
    Controller,
    RequestStatus,
    RequestType,
    SubjectRequest,
    SubjectType,
)
from portal.privacy import deadlines
from portal.retention.calendar import london_date
from portal.scope import Action, can

CHANNELS = {"email": "Email", "letter": "Letter", "phone": "Telephone", "in_person": "In person", "web": "Web form"}
REQUESTER_KINDS = {"subject": "The data subject", "parent_carer": "A parent or carer", "staff": "A member of staff",
                   "user": "A user of the portal", "representative": "A representative (e.g. solicitor)"}
IDENTITY_METHODS = {"known_to_school": "Known to the school in person", "photo_id": "Photo identification seen",
                    "school_records": "Checked against school contact records", "signed_in": "Signed in to the portal",
                    "authority_document": "Letter of authority checked"}
# R45: the only two grounds for an extension.
EXTENSION_REASONS = {"complex": "The request is complex", "many_requests": "The requester has made many requests"}
TYPE_LABELS = {t.value: t.value.replace("_", " ").capitalize() for t in RequestType}


class RequestError(ValueError):
    """A step that is not allowed; ``code`` is stable, the message is plain English without personal data."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.field = code, field


def _today() -> date:
    return london_date(utcnow())


def create(
    *,
    user: User,
    request_type: str | None,
    received_on: date | None,
    channel: str | None,
    requester_kind: str | None,
    subject_type: str,
    school: Organisation | None = None,
    subject_external_id: str | None = None,
    subject_user_id: int | None = None,
    requester_contact: str = "",
    relationship: str = "",
    categories: list[str] | None = None,
    details: str = "",
) -> SubjectRequest:
    """Record a request (R43) and route it (R47): a school's pupil or staff member goes to that school.

    Raises RequestError, before anything is written, when a required part is missing.
    """
    if request_type not in {t.value for t in RequestType}:
        raise RequestError("type_required", "Choose the type of request.", "request_type")
    if received_on is None:
        raise RequestError("received_required", "Enter the date the request was received.", "received_on")
    if received_on > _today():
        raise RequestError("received_in_future", "The date received cannot be in the future.", "received_on")
    if channel not in CHANNELS:
        raise RequestError("channel_required", "Choose how the request was received.", "channel")
    if requester_kind not in REQUESTER_KINDS:
        raise RequestError("requester_required", "Choose who is asking.", "requester_kind")
    kind = SubjectType(subject_type)
    if kind in (SubjectType.pupil, SubjectType.staff):
        if school is None or not subject_external_id:
            raise RequestError("subject_required", "Choose the pupil or member of staff the request is about.", "subject")
        controller = Controller.school
    else:
        if subject_user_id is None:
            raise RequestError("subject_required", "Choose the user the request is about.", "subject")
        controller = Controller.operator
    if controller is Controller.school and not user.is_support and not can(user, Action.release_export, school):
        raise RequestError("not_allowed", "You cannot record requests for this school.")
    # R47: a request that reached the operator about a school's data is the school's to answer.
    routed = controller is Controller.school and user.is_support
    status = RequestStatus.routed_to_controller if routed else RequestStatus.identity_pending
    due = deadlines.deadline(received_on)
    req = SubjectRequest(
        request_type=RequestType(request_type), received_on=received_on, channel=channel, requester_kind=requester_kind,
        requester_contact=requester_contact or None, requester_relationship=relationship[:60], subject_type=kind,
        controller=controller, school_id=school.id if school else None, subject_external_id=subject_external_id,
        subject_user_id=subject_user_id, categories=list(categories or []), details=details or None, status=status,
        start_on=received_on, deadline_on=due, first_deadline_on=due, created_by_id=user.id,
    )
    db.session.add(req)
    db.session.flush()
    audit.record("dsr.received", organisation_id=req.school_id, target=req,
                 details={"type": req.request_type.value, "channel": channel, "controller": controller.value,
                          "subject_type": kind.value, "status": status.value})
    if routed:
        audit.record("dsr.routed", organisation_id=req.school_id, target=req, details={"school_id": req.school_id})
        notify_controller(req)
    return req


def controller_admins(school: Organisation) -> list[User]:
    """Return the active admins who answer for the school: its own, and its trust's for an academy (R47)."""
    orgs = [school.id] + ([school.trust_id] if school.trust_id else [])
    return list(db.session.execute(
        select(User).join(Membership, Membership.user_id == User.id).where(
            Membership.organisation_id.in_(orgs), Membership.suspended_at.is_(None),
            Membership.role.in_([Role.school_admin, Role.trust_admin]),
        ).distinct()
    ).scalars())


def notify_controller(req: SubjectRequest) -> None:
    """Email the school's admins, the same day, that a request awaits them; ids and dates only (R47, R65)."""
    admins = controller_admins(req.school)
    if not admins:
        return
    link = current_app.config["BASE_URL"].rstrip("/") + f"/schools/{req.school_id}/requests/{req.id}"
    mail.send([a.email for a in admins], f"A data-subject request (no. {req.id}) needs your answer",
              f"A {TYPE_LABELS[req.request_type.value].lower()} request about data your school controls reached us "
              f"and has been passed to you, as the controller.\n\nIt must be answered by "
              f"{req.deadline_on.strftime('%-d %B %Y')}.\n\nOpen it: {link}\n")


def _require_open(req: SubjectRequest) -> None:
    if req.status not in OPEN_STATUSES:
        raise RequestError("closed", "This request is closed.")


def verify_identity(req: SubjectRequest, user: User, method: str | None, *, proof_received_on: date | None = None) -> None:
    """Record how identity (and authority) was checked and by whom (R46); proof arriving later restarts the clock (R44)."""
    _require_open(req)
    if method not in IDENTITY_METHODS:
        raise RequestError("method_required", "Choose how identity was checked.", "method")
    if req.controller is Controller.school and user.is_support:
        raise RequestError("controller_only", "The school is the controller: it checks identity for its pupils and staff.")
    if proof_received_on is not None:
        if proof_received_on < req.received_on or proof_received_on > _today():
            raise RequestError("proof_date", "The proof date must be between the date received and today.", "proof_received_on")
        req.start_on = proof_received_on
        req.first_deadline_on = deadlines.deadline(proof_received_on)
        # R45: an extension already granted is kept: the restarted clock runs three months, not one.
        req.deadline_on = deadlines.deadline(proof_received_on, extended=req.extended_on is not None)
    req.identity_method, req.identity_checked_by_id, req.identity_verified_at = method, user.id, utcnow()
    req.status = RequestStatus.in_progress
    audit.record("dsr.identity_verified", organisation_id=req.school_id, target=req,
                 details={"method": method, "checked_by": user.id, "clock_restarted": proof_received_on is not None})


def require_verified(req: SubjectRequest) -> None:
    """Refuse any disclosure, change or erasure before identity is verified (R46)."""
    _require_open(req)
    if req.status is not RequestStatus.in_progress or req.identity_verified_at is None:
        raise RequestError("identity_pending", "Verify the requester's identity before acting on this request.")


def extend(req: SubjectRequest, user: User, reason: str | None, *, on: date | None = None) -> None:
    """Extend once, by two further months, for a complex request or many requests, before the first deadline (R45)."""
    _require_open(req)
    on = on or _today()
    if reason not in EXTENSION_REASONS:
        raise RequestError("reason_required", "Choose why the request needs more time.", "reason")
    if req.extended_on is not None:
        raise RequestError("already_extended", "This request has already been extended once.")
    if on > req.first_deadline_on:
        raise RequestError("too_late", "The first deadline has passed: the requester must be told before it.")
    req.extended_on, req.extension_reason = on, reason
    req.deadline_on = deadlines.deadline(req.start_on, extended=True)
    audit.record("dsr.extended", organisation_id=req.school_id, target=req,
                 details={"reason": reason, "deadline": req.deadline_on.isoformat()})
    # R45: the requester is told; the notice is logged (the school sends it: we hold no requester email by rule).
    audit.record("dsr.extension_notice", organisation_id=req.school_id, target=req, details={"on": on.isoformat()})


def refuse(req: SubjectRequest, user: User, reason: str | None) -> None:
    """Refuse with written reasons (R50, R53); the refusal letter gives the DPO contact and the ICO line."""
    _require_open(req)
    if not (reason or "").strip():
        raise RequestError("reason_required", "Give the written reasons for refusing.", "reason")
    _check_closer(req, user)
    req.status, req.refusal_reason, req.closed_at, req.outcome = RequestStatus.refused, reason.strip(), utcnow(), "refused"
    audit.record("dsr.refused", organisation_id=req.school_id, target=req, details={"by": user.id})


def complete(req: SubjectRequest, user: User, outcome: str = "done") -> None:
    """Close a request that was answered; an operator cannot close a school's request (R47)."""
    require_verified(req)
    _check_closer(req, user)
    req.status, req.closed_at, req.outcome = RequestStatus.completed, utcnow(), outcome
    audit.record("dsr.completed", organisation_id=req.school_id, target=req, details={"outcome": outcome})


def _check_closer(req: SubjectRequest, user: User) -> None:
    if req.controller is Controller.school and user.is_support:
        raise RequestError("controller_only", "The school is the controller: only the school can close this request.")


def refusal_letter(req: SubjectRequest) -> str:
    """Return the refusal text: reasons, DPO contact and the right to complain to the ICO (R53)."""
    dpo = current_app.config.get("DPO_EMAIL") or "the data protection officer"
    return (f"We cannot act on your request (reference {req.id}).\n\nOur reasons: {req.refusal_reason}\n\n"
            f"You can contact our data protection officer at {dpo}.\n"
            "You have the right to complain to the Information Commissioner's Office (ICO): "
            "https://ico.org.uk/make-a-complaint/ or 0303 123 1113.\n")


def queue(school_ids: list[int], *, include_closed: bool = False):
    """Return a query for the requests of the given schools, soonest deadline first."""
    query = select(SubjectRequest).where(SubjectRequest.school_id.in_(school_ids))
    if not include_closed:
        query = query.where(SubjectRequest.status.in_(OPEN_STATUSES))
    return query.order_by(SubjectRequest.deadline_on, SubjectRequest.id)


def send_reminders(today: date | None = None) -> int:
    """Email the controller's admins once about each open request due within WARN_DAYS; return how many were sent."""
    today = today or _today()
    horizon = today + timedelta(days=deadlines.WARN_DAYS)
    due = db.session.execute(
        select(SubjectRequest).where(
            SubjectRequest.status.in_(OPEN_STATUSES), SubjectRequest.deadline_on <= horizon,
            SubjectRequest.school_id.is_not(None),
        )
    ).scalars().all()
    sent = 0
    for req in due:
        # Once per deadline: an extended (or restarted) deadline gets its own reminder.
        if req.reminded_on is not None and req.reminded_on >= req.deadline_on - timedelta(days=deadlines.WARN_DAYS):
            continue
        admins = controller_admins(req.school)
        if admins:
            mail.send([a.email for a in admins], f"Data-subject request no. {req.id} is due on "
                      f"{req.deadline_on.strftime('%-d %B %Y')}",
                      f"Request no. {req.id} must be answered by {req.deadline_on.strftime('%-d %B %Y')}.\n")
            sent += 1
        req.reminded_on = today
        audit.record("dsr.reminder", organisation_id=req.school_id, target=req, details={"recipients": len(admins)})
    return sent


def is_overdue(req: SubjectRequest, today: date | None = None) -> bool:
    return req.status in OPEN_STATUSES and req.deadline_on < (today or _today())


def is_due_soon(req: SubjectRequest, today: date | None = None) -> bool:
    today = today or _today()
    return req.status in OPEN_STATUSES and today <= req.deadline_on <= today + timedelta(days=deadlines.WARN_DAYS)


__all__ = ["RequestError", "complete", "create", "extend", "queue", "refuse", "require_verified", "send_reminders",
           "verify_identity"]
