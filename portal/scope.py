"""The one place that decides which schools a user may see and what they may do there (R54–R58).

Every view, API and job asks here; nothing filters school data by hand.
"""
from __future__ import annotations

import enum
from datetime import date

from flask import abort
from sqlalchemy import Select, exists, or_, select

from portal.extensions import db
from portal.models import Organisation, OrgKind, Role, Subscription, SubscriptionRoute, User


class Action(str, enum.Enum):
    view = "view"  # connection states, run history, data-use page (no records)
    manage = "manage"  # authorise/revoke connections, deletion instructions, requests, users
    view_users = "view_users"  # the school's portal users (names, emails, roles, last login)
    view_pupil_data = "view_pupil_data"  # pupil and staff records


_SCHOOL_ROLES = {
    Action.view: {Role.school_admin, Role.school_viewer},
    Action.manage: {Role.school_admin},
    Action.view_users: {Role.school_admin},
    Action.view_pupil_data: {Role.school_admin, Role.school_viewer},
}
_TRUST_ACTIONS = {Action.view, Action.manage, Action.view_users, Action.view_pupil_data}
# R56: an LA officer administers users of schools subscribed through that LA, never pupil data.
_LA_ACTIONS = {Action.view, Action.view_users}
# R58: support staff see connection status, runs and counts, users for support, but no records.
_SUPPORT_ACTIONS = {Action.view, Action.manage, Action.view_users}


def _active_memberships(user: User):
    return [m for m in user.memberships if m.suspended_at is None]


def _la_subscription_clause(la_id: int, today: date):
    """Schools whose running subscription was taken out through this LA."""
    return exists().where(
        Subscription.school_id == Organisation.id,
        Subscription.route == SubscriptionRoute.local_authority,
        Subscription.local_authority_id == la_id,
        Subscription.starts_on <= today,
        or_(Subscription.ends_on.is_(None), Subscription.ends_on >= today),
        or_(Subscription.terminated_on.is_(None), Subscription.terminated_on >= today),
    )


def schools_query(user: User, action: Action = Action.view, today: date | None = None) -> Select:
    """Return a SELECT of the schools on which the user may perform the action."""
    today = today or date.today()
    query = select(Organisation).where(Organisation.kind == OrgKind.school)
    if not user.is_authenticated or not user.is_active:
        return query.where(False)
    if user.is_support:
        return query if action in _SUPPORT_ACTIONS else query.where(False)
    clauses = []
    for m in _active_memberships(user):
        if m.role in (Role.school_admin, Role.school_viewer) and m.role in _SCHOOL_ROLES[action]:
            clauses.append(Organisation.id == m.organisation_id)
        elif m.role == Role.trust_admin and action in _TRUST_ACTIONS:
            clauses.append(Organisation.trust_id == m.organisation_id)
        elif m.role == Role.la_officer and action in _LA_ACTIONS:
            clauses.append(_la_subscription_clause(m.organisation_id, today))
    if not clauses:
        return query.where(False)
    return query.where(or_(*clauses)).order_by(Organisation.name)


def school_ids(user: User, action: Action = Action.view) -> list[int]:
    """Return the ids of the schools on which the user may perform the action."""
    return list(db.session.execute(schools_query(user, action).with_only_columns(Organisation.id)).scalars())


def can(user: User, action: Action, school: Organisation) -> bool:
    """Return whether the user may perform the action on this school."""
    query = schools_query(user, action).where(Organisation.id == school.id)
    return db.session.execute(query.with_only_columns(Organisation.id)).first() is not None


def school_or_404(user: User, school_id: int, action: Action = Action.view) -> Organisation:
    """Return the school if the user may perform the action on it; otherwise 404, never revealing that it exists."""
    school = db.session.execute(schools_query(user, action).where(Organisation.id == school_id)).scalar()
    if school is None:
        abort(404)
    return school


def organisations_of(user: User) -> list[Organisation]:
    """Return the organisations the user is an active member of (for the home page)."""
    return sorted((m.organisation for m in _active_memberships(user)), key=lambda o: o.name)


__all__ = ["Action", "can", "organisations_of", "school_ids", "school_or_404", "schools_query"]
