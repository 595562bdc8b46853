"""The connection lifecycle: the only code that changes Connection.state (request, approve, decline, revoke, fail).

Every change writes the state, when and by whom, an audit entry, and commits at once, so a
revocation is visible to a running extract's next page check (R4). Emails go out after the
commit and never carry pupil data (R65).
"""
from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from dateutil.relativedelta import relativedelta
from flask import current_app
from sqlalchemy import select, update

from portal import alerts, audit
from portal.connectors import Connector, ConnectorError
from portal.errors import code_location
from portal.extensions import db
from portal.models import (
    AccessRequest,
    Connection,
    ConnectionState,
    JobRun,
    Organisation,
    RunStatus,
    TermsAcceptance,
    User,
)
from portal.models.base import utcnow
from portal.plugins.manager import get_plugins

log = logging.getLogger(__name__)

# Kind and job id of the rows that remember a provider-side revoke still to be delivered (R4).
PROVIDER_REVOKE_KIND = "provider_revoke"
# R32: data held through a revoked connection is deleted this long after the revocation.
RETENTION_AFTER_REVOKE = relativedelta(months=6)

# From which states each action may start; anything else is refused with a clear message.
_CAN_REQUEST = {ConnectionState.not_connected, ConnectionState.revoked, ConnectionState.declined, ConnectionState.requested}
_CAN_REVOKE = {ConnectionState.requested, ConnectionState.pending, ConnectionState.approved, ConnectionState.failing}
_CAN_APPROVE = {ConnectionState.requested, ConnectionState.pending, ConnectionState.approved, ConnectionState.failing}

Actor = User | str | None


class LifecycleError(Exception):
    """A lifecycle step refused; ``message`` is plain English for the page, ``code`` is stable for APIs."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Contact:
    """The school contact the provider should talk to about the request."""

    name: str
    email: str


# ---------------------------------------------------------------- terms (R2)


def current_terms_version() -> str:
    return current_app.config["TERMS_VERSION"]


def terms_acceptance(school: Organisation, version: str | None = None) -> TermsAcceptance | None:
    """Return the school's acceptance of the given (default: current) terms version, if any."""
    version = version or current_terms_version()
    return db.session.execute(
        select(TermsAcceptance).where(TermsAcceptance.school_id == school.id, TermsAcceptance.version == version)
    ).scalar()


def accept_terms(school: Organisation, user: User, version: str) -> TermsAcceptance:
    """Record that the user accepted this terms version for the school (only the current version may be accepted)."""
    if version != current_terms_version():
        raise LifecycleError("terms_version_not_current", "These terms are no longer current. Read the current terms and accept them.")
    existing = terms_acceptance(school, version)
    if existing is not None:
        return existing
    acceptance = TermsAcceptance(school_id=school.id, version=version, user_id=user.id, accepted_at=utcnow())
    db.session.add(acceptance)
    db.session.flush()
    audit.record(
        "terms.accepted",
        organisation_id=school.id,
        target=acceptance,
        details={"version": version},
        **_actor_kwargs(user),
    )
    db.session.commit()
    return acceptance


# ---------------------------------------------------------------- helpers


def _actor_kwargs(actor: Actor) -> dict[str, Any]:
    if isinstance(actor, User):
        return {"actor": f"user:{actor.id}", "actor_user_id": actor.id}
    if isinstance(actor, str):
        return {"actor": actor, "actor_user_id": None}
    return {}


def connection_for(school: Organisation, connector_name: str) -> Connection:
    """Return the school's connection for the connector, creating a not-connected one (flushed, not committed)."""
    conn = db.session.execute(
        select(Connection).where(Connection.school_id == school.id, Connection.connector == connector_name)
    ).scalar()
    if conn is None:
        conn = Connection(school_id=school.id, connector=connector_name, state=ConnectionState.not_connected)
        conn.school = school
        db.session.add(conn)
        db.session.flush()
    return conn


def connection_settings(connection: Connection) -> dict[str, Any]:
    """Deployment settings for the connector overlaid with the connection's own decrypted settings."""
    merged = dict(current_app.config.get("CONNECTORS", {}).get(connection.connector, {}) or {})
    if connection.settings_encrypted:
        merged.update(json.loads(connection.settings_encrypted))
    return merged


def connector_instance(connection: Connection) -> Connector:
    """Build the enabled connector of this connection with its merged settings."""
    try:
        cls = get_plugins().connector(connection.connector)
    except KeyError:
        raise LifecycleError("connector_not_enabled", "This connector is not available on this portal.") from None
    return cls(connection_settings(connection))


