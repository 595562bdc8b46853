"""An organisation's admin deleting a user from the organisation (R38): access ends at once, the data clock starts."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select

from portal import audit, staff_access
from portal.extensions import db
from portal.models import Membership, User
from portal.models.base import utcnow
from portal.scope import Action, can, school_or_404

__all__ = ["bp", "remove_membership"]

bp = Blueprint("members", __name__)


def remove_membership(membership: Membership, by: User | None) -> Membership:
    """Remove the user from the membership's organisation now; other memberships are untouched. The caller commits.

    The row stays, marked removed: R38 deletes its data 7 years later (earlier under R37).
    """
    if membership.removed_at is not None:
        return membership
    now = utcnow()
    membership.removed_at = now
    # Every check that ignores suspended memberships (scope, alerts, requests) now ignores this one too.
    membership.suspended_at = membership.suspended_at or now
    audit.record(
        "membership.removed", organisation_id=membership.organisation_id, target=membership,
        details={"user_id": membership.user_id},
        **({"actor": f"user:{by.id}", "actor_user_id": by.id} if by is not None else {"actor": "system"}),
    )
    db.session.flush()
    return membership


class RemoveForm(FlaskForm):
    """A confirmation button; the form carries only the CSRF token."""


@bp.route("/schools/<int:school_id>/users")
@login_required
def school_users(school_id: int):
    school = school_or_404(current_user, school_id, Action.view_users)
    memberships = db.session.execute(
        select(Membership).join(User).where(Membership.organisation_id == school.id).order_by(User.name, Membership.id)
    ).scalars().all()
    may_manage = can(current_user, Action.manage_users, school)
    # R59: who the MIS shows with the same work email, for an admin to confirm once (none for other viewers).
    staff = staff_access.proposals(school) if may_manage else {}
    return render_template("school/users.html", school=school, memberships=memberships, form=RemoveForm(),
                           may_remove=may_manage, proposals=staff)


def _posted_membership(school_id: int, membership_id: int) -> tuple:
    """Return (school, membership) for a user-management POST: 404 out of scope, 400 without a valid CSRF token."""
    school = school_or_404(current_user, school_id, Action.manage_users)
    membership = db.session.get(Membership, membership_id)
    if membership is None or membership.organisation_id != school.id:
        abort(404)
    if not RemoveForm().validate_on_submit():
        abort(400)
    return school, membership


@bp.route("/schools/<int:school_id>/users/<int:membership_id>/staff-link", methods=["POST"])
@login_required
def link_staff(school_id: int, membership_id: int):
    """A school admin confirms the user is the member of staff the MIS lists with the same work email (R59)."""
    school, membership = _posted_membership(school_id, membership_id)
    proposal = staff_access.proposals(school).get(membership.id)
    if proposal is None:
        flash("The school's MIS no longer lists a member of staff with this user's email address; nothing was changed.")
        return redirect(url_for("members.school_users", school_id=school.id))
    staff_access.link_staff(membership, proposal.staff_external_id, current_user._get_current_object())
    db.session.commit()
    flash(f"{membership.user.name} is matched to their staff record. If the MIS stops showing them as employed, "
          "their access to this school is suspended and you are told.")
    return redirect(url_for("members.school_users", school_id=school.id))


@bp.route("/schools/<int:school_id>/users/<int:membership_id>/remove", methods=["POST"])
@login_required
def remove_user(school_id: int, membership_id: int):
    school, membership = _posted_membership(school_id, membership_id)
    if membership.user_id == current_user.id:
        flash("You cannot remove yourself; ask another administrator of the school.")
        return redirect(url_for("members.school_users", school_id=school.id))
    remove_membership(membership, current_user._get_current_object())
    db.session.commit()
    flash(f"User {membership.user_id} no longer has access to {school.name}. Their data for this school is deleted "
          "7 years from today.")
    return redirect(url_for("members.school_users", school_id=school.id))
