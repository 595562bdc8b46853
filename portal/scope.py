"""The one place that decides which schools a user may see and what they may do there (R54–R58).

Every view, API and job asks here; nothing filters school data by hand.
"""
from __future__ import annotations

import enum
from datetime import date, datetime

from flask import abort, g, has_request_context
from sqlalchemy import Select, event, exists, false, inspect, or_, select
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from portal.clock import LONDON
from portal.extensions import db
from portal.models import Membership, Organisation, OrgKind, Role, SchoolLink, Subscription, SubscriptionRoute, SupportGrant, User
from portal.models.base import utcnow


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
# R58: a live support grant from the school adds its pupil and staff records, nothing to manage.
_GRANT_ACTIONS = frozenset({Action.view, Action.view_pupil_data})
# R57: a supporting organisation (LA, diocese, or a trust for a school outside it) with a link the school approved
# sees the school's status and its pupil data through the link's feature; it manages nothing.
_LINK_ACTIONS = frozenset({Action.view, Action.view_pupil_data})
_SUPPORTING_KINDS = frozenset({OrgKind.trust, OrgKind.local_authority, OrgKind.diocese})


def allowed_actions(role: Role | None) -> frozenset[Action]:
    """Return the actions a role may take on a school in its scope (None: support staff), the R55 table."""
    if role is None:
        return _SUPPORT_ACTIONS
    if role == Role.trust_admin:
        return _TRUST_ACTIONS
    if role == Role.la_officer:
        return _LA_ACTIONS
    return _SCHOOL_ROLES.get(role, frozenset())


def subscription_ends(organisation_ids: set[int] | None = None) -> dict[int, date]:
    """R37: per organisation, the last day of the subscriptions its memberships are held for, once all have an end.

    A school's are its own subscriptions, a trust's those of its academies, a local authority's those
    taken out through it. An organisation with no subscription, or with one that has no end, is absent:
    its users' access is not limited by R37.
    """
    school = Organisation.__table__.alias("school")
    query = select(Subscription.school_id, Subscription.local_authority_id, school.c.trust_id,
                   Subscription.ends_on, Subscription.terminated_on).join(school, school.c.id == Subscription.school_id)
    if organisation_ids is not None:
        if not organisation_ids:
            return {}
        query = query.where(or_(Subscription.school_id.in_(organisation_ids), school.c.trust_id.in_(organisation_ids),
                                Subscription.local_authority_id.in_(organisation_ids)))
    ends: dict[int, date] = {}
    open_ended: set[int] = set()
    for school_id, la_id, trust_id, ends_on, terminated_on in db.session.execute(query):
        end = min((d for d in (ends_on, terminated_on) if d is not None), default=None)
        for org in (school_id, la_id, trust_id):
            if org is None:
                continue
            if end is None:
                open_ended.add(org)
            elif org not in ends or end > ends[org]:
                ends[org] = end
    return {org: end for org, end in ends.items() if org not in open_ended}


def membership_live(m, today: date, ends: dict[int, date]) -> bool:
    """Return whether a membership gives access today: not suspended or removed (R38), subscription not over (R37).

    ``ends`` comes from subscription_ends over the user's school memberships: a school membership
    ends with the school's subscriptions; trust and LA access stays governed per school (R56).
    """
    if m.suspended_at is not None or m.removed_at is not None:
        return False
    end = ends.get(m.organisation_id)
    return end is None or today <= end


def _today() -> date:
    return datetime.now(LONDON).date()


# Per-request memo (in flask.g) of answers that every page asks several times: the user's school
# subscription ends and can() per (user, action, school). Only while serving a request; dropped at
# its start and end and whenever the session commits or rolls back, so a change made during the
# request is seen by the checks after it.
_MEMO = "_scope_memo"


def _memo() -> dict | None:
    if not has_request_context():
        return None
    memo = g.get(_MEMO)
    if memo is None:
        memo = {}
        setattr(g, _MEMO, memo)
    return memo


def _forget(*_: object) -> None:
    if has_request_context():
        g.pop(_MEMO, None)


