"""What connector packages call from their routes (webhooks, callbacks) and their demo: connection state, lookups, audit.

The only door from a connector package to portal.lifecycle, the models and the database. Names here
are kept stable; everything else in the portal may change without notice.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from portal import audit
from portal.extensions import db
from portal.lifecycle import (
    LifecycleError,
    accept_terms,
    connection_for,
    connection_settings,
    connector_instance,
    mark_approved,
    mark_declined,
    mark_revoked_by_provider,
    poll_access,
    request_access,
    current_terms_version,
    terms_acceptance,
)
from portal.connectors import Connector
from portal.models import Connection, ConnectionState, Membership, Organisation, OrgKind, Role, User, WebhookEvent
from portal.plugins.manager import get_plugins
from portal.webhooks.verify import VerificationFailed, check_secret, check_signature, sign

__all__ = [
    "Connection",
    "ConnectionState",
    "LifecycleError",
    "Organisation",
    "VerificationFailed",
    "audit_event",
    "check_secret",
    "check_signature",
    "ask_for_access",
    "commit",
    "connect_demo_schools",
    "connection_by_provider_id",
    "connection_for",
    "connection_of",
    "connection_settings",
    "connector_class",
    "connector_instance",
    "event_seen",
    "mark_approved",
    "mark_declined",
    "mark_revoked_by_provider",
    "merge_connection_settings",
    "poll_access",
    "record_event",
    "requested_connection_by_urn",
    "request_access",
    "rollback",
    "school_admin_with_terms",
    "school_by_dfe_number",
    "set_connection_settings",
    "sign",
]


def connector_class(name: str) -> type[Connector]:
    """Return the enabled connector class of this name (KeyError when it is not installed and enabled)."""
    return get_plugins().connector(name)


def commit() -> None:
    """Commit what the route changed (lifecycle functions commit their own changes)."""
    db.session.commit()


def rollback() -> None:
    """Forget what the route changed since the last commit."""
    db.session.rollback()


def audit_event(action: str, **kwargs: Any) -> None:
    """Append an audit entry in the current transaction (ids only, never personal data or secrets); the caller commits."""
    audit.record(action, **kwargs)


def school_by_dfe_number(dfe_number: str) -> Organisation | None:
    """Return the school with this LA and DfE number, or None."""
    return db.session.execute(
        select(Organisation).where(Organisation.kind == OrgKind.school, Organisation.dfe_number == dfe_number)
    ).scalar_one_or_none()


def connection_of(school: Organisation, connector: str) -> Connection | None:
    """Return the school's connection to the connector, or None; never creates one (R1/R2)."""
    return db.session.execute(
        select(Connection).where(Connection.school_id == school.id, Connection.connector == connector)
    ).scalar_one_or_none()


def connection_by_provider_id(connector: str, provider_school_id: str) -> Connection | None:
    """Return the connector's connection whose provider school id is this one, or None."""
    return db.session.execute(
        select(Connection).where(Connection.connector == connector, Connection.provider_school_id == provider_school_id)
    ).scalar()


def requested_connection_by_urn(connector: str, urn: str) -> Connection | None:
    """Return the connection of the school with this URN that asked for access and has no provider id yet, or None."""
    return db.session.execute(
        select(Connection)
        .join(Organisation, Connection.school_id == Organisation.id)
        .where(
            Connection.connector == connector,
            Connection.provider_school_id.is_(None),
            Organisation.kind == OrgKind.school,
            Organisation.urn == urn,
            Connection.state.in_([ConnectionState.requested, ConnectionState.pending]),
        )
    ).scalar()


def set_connection_settings(connection: Connection, values: Mapping[str, Any]) -> None:
    """Replace the connection's own settings (stored encrypted); the caller commits."""
    connection.settings_encrypted = json.dumps(dict(values))


def merge_connection_settings(connection: Connection, values: Mapping[str, Any]) -> None:
    """Overlay values on the connection's own settings (stored encrypted), without a state change; the caller commits."""
    merged = json.loads(connection.settings_encrypted) if connection.settings_encrypted else {}
    merged.update(values)
    set_connection_settings(connection, merged)


def event_seen(connector: str, event_id: str) -> bool:
    """Whether a provider event with this id was already processed (webhooks are delivered at least once)."""
    return db.session.execute(
        select(WebhookEvent.id).where(WebhookEvent.connector == connector, WebhookEvent.event_id == event_id)
    ).first() is not None


def record_event(connector: str, event_id: str, payload_type: str, connection: Connection | None, outcome: str) -> bool:
    """Record a processed provider event and commit; False when the same event was recorded at the same time."""
    db.session.add(WebhookEvent(connector=connector, event_id=event_id, payload_type=payload_type,
                                connection_id=connection.id if connection is not None else None, outcome=outcome))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return False
    return True


def school_admin_with_terms(school: Organisation) -> User | None:
    """Return the school's first admin, having them accept the current terms if nobody has (R2); None without an admin.

    A package's ``demo_connections`` calls this before it asks for access for a demo school.
    """
    membership = db.session.execute(
        select(Membership).where(Membership.organisation_id == school.id, Membership.role == Role.school_admin)
    ).scalars().first()
    if membership is None:
        return None
    if terms_acceptance(school) is None:
        accept_terms(school, membership.user, current_terms_version())
    return membership.user


def connect_demo_schools(
    schools: Iterable[Organisation],
    connector: str,
    serves: Callable[[Organisation], bool],
    walk: Callable[[Connection, Organisation, User], None],
) -> list[Connection]:
    """Connect the demo schools a connector's sandbox serves, through the real lifecycle; idempotent.

    For each school ``serves`` accepts, its connection is found or made; unless it is approved already,
    ``walk(connection, school, admin)`` takes it on as the school's admin (who has accepted the terms;
    a school without one is left out). Returns the connections, for `flask portal demo` to extract.
    """
    connections = []
    for school in schools:
        if not serves(school):
            continue
        connection = connection_for(school, connector)
        if connection.state != ConnectionState.approved:
            admin = school_admin_with_terms(school)
            if admin is None:
                continue
            walk(connection, school, admin)
        connections.append(connection)
    return connections


def ask_for_access(connection: Connection, admin: User, settings: Mapping[str, Any] | None = None) -> None:
    """As the school admin, ask the provider for access (asked already: poll it), first storing ``settings`` if none are."""
    if settings and not connection.settings_encrypted:
        set_connection_settings(connection, settings)
    if connection.state in (ConnectionState.requested, ConnectionState.pending):
        poll_access(connection)
    else:
        request_access(connection, admin, {"name": admin.name, "email": admin.email})
