"""The one place that decides which schools a user may see and what they may do there (R54–R58).

Every view, API and job asks here; nothing filters school data by hand.
"""
from __future__ import annotations

import enum
from datetime import date, datetime
from zoneinfo import ZoneInfo

from flask import abort
from sqlalchemy import Select, exists, false, or_, select

from portal.extensions import db
from portal.models import Organisation, OrgKind, Role, Subscription, SubscriptionRoute, User

LONDON = ZoneInfo("Europe/London")


class Action(str, enum.Enum):
    view = "view"  # the school's status: connection states, run history, data-use page (no records)
    view_users = "view_users"  # the school's portal users (names, emails, roles, last login)
    view_pupil_data = "view_pupil_data"  # pupil and staff records, through matrix-granted features
    authorise = "authorise"  # authorise connections and accept the terms
    revoke = "revoke"  # revoke connections
    instruct_deletion = "instruct_deletion"  # deletion instructions and retention choices
    release_export = "release_export"  # data-subject requests: release an access export
    manage_users = "manage_users"  # add, suspend and change the school's portal users
    manage = "manage"  # any of the school admin's management actions above


_ADMIN_ACTIONS = frozenset(Action)
# R55: the role × action table. A school viewer reads; a school admin does everything for the school;
# a trust admin does the same for the trust's academies.
_SCHOOL_ROLES: dict[Role, frozenset[Action]] = {
    Role.school_admin: _ADMIN_ACTIONS,
    Role.school_viewer: frozenset({Action.view, Action.view_pupil_data}),
}
_TRUST_ACTIONS = _ADMIN_ACTIONS
# R56: an LA officer sees the school's status and users for administration, never pupil data.
_LA_ACTIONS = frozenset({Action.view, Action.view_users})
# R58: support staff see connection status, run logs and counts, and users for support; no records.
_SUPPORT_ACTIONS = frozenset({Action.view, Action.view_users})


def allowed_actions(role: Role | None) -> frozenset[Action]:
    """Return the actions a role may take on a school in its scope (None: support staff), the R55 table."""
    if role is None:
        return _SUPPORT_ACTIONS
    if role == Role.trust_admin:
        return _TRUST_ACTIONS
    if role == Role.la_officer:
        return _LA_ACTIONS
    return _SCHOOL_ROLES[role]


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
    # Subscriptions run on UK calendar dates.
    today = today or datetime.now(LONDON).date()
    query = select(Organisation).where(Organisation.kind == OrgKind.school)
    if not user.is_authenticated or not user.is_active:
        return query.where(false())
    if user.is_support:
        return query if action in _SUPPORT_ACTIONS else query.where(false())
    clauses = []
    for m in _active_memberships(user):
        if m.role in _SCHOOL_ROLES and action in _SCHOOL_ROLES[m.role]:
            clauses.append(Organisation.id == m.organisation_id)
        elif m.role == Role.trust_admin and action in _TRUST_ACTIONS:
            clauses.append(Organisation.trust_id == m.organisation_id)
        elif m.role == Role.la_officer and action in _LA_ACTIONS:
            clauses.append(_la_subscription_clause(m.organisation_id, today))
    if not clauses:
        return query.where(false())
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


__all__ = ["Action", "allowed_actions", "can", "organisations_of", "school_ids", "school_or_404", "schools_query"]


def user_may(action: str, school: Organisation) -> bool:
    """Template helper: whether the signed-in user may perform the named action on the school."""
    from flask_login import current_user

    return can(current_user, Action(action), school)


def init_app(app) -> None:
    """Offer ``user_may`` to templates, so pages show only the links a user may follow."""
    app.add_template_global(user_may, "user_may")