def _set_state(connection: Connection, state: ConnectionState, actor: Actor, action: str, **details: Any) -> None:
    previous = connection.state
    connection.state = state
    connection.state_changed_at = utcnow()
    connection.state_changed_by_id = actor.id if isinstance(actor, User) else None
    audit.record(
        action,
        organisation_id=connection.school_id,
        target=connection,
        details={"connector": connection.connector, "from": previous.value if previous else None, "to": state.value, **details},
        **_actor_kwargs(actor),
    )


def cancel_runs(connection: Connection, reason: str) -> int:
    """Mark the connection's queued and running runs cancelled (the engine stops at its next page check)."""
    now = utcnow()
    result = db.session.execute(
        update(JobRun)
        .where(JobRun.connection_id == connection.id, JobRun.status.in_([RunStatus.queued, RunStatus.running]))
        .where(JobRun.kind != PROVIDER_REVOKE_KIND)
        .values(status=RunStatus.cancelled, finished_at=now, error_code="connection_revoked", error_message=reason)
        .execution_options(synchronize_session="fetch")
    )
    return result.rowcount or 0


def deletion_date(revoked_at: datetime | date) -> date:
    """Return the date the data held through a connection revoked then is deleted (R32)."""
    day = revoked_at.date() if isinstance(revoked_at, datetime) else revoked_at
    return day + RETENTION_AFTER_REVOKE


def _schedule_deletion(connection: Connection, *, immediate: bool, user: Actor) -> bool:
    """Hand the deletion to the retention engine if it is installed; return whether it was scheduled."""
    # Call site for R7/R32: the retention engineer provides schedule_connection_deletion.
    func = _retention("schedule_connection_deletion")
    if func is None:
        log.warning("retention engine not installed: deletion of connection %s not scheduled", connection.id)
        return False
    func(connection, immediate=immediate, user=user if isinstance(user, User) else None)
    return True


def _retention(name: str):
    """Return a function of the retention engine's orders module, or None when it is not installed."""
    try:
        module = importlib.import_module("portal.retention.orders")
    except ImportError as exc:
        if exc.name not in ("portal.retention", "portal.retention.orders"):
            raise
        return None
    return getattr(module, name, None)


def _after_commit_alert(func, *args: Any) -> None:
    try:
        func(*args)
    except Exception as exc:  # an email failure must never undo a state change
        # R65: an SMTP error quotes addresses; type and location only.
        log.error("alert %s failed with %s at %s", getattr(func, "__name__", func), type(exc).__name__, code_location(exc))


# ---------------------------------------------------------------- the lifecycle


def request_access(connection: Connection, user: User, contact: Contact | Mapping[str, str]) -> Connection:
    """Ask the provider for access (R1, R2): needs the current terms accepted; ends requested, pending or approved."""
    if isinstance(contact, Mapping):
        contact = Contact(name=contact.get("name", ""), email=contact.get("email", ""))
    school = connection.school
    if connection.state not in _CAN_REQUEST:
        raise LifecycleError("already_connected", "This connection is already authorised or waiting for approval.")
    if terms_acceptance(school) is None:
        raise LifecycleError("terms_not_accepted", "Accept the current terms before you authorise a connection.")
    connector = connector_instance(connection)
    db.session.add(
        AccessRequest(
            connection_id=connection.id,
            requested_by_id=user.id,
            contact_name=contact.name,
            contact_email=contact.email,
            terms_version=current_terms_version(),
        )
    )
    _set_state(
        connection, ConnectionState.requested, user, "connection.requested",
        terms_version=current_terms_version(), categories=list(connector.categories),
    )
    db.session.commit()
    try:
        status = _ask_provider(connector, school, contact)
    except ConnectorError as exc:
        # Stays "requested"; the access poll asks again later.
        audit.record(
            "connection.request_not_delivered", organisation_id=connection.school_id, target=connection,
            details={"connector": connection.connector, "error_code": exc.code}, actor="system",
        )
        db.session.commit()
        return connection
    return apply_access_status(connection, status, actor=user)


def _ask_provider(connector: Connector, school: Organisation, contact: Contact | None) -> Any:
    # Provider-neutral {"name", "email"} contacts (Connector.request_access); a provider may ignore them.
    contacts = [{"name": contact.name, "email": contact.email}] if contact is not None else []
    return connector.request_access(school, contacts=contacts)


