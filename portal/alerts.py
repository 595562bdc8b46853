"""Alert emails to a school's admins: approval, revocation, failures the school must fix, held mass removals (R65)."""
from __future__ import annotations

import logging
from typing import Any

from flask import current_app
from sqlalchemy import or_, select

from portal import mail
from portal.extensions import db
from portal.models import Connection, JobRun, Membership, Organisation, Role, User
from portal.plugins.manager import get_plugins

log = logging.getLogger(__name__)

# Bodies name the school, the connector and portal links; never pupils, staff or field values (R65).
_FOOTER = "\n\nThis message contains no pupil data. Sign in to the portal for details.\n"


def recipients(school: Organisation) -> list[str]:
    """Email addresses of the school's active admins and its trust's admins."""
    clauses = [(Membership.organisation_id == school.id) & (Membership.role == Role.school_admin)]
    if school.trust_id:
        clauses.append((Membership.organisation_id == school.trust_id) & (Membership.role == Role.trust_admin))
    rows = db.session.execute(
        select(User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(or_(*clauses), Membership.suspended_at.is_(None), User.active.is_(True))
        .order_by(User.email)
    ).scalars()
    return sorted(set(rows))


def _link(path: str) -> str:
    return current_app.config["BASE_URL"].rstrip("/") + path


def _title(connection: Connection) -> str:
    cls = get_plugins().installed_connectors().get(connection.connector)
    return getattr(cls, "title", connection.connector)


def _send(school: Organisation, subject: str, body: str, **ids: Any) -> bool:
    to = recipients(school)
    if not to:
        log.info("alert %r for organisation %s has no recipients", subject, school.id)
        return False
    mail.send(to, subject, body + _FOOTER)
    log.info("alert sent for organisation %s: %s", school.id, ids)
    return True


def connection_approved(connection: Connection) -> bool:
    school = connection.school
    title = _title(connection)
    return _send(
        school,
        f"{title} connection approved for {school.name}",
        f"{title} has approved the portal's access to {school.name}'s MIS.\n"
        f"The first extract will run at the next scheduled time.\n\n"
        f"Connections: {_link(f'/schools/{school.id}/connections')}",
        connection=connection.id,
    )


def connection_revoked(connection: Connection, by_provider: bool) -> bool:
    school = connection.school
    title = _title(connection)
    who = (
        f"Access was switched off in the {title} school portal."
        if by_provider
        else "A school admin revoked the connection in this portal."
    )
    return _send(
        school,
        f"{title} connection revoked for {school.name}",
        f"{who}\nNo further data will be extracted through this connection. Data already held is "
        f"deleted according to the retention rules.\n\n"
        f"Connections: {_link(f'/schools/{school.id}/connections')}",
        connection=connection.id,
    )


def run_needs_school_action(run: JobRun) -> bool:
    connection = run.connection
    school = connection.school
    return _send(
        school,
        f"Action needed: the {_title(connection)} extract for {school.name} failed",
        f"Extract run {run.id} failed and needs someone at the school to act.\n"
        f"What went wrong: {run.error_message or 'see the run history'}\n\n"
        f"Run history: {_link(f'/schools/{school.id}/runs')}",
        run=run.id,
    )


def run_held(run: JobRun) -> bool:
    connection = run.connection
    school = connection.school
    removed = (run.stats or {}).get("hold", {}).get("pupils_removed")
    count = f" ({removed} records)" if isinstance(removed, int) else ""
    return _send(
        school,
        f"Extract held for review: {school.name}",
        f"Extract run {run.id} would remove an unusually large share of records{count}, so it was held.\n"
        f"Support staff will check it with the school before anything is removed.\n\n"
        f"Run history: {_link(f'/schools/{school.id}/runs')}",
        run=run.id,
    )


def extract_finished(run: JobRun) -> None:
    """Send the alert a finished extract run calls for, if any (called by the plugin hook)."""
    # The status first: nearly every run succeeds and calls for none (and then its connection is not loaded).
    if run.status.value not in ("held", "failed") or run.connection is None:
        return
    if run.status.value == "held":
        run_held(run)
    elif run.status.value == "failed" and run.error_kind is not None and run.error_kind.value == "school_action":
        # Revocations at the provider get their own message from the lifecycle.
        if run.error_code != "authorisation_lost":
            run_needs_school_action(run)


def terms_changed(school: Organisation, version: str) -> bool:
    """Tell the school's admins that new terms apply (a service message: sent whatever their marketing choice, R52)."""
    return _send(
        school,
        f"The portal's terms have changed: version {version}",
        f"Version {version} of the terms applies to {school.name}. Read and accept it in the portal.\n\n"
        f"Terms: {_link(f'/schools/{school.id}/terms')}",
        terms=version,
    )


def breach_notice(school: Organisation, incident_id: str) -> bool:
    """Tell the school's admins about a personal data breach affecting them (a service message, never marketing, R52)."""
    return _send(
        school,
        f"Personal data breach notice for {school.name} (incident {incident_id})",
        f"We are writing to tell you about personal data breach {incident_id} that affects {school.name}'s data.\n"
        "Our data protection officer will contact you with what happened, what data is involved and what we are doing.\n",
        incident=incident_id,
    )


def deletion_acknowledgements_overdue(school: Organisation, product: Any, count: int) -> int:
    """Tell the school's admins and the operator's support staff that a product has not confirmed deletions (R42).

    Returns how many messages went out (0, 1 or 2).
    """
    subject = f"Deletions not confirmed: {product.name} for {school.name}"
    body = (
        f"{product.name} has not confirmed, within 7 days, that it deleted its copies of {count} record(s) "
        f"of {school.name} that the portal deleted or stopped sharing.\n"
        f"Support staff will follow this up with the product's provider.\n\n"
    )
    sent = int(_send(school, subject, body + f"Who uses our data: {_link(f'/schools/{school.id}/data-use')}",
                     product=product.id))
    staff = sorted(set(db.session.execute(
        select(User.email).where(User.is_support.is_(True), User.active.is_(True))
    ).scalars()))
    if staff:
        mail.send(staff, subject, body + f"Operations: {_link('/admin/operations/')}" + _FOOTER)
        sent += 1
    return sent


def staff_access_suspended(school: Organisation, count: int) -> bool:
    """R59: tell the school's admins that users the MIS no longer shows as employed lost access (no names)."""
    return _send(
        school,
        f"{count} user{'s' if count != 1 else ''} lost access to {school.name}",
        f"The school's MIS no longer shows {count} portal user{'s' if count != 1 else ''} of {school.name} as "
        f"currently employed, so their access to this school was suspended by the latest extract.\n"
        f"Their access to other organisations is not affected.\n\n"
        f"Users: {_link(f'/schools/{school.id}/users')}",
        suspended=count,
    )