def _memberships(user: User) -> list[Membership]:
    """The user's memberships, each with its organisation: one statement when the request first asks, not two."""
    state = inspect(user)
    if "memberships" in state.unloaded and state.session is db.session() and state.has_identity:
        rows = db.session.execute(
            select(Membership).where(Membership.user_id == user.id).options(joinedload(Membership.organisation))
        ).scalars().all()
        set_committed_value(user, "memberships", list(rows))
    return user.memberships


def _school_ends(user: User) -> dict[int, date]:
    schools = {m.organisation_id for m in _memberships(user) if m.organisation.kind == OrgKind.school}
    memo = _memo()
    key = ("ends", user.id, frozenset(schools))
    if memo is not None and key in memo:
        return memo[key]
    ends = {org: end for org, end in subscription_ends(schools).items() if org in schools}
    if memo is not None:
        memo[key] = ends
    return ends


def _active_memberships(user: User, today: date | None = None):
    ends = _school_ends(user)
    return [m for m in _memberships(user) if membership_live(m, today or _today(), ends)]


def may_sign_in(user: User, today: date | None = None) -> bool:
    """Return whether the user may sign in (R37, R38): not when every membership is removed or is of a school whose
    subscriptions have all ended.

    A suspension alone does not stop sign-in (the user simply sees nothing). Trust and LA memberships
    keep sign-in; scope still hides each school whose subscription has ended (R56).
    """
    if user.is_support or not _memberships(user):
        return True
    today = today or _today()
    ends = _school_ends(user)
    for m in _memberships(user):
        if m.removed_at is not None:
            continue
        end = ends.get(m.organisation_id)
        if end is None or today <= end:
            return True
    return False


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


def _grant_clause(user_id: int):
    """Schools that granted this support user access which has not expired or been ended (R58)."""
    now = utcnow()
    return exists().where(
        SupportGrant.school_id == Organisation.id,
        SupportGrant.support_user_id == user_id,
        SupportGrant.granted_at <= now,
        SupportGrant.expires_at > now,
        SupportGrant.ended_at.is_(None),
    )


def _link_clause(organisation_id: int):
    """Schools that approved a link for this supporting organisation and have not ended it (R57)."""
    return exists().where(
        SchoolLink.school_id == Organisation.id,
        SchoolLink.organisation_id == organisation_id,
        SchoolLink.ended_at.is_(None),
    )


def schools_query(user: User, action: Action = Action.view, today: date | None = None) -> Select:
    """Return a SELECT of the schools on which the user may perform the action."""
    # Subscriptions run on UK calendar dates.
    today = today or datetime.now(LONDON).date()
    query = select(Organisation).where(Organisation.kind == OrgKind.school)
    if not user.is_authenticated or not user.is_active:
        return query.where(false())
    if user.is_support:
        if action in _SUPPORT_ACTIONS:
            return query
        if action in _GRANT_ACTIONS and user.confidentiality_agreed_on is not None:
            return query.where(_grant_clause(user.id)).order_by(Organisation.name)
        return query.where(false())
    clauses = []
    for m in _active_memberships(user, today):
        if m.role in _SCHOOL_ROLES and action in _SCHOOL_ROLES[m.role]:
            clauses.append(Organisation.id == m.organisation_id)
        elif m.role == Role.trust_admin and action in _TRUST_ACTIONS:
            clauses.append(Organisation.trust_id == m.organisation_id)
        elif m.role == Role.la_officer and action in _LA_ACTIONS:
            clauses.append(_la_subscription_clause(m.organisation_id, today))
        if m.organisation.kind in _SUPPORTING_KINDS and action in _LINK_ACTIONS:
            clauses.append(_link_clause(m.organisation_id))
    if not clauses:
        return query.where(false())
    return query.where(or_(*clauses)).order_by(Organisation.name)


def school_ids(user: User, action: Action = Action.view) -> list[int]:
    """Return the ids of the schools on which the user may perform the action."""
    return list(db.session.execute(schools_query(user, action).with_only_columns(Organisation.id)).scalars())