def apply_access_status(connection: Connection, status: Any, actor: Actor = "provider") -> Connection:
    """Move the connection to what the provider says about it (an AccessStatus)."""
    if status.provider_school_id and not connection.provider_school_id:
        connection.provider_school_id = status.provider_school_id
    if status.state == "approved":
        return mark_approved(connection, actor)
    if status.state == "declined":
        return mark_declined(connection, actor, detail=status.detail.get("reason") if status.detail else None)
    if status.state == "revoked" and connection.state in _CAN_REVOKE:
        return mark_revoked_by_provider(connection, "revoked at the provider")
    if status.state == "pending" and connection.state == ConnectionState.requested:
        _set_state(connection, ConnectionState.pending, actor, "connection.pending")
    db.session.commit()
    return connection


def mark_approved(connection: Connection, actor: Actor = "provider", *, settings: Mapping[str, Any] | None = None) -> Connection:
    """The provider approved access: extracts may start (R1). Re-authorising cancels a pending deletion (R32)."""
    if settings:
        merged = json.loads(connection.settings_encrypted) if connection.settings_encrypted else {}
        merged.update(settings)
        connection.settings_encrypted = json.dumps(merged)
    if connection.state == ConnectionState.approved:
        db.session.commit()
        return connection
    if connection.state not in _CAN_APPROVE:
        raise LifecycleError("not_requested", "Access was not requested for this connection.")
    if connection.state != ConnectionState.failing:
        # A real approval; failing -> approved is a recovery and must not force a full extract.
        connection.authorised_at = utcnow()
    _set_state(connection, ConnectionState.approved, actor, "connection.approved")
    cancel = _retention("cancel_connection_deletion")
    if cancel is not None:
        # R32: re-authorising before the deadline cancels the 6-month deletion clock.
        cancel(connection, user=actor if isinstance(actor, User) else None)
    db.session.commit()
    _after_commit_alert(alerts.connection_approved, connection)
    return connection


def mark_declined(connection: Connection, actor: Actor = "provider", *, detail: str | None = None) -> Connection:
    """The school (or provider) declined the request."""
    if connection.state in (ConnectionState.requested, ConnectionState.pending):
        _set_state(connection, ConnectionState.declined, actor, "connection.declined")
    db.session.commit()
    return connection


def revoke(connection: Connection, user: User, *, delete_now: bool = False) -> Connection:
    """Revoke at once (R4): state first, runs cancelled, then the provider is told (retried later if unreachable)."""
    if connection.state not in _CAN_REVOKE:
        raise LifecycleError("not_connected", "This connection is not authorised, so there is nothing to revoke.")
    _set_state(connection, ConnectionState.revoked, user, "connection.revoked", delete_now=delete_now)
    cancelled = cancel_runs(connection, "Stopped because the school revoked the connection.")
    if cancelled:
        audit.record(
            "connection.runs_cancelled", organisation_id=connection.school_id, target=connection,
            details={"cancelled": cancelled}, **_actor_kwargs(user),
        )
    _schedule_deletion(connection, immediate=delete_now, user=user)
    db.session.commit()
    _deliver_provider_revoke(connection)
    _after_commit_alert(alerts.connection_revoked, connection, False)
    return connection


def _deliver_provider_revoke(connection: Connection) -> bool:
    """Tell the provider; if it cannot be reached, queue a row the retry job picks up (R4)."""
    try:
        connector_instance(connection).revoke_access(connection.school)
    except (ConnectorError, LifecycleError) as exc:
        code = getattr(exc, "code", "error")
        db.session.add(
            JobRun(
                job_id=f"{PROVIDER_REVOKE_KIND}:{connection.id}", kind=PROVIDER_REVOKE_KIND,
                scheduled_for=utcnow(), connection_id=connection.id, status=RunStatus.queued,
                error_code=code, error_message="The provider could not be told yet; the portal will try again.",
            )
        )
        audit.record(
            "connection.provider_revoke_queued", organisation_id=connection.school_id, target=connection,
            details={"connector": connection.connector, "error_code": code}, actor="system",
        )
        db.session.commit()
        return False
    return True


