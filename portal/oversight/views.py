"""Pages: the school's pupils for those allowed to see them (R57, R58), support access grants (R58), school-approved
links (R57, ended on the data-use page) and the public sub-processor register (R66)."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from portal import store
from portal.extensions import db
from portal.models import Feature, Organisation, SchoolLink, SupportGrant
from portal.oversight import grants, links, subprocessors
from portal.oversight.forms import EndForm, GrantForm, LinkForm, submit
from portal.school.queries import today_london
from portal.scope import Action, can, link_features, school_or_404

bp = Blueprint("oversight", __name__)


def _feature_names() -> dict[str, str]:
    return dict(db.session.execute(select(Feature.id, Feature.name)).all())


def _to_end(model, item_id: int, school: Organisation):
    """The school's own grant or link that an "End" button posted for; 404 for another school's or a bad form."""
    item = db.session.get(model, item_id)
    if item is None or item.school_id != school.id or not EndForm().validate_on_submit():
        abort(404)
    return item


@bp.route("/schools/<int:school_id>/pupils")
@login_required
def pupils(school_id: int):
    """The school's pupils on roll (basic fields), for its users, approved links and granted support staff."""
    school = school_or_404(current_user, school_id, Action.view_pupil_data)
    features = link_features(current_user, school)
    if current_user.is_support:
        viewer, feature = "support_grant", None
    elif features is None:
        viewer, feature = "school", None
    elif features:
        viewer, feature = "link", features[0]
    else:
        abort(404)
    rows = store.roll_for_viewer(school.id, today_london(), viewer=viewer, feature=feature)
    db.session.commit()  # the read's audit entry
    return render_template("oversight/pupils.html", school=school, rows=rows, viewer=viewer,
                           features=[_feature_names().get(f, f) for f in (features or [])])


@bp.route("/schools/<int:school_id>/support-access", methods=["GET", "POST"])
@login_required
def support_access(school_id: int):
    school = school_or_404(current_user, school_id, Action.manage)
    form = GrantForm()
    sent = submit(form, lambda: grants.grant(school, form.email.data, form.hours.data, form.ticket_ref.data,
                                             form.reason.data, current_user), grants.GrantError)
    if sent.done:
        flash(f"Support access granted until {sent.result.expires_at.strftime('%H:%M %d/%m/%Y')} UTC.")
        return redirect(url_for("oversight.support_access", school_id=school.id))
    return render_template("oversight/support_access.html", school=school, form=form, error=sent.error,
                           grants=grants.of_school(school.id), is_live=grants.is_live, end_form=EndForm()), sent.status


@bp.route("/schools/<int:school_id>/support-access/<int:grant_id>/end", methods=["POST"])
@login_required
def end_support_access(school_id: int, grant_id: int):
    school = school_or_404(current_user, school_id, Action.manage)
    item = _to_end(SupportGrant, grant_id, school)
    grants.end(item, current_user)
    db.session.commit()
    flash("Support access ended.")
    return redirect(url_for("oversight.support_access", school_id=school.id))


def _link_form(school: Organisation) -> LinkForm:
    form = LinkForm()
    form.organisation_id.choices = [(0, "Choose an organisation")] + [
        (o.id, f"{o.name} ({o.kind.value.replace('_', ' ')})") for o in links.candidates(school)]
    names = _feature_names()
    form.feature_id.choices = [("", "Choose a feature")] + [(f, names.get(f, f)) for f in links.features_for_links()]
    return form


@bp.route("/schools/<int:school_id>/links/new", methods=["GET", "POST"])
@login_required
def new_link(school_id: int):
    school = school_or_404(current_user, school_id, Action.manage)
    form = _link_form(school)
    sent = submit(form, lambda: links.approve(school, form.organisation_id.data, form.feature_id.data,
                                              form.agreement_ref.data, current_user), links.LinkError)
    if sent.done:
        flash("Link approved: that organisation can now see your pupils through the feature chosen.")
        return redirect(url_for("school.data_use", school_id=school.id))
    return render_template("oversight/link_new.html", school=school, form=form, error=sent.error), sent.status


@bp.route("/schools/<int:school_id>/links/<int:link_id>/end", methods=["POST"])
@login_required
def end_link(school_id: int, link_id: int):
    school = school_or_404(current_user, school_id, Action.manage)
    link = _to_end(SchoolLink, link_id, school)
    links.end(link, current_user)
    db.session.commit()
    flash(f"Link with {link.organisation.name} ended: it no longer sees your pupil data.")
    return redirect(url_for("school.data_use", school_id=school.id))


@bp.route("/privacy/sub-processors")
def sub_processors():
    """The public register: who processes personal data for the operator, where, and under which safeguard (R66)."""
    return render_template("oversight/sub_processors.html", register=subprocessors.register())


def school_links(school: Organisation) -> dict:
    """Template helper for the data-use page: the school's links and whether this user may change them (R57)."""
    found = links.of_school(school.id)
    # Feature names are shown only against live links: most schools have none, and then need no statement.
    return {"links": found, "can_manage": can(current_user, Action.manage, school),
            "features": _feature_names() if any(link.ended_at is None for link in found) else {}, "end_form": EndForm()}


def init_app(app) -> None:
    app.add_template_global(school_links, "school_links")
    app.register_blueprint(bp)