def _direct_grant(user: User, action: Action, school: Organisation) -> bool:
    """Whether a clause of schools_query that needs no query admits this school: the user's own live school
    role on it, a trust admin role on its trust, or support staff's standing actions (the R55/R58 tables)."""
    if school.kind != OrgKind.school or not user.is_authenticated or not user.is_active:
        return False
    if user.is_support:
        return action in _SUPPORT_ACTIONS
    for m in _active_memberships(user):
        if m.role in _SCHOOL_ROLES and m.organisation_id == school.id and action in _SCHOOL_ROLES[m.role]:
            return True
        if m.role == Role.trust_admin and school.trust_id is not None and school.trust_id == m.organisation_id \
                and action in _TRUST_ACTIONS:
            return True
    return False


def can(user: User, action: Action, school: Organisation) -> bool:
    """Return whether the user may perform the action on this school.

    The same answer as asking schools_query; a direct role on the school (or its trust) answers from the
    user's memberships, and every answer is kept for the rest of the request.
    """
    memo = _memo()
    key = ("can", getattr(user, "id", None), Action(action), school.id)
    if memo is not None and key in memo:
        return memo[key]
    allowed = _direct_grant(user, Action(action), school)
    if not allowed:
        query = schools_query(user, action).where(Organisation.id == school.id)
        allowed = db.session.execute(query.with_only_columns(Organisation.id)).first() is not None
    if memo is not None:
        memo[key] = allowed
    return allowed


def school_or_404(user: User, school_id: int, action: Action = Action.view) -> Organisation:
    """Return the school if the user may perform the action on it; otherwise 404, never revealing that it exists."""
    # A school the request already holds (a member's own school comes with the memberships) that a direct role
    # admits needs no statement; anything else is asked of schools_query, as can() does.
    if user.is_authenticated and not user.is_support:
        _memberships(user)  # needed by either answer; brings the member's own schools into the session
    held = db.session.identity_map.get(identity_key(Organisation, school_id))
    if held is not None and not inspect(held).expired_attributes:
        if not can(user, action, held):
            abort(404)
        return held
    school = db.session.execute(schools_query(user, action).where(Organisation.id == school_id)).scalar()
    if school is None:
        abort(404)
    return school


def link_features(user: User, school: Organisation) -> list[str] | None:
    """Return the features through which the user sees the school's pupil data: None when not limited to links
    (the school's own users and its trust's admins), else the features of the school's live links to the user's
    supporting organisations (R57)."""
    if user.is_support:
        return None
    direct = [m for m in _active_memberships(user) if
              (m.organisation_id == school.id and m.role in _SCHOOL_ROLES)
              or (m.role == Role.trust_admin and school.trust_id == m.organisation_id)]
    if direct:
        return None
    orgs = [m.organisation_id for m in _active_memberships(user) if m.organisation.kind in _SUPPORTING_KINDS]
    if not orgs:
        return []
    return sorted(set(db.session.execute(select(SchoolLink.feature_id).where(
        SchoolLink.school_id == school.id, SchoolLink.organisation_id.in_(orgs), SchoolLink.ended_at.is_(None))).scalars()))


def organisations_of(user: User) -> list[Organisation]:
    """Return the organisations the user is an active member of (for the home page)."""
    return sorted((m.organisation for m in _active_memberships(user)), key=lambda o: o.name)


__all__ = ["Action", "allowed_actions", "can", "link_features", "may_sign_in", "membership_live", "organisations_of", "school_ids",
           "school_or_404", "schools_query", "subscription_ends"]


def user_may(action: str, school: Organisation) -> bool:
    """Template helper: whether the signed-in user may perform the named action on the school."""
    from flask_login import current_user

    return can(current_user, Action(action), school)


def init_app(app) -> None:
    """Offer ``user_may`` to templates, so pages show only the links a user may follow."""
    app.add_template_global(user_may, "user_may")
    app.before_request(_forget)
    app.teardown_request(_forget)
    if not event.contains(db.session, "after_commit", _forget):
        # A commit or rollback may change memberships, subscriptions or grants: the memo starts again.
        event.listen(db.session, "after_commit", _forget)
        event.listen(db.session, "after_rollback", _forget)