def retry_provider_revokes() -> int:
    """Retry queued provider-side revokes; return how many were delivered (run by a scheduled job)."""
    delivered = 0
    rows = db.session.execute(
        select(JobRun).where(JobRun.kind == PROVIDER_REVOKE_KIND, JobRun.status == RunStatus.queued)
    ).scalars().all()
    for row in rows:
        connection = db.session.get(Connection, row.connection_id) if row.connection_id else None
        row.attempts = (row.attempts or 0) + 1
        if connection is None or connection.state != ConnectionState.revoked:
            row.status, row.finished_at = RunStatus.cancelled, utcnow()
            db.session.commit()
            continue
        try:
            connector_instance(connection).revoke_access(connection.school)
        except (ConnectorError, LifecycleError):
            db.session.commit()
            continue
        row.status, row.finished_at = RunStatus.succeeded, utcnow()
        audit.record(
            "connection.provider_revoke_delivered", organisation_id=connection.school_id, target=connection,
            details={"connector": connection.connector, "attempts": row.attempts}, actor="system",
        )
        db.session.commit()
        delivered += 1
    return delivered


def mark_revoked_by_provider(connection: Connection, detail: str | None = None) -> Connection:
    """The provider says access was switched off (R5): a revocation, not an error; no retry; admins told."""
    if connection.state == ConnectionState.revoked:
        db.session.commit()
        return connection
    _set_state(connection, ConnectionState.revoked, "provider", "connection.revoked_by_provider", reason_code=_code(detail))
    cancel_runs(connection, "Stopped because access was switched off at the provider.")
    _schedule_deletion(connection, immediate=False, user=None)
    db.session.commit()
    _after_commit_alert(alerts.connection_revoked, connection, True)
    return connection


def _code(detail: str | None) -> str | None:
    # Free text from a provider may name people; the audit keeps only a short code-like token.
    if not detail:
        return None
    token = detail.strip().split()[0] if detail.strip() else ""
    return token[:40] if token.replace("_", "").isalnum() else None


def mark_failing(connection: Connection, *, error_code: str | None = None, run: JobRun | None = None) -> Connection:
    """Runs keep failing for a reason that is not a revocation: shown on the page; extracts still retried."""
    if connection.state == ConnectionState.approved:
        _set_state(
            connection, ConnectionState.failing, "system", "connection.failing",
            error_code=error_code, run_id=run.id if run else None,
        )
    db.session.commit()
    return connection


def mark_healthy(connection: Connection) -> Connection:
    """A run succeeded again after failures: back to approved."""
    if connection.state == ConnectionState.failing:
        _set_state(connection, ConnectionState.approved, "system", "connection.recovered")
    db.session.commit()
    return connection


def set_paused(connection: Connection, user: User, paused: bool) -> Connection:
    """Support staff pause or resume scheduled extracts of one connection."""
    if connection.paused != paused:
        connection.paused = paused
        if paused:
            cancel_runs(connection, "Stopped because support staff paused the connection.")
        audit.record(
            "connection.paused" if paused else "connection.resumed",
            organisation_id=connection.school_id, target=connection,
            details={"connector": connection.connector}, **_actor_kwargs(user),
        )
    db.session.commit()
    return connection


def poll_access(connection: Connection) -> Connection:
    """Ask the provider about a requested or pending connection (the fallback when no webhook arrives)."""
    if connection.state not in (ConnectionState.requested, ConnectionState.pending):
        return connection
    connector = connector_instance(connection)
    try:
        if connection.state == ConnectionState.requested:
            status = connector.request_access(connection.school)
        else:
            status = connector.access_status(connection.school)
    except ConnectorError:
        return connection
    return apply_access_status(connection, status, actor="provider")


def poll_pending_connections() -> int:
    """Poll every requested or pending connection; return how many changed state."""
    ids = db.session.execute(
        select(Connection.id).where(Connection.state.in_([ConnectionState.requested, ConnectionState.pending]))
    ).scalars().all()
    changed = 0
    for cid in ids:
        conn = db.session.get(Connection, cid)
        before = conn.state
        poll_access(conn)
        changed += conn.state != before
    return changed


__all__ = [
    "Contact",
    "LifecycleError",
    "accept_terms",
    "apply_access_status",
    "cancel_runs",
    "connection_for",
    "connection_settings",
    "connector_instance",
    "current_terms_version",
    "deletion_date",
    "mark_approved",
    "mark_declined",
    "mark_failing",
    "mark_healthy",
    "mark_revoked_by_provider",
    "poll_access",
    "poll_pending_connections",
    "request_access",
    "retry_provider_revokes",
    "revoke",
    "set_paused",
    "terms_acceptance",
]
