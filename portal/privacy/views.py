"""The school's data-subject request pages: queue, intake with subject search, the request page, its actions and the download."""
from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from portal.date_input import date_from_form
from portal.extensions import db
from portal.models import FlagKind, SubjectFlag, SubjectKind
from portal.models.dsr import OPEN_STATUSES, SubjectExport, SubjectRequest
from portal.privacy import actions, export, register, search
from portal.privacy.forms import IntakeForm, SearchForm
from portal.privacy.register import RequestError
from portal.models.base import utcnow
from portal.retention.calendar import london_date
from portal.scope import Action, school_or_404

bp = Blueprint("privacy", __name__)


def _request_or_404(school_id: int, request_id: int) -> tuple:
    school = school_or_404(current_user, school_id, Action.release_export)
    req = db.session.get(SubjectRequest, request_id)
    if req is None or req.school_id != school.id:
        abort(404)
    return school, req


@bp.route("/privacy")
def privacy_page():
    """The portal's privacy page: the operator's DPO contact (R43)."""
    return render_template("privacy/privacy.html", dpo=current_app.config.get("DPO_EMAIL"))


@bp.route("/privacy/export-schema.json")
def export_schema():
    """The published JSON schema of access exports (R48)."""
    return jsonify(export.SCHEMA)


@bp.route("/schools/<int:school_id>/requests")
@login_required
def queue(school_id: int):
    school = school_or_404(current_user, school_id, Action.release_export)
    show_closed = request.args.get("show") == "all"
    requests = db.session.execute(register.queue([school.id], include_closed=show_closed)).scalars().all()
    today = london_date(utcnow())
    return render_template("privacy/queue.html", school=school, requests=requests, today=today, show_closed=show_closed,
                           overdue=lambda r: register.is_overdue(r, today), due_soon=lambda r: register.is_due_soon(r, today),
                           labels=register.TYPE_LABELS)


@bp.route("/schools/<int:school_id>/requests/find")
@login_required
def find(school_id: int):
    """Search the school's pupils; every match is listed, so an ambiguous search needs an explicit choice."""
    school = school_or_404(current_user, school_id, Action.release_export)
    form = SearchForm(request.args)
    matches, error = None, None
    searched = any(request.args.get(k) for k in ("external_id", "upn", "surname", "date_of_birth")) or any(
        request.args.get(f"date_of_birth-{p}") for p in ("day", "month", "year"))
    if not searched and any(k in request.args for k in ("external_id", "upn", "surname")):
        error = "Enter an MIS id, a UPN, or a surname and date of birth to search."
    elif searched:
        if form.validate():
            try:
                matches = search.find(current_user, external_id=form.external_id.data, upn=form.upn.data,
                                      surname=form.surname.data, date_of_birth=form.date_of_birth.data, school_id=school.id)
                db.session.commit()  # the search's audit entry
            except RequestError as exc:
                error = str(exc)
        else:
            error = "; ".join(form.date_of_birth.errors) or "Check the search terms."
    return render_template("privacy/find.html", school=school, form=form, matches=matches, error=error)


@bp.route("/schools/<int:school_id>/requests/new", methods=["GET", "POST"])
@login_required
def new(school_id: int):
    school = school_or_404(current_user, school_id, Action.release_export)
    form = IntakeForm(subject_external_id=request.args.get("subject"), received_on=london_date(utcnow()))
    error = None
    if form.validate_on_submit():
        if not search.find(current_user, external_id=form.subject_external_id.data, school_id=school.id):
            form.subject_external_id.errors.append("No pupil of this school has that MIS id.")
        else:
            try:
                req = register.create(
                    user=current_user, request_type=form.request_type.data, received_on=form.received_on.data,
                    channel=form.channel.data, requester_kind=form.requester_kind.data, subject_type="pupil",
                    school=school, subject_external_id=form.subject_external_id.data.strip(),
                    requester_contact=form.requester_contact.data or "", relationship=form.relationship.data or "",
                    details=form.details.data or "",
                )
                db.session.commit()
                flash(f"Request {req.id} recorded. It is due by {req.deadline_on.strftime('%-d %B %Y')}.")
                return redirect(url_for("privacy.detail", school_id=school.id, request_id=req.id))
            except RequestError as exc:
                db.session.rollback()
                field = getattr(form, exc.field or "", None)
                if field is not None and hasattr(field, "errors"):
                    field.errors.append(str(exc))
                else:
                    error = str(exc)
    return render_template("privacy/new.html", school=school, form=form, error=error), 400 if request.method == "POST" else 200


@bp.route("/schools/<int:school_id>/requests/<int:request_id>")
@login_required
def detail(school_id: int, request_id: int):
    school, req = _request_or_404(school_id, request_id)
    return _render_detail(school, req)


def _render_detail(school, req, *, error: str | None = None, token: str | None = None, status: int = 200):
    flags = db.session.execute(select(SubjectFlag).where(
        SubjectFlag.school_id == school.id, SubjectFlag.subject_kind == SubjectKind.pupil,
        SubjectFlag.external_id == req.subject_external_id, SubjectFlag.kind == FlagKind.restricted,
        SubjectFlag.lifted_at.is_(None))).scalars().all()
    restricted = bool(flags)
    # Empty when any flag covers every feature; otherwise the features the flags name between them.
    restricted_features = [] if any(not f.feature_ids for f in flags) else sorted({i for f in flags for i in f.feature_ids})
    # R74: the pupil's written objection to special-category processing, while in force.
    objection = db.session.execute(select(SubjectFlag).where(
        SubjectFlag.school_id == school.id, SubjectFlag.subject_kind == SubjectKind.pupil,
        SubjectFlag.external_id == req.subject_external_id, SubjectFlag.kind == FlagKind.special_category_objection,
        SubjectFlag.lifted_at.is_(None)).order_by(SubjectFlag.recorded_at).limit(1)).scalar_one_or_none()
    features = actions.authorised_features(school.id)
    exports = db.session.execute(select(SubjectExport).where(SubjectExport.request_id == req.id)
                                 .order_by(SubjectExport.id.desc())).scalars().all()
    return render_template(
        "privacy/detail.html", school=school, req=req, error=error, token=token, restricted=restricted, exports=exports,
        is_open=req.status in OPEN_STATUSES, labels=register.TYPE_LABELS, methods=register.IDENTITY_METHODS,
        extension_reasons=register.EXTENSION_REASONS, restriction_reasons=actions.RESTRICTION_REASONS,
        now=utcnow(), features=features, restricted_features=restricted_features, objection=objection,
    ), status


# Each action: (function taking (req, user, form) and returning a confirmation message).
def _verify(req, user, form):
    try:
        proof_on = date_from_form(form, "proof_received_on", "The date the proof arrived")
    except ValueError as exc:
        raise RequestError("proof_date", str(exc)) from None
    register.verify_identity(req, user, form.get("method"), proof_received_on=proof_on)
    return "Identity verified."


def _extend(req, user, form):
    register.extend(req, user, form.get("reason"))
    return f"Deadline extended to {req.deadline_on.strftime('%-d %B %Y')}. Tell the requester before the first deadline."


def _erase(req, user, form):
    deleted = actions.erase(req, user)
    return f"Erased {sum(deleted.values())} records; the pupil will not be brought back by later extracts."


def _restrict(req, user, form):
    named = form.getlist("features")
    actions.restrict(req, user, form.get("reason"), named)
    if named:
        return f"Processing restricted: the {len(named)} chosen feature(s) are no longer served this pupil's data."
    return "Processing restricted: no product is served this pupil's data."


def _lift(req, user, form):
    actions.lift_restriction(req, user)
    return "Restriction lifted."


def _object_special(req, user, form):
    actions.object_to_special_category(req, user)
    return ("Written objection recorded: products no longer receive this pupil's special-category data, "
            "and the copies the portal held have been removed.")


def _lift_special(req, user, form):
    actions.lift_special_category_objection(req, user)
    return "Objection lifted: the pupil's special-category data comes back with the next full extract."


def _rectify(req, user, form):
    actions.rectify(req, user, form.get("details"))
    return "Recorded. Correct the data in your MIS; the portal will fetch the pupil's data again."


def _refuse(req, user, form):
    register.refuse(req, user, form.get("reason"))
    return "Request refused. Send the requester the refusal letter."


def _complete(req, user, form):
    register.complete(req, user)
    return "Request closed."


ACTIONS = {"verify": _verify, "extend": _extend, "erase": _erase, "restrict": _restrict, "lift": _lift,
           "rectify": _rectify, "refuse": _refuse, "complete": _complete,
           "object-special-category": _object_special, "lift-special-category": _lift_special}


@bp.route("/schools/<int:school_id>/requests/<int:request_id>/<name>", methods=["POST"])
@login_required
def act(school_id: int, request_id: int, name: str):
    school, req = _request_or_404(school_id, request_id)
    step = ACTIONS.get(name)
    if step is None:
        abort(404)
    try:
        message = step(req, current_user, request.form)
        db.session.commit()
    except RequestError as exc:
        db.session.rollback()
        return _render_detail(school, db.session.get(SubjectRequest, request_id), error=str(exc), status=400)
    flash(message)
    return redirect(url_for("privacy.detail", school_id=school.id, request_id=req.id))


@bp.route("/schools/<int:school_id>/requests/<int:request_id>/export", methods=["POST"])
@login_required
def prepare_export(school_id: int, request_id: int):
    school, req = _request_or_404(school_id, request_id)
    try:
        token = export.prepare(req, current_user)
        db.session.commit()
    except RequestError as exc:
        db.session.rollback()
        return _render_detail(school, db.session.get(SubjectRequest, request_id), error=str(exc), status=400)
    return _render_detail(school, req, token=token)


@bp.route("/schools/<int:school_id>/requests/<int:request_id>/download/<token>")
@login_required
def download(school_id: int, request_id: int, token: str):
    school, req = _request_or_404(school_id, request_id)
    try:
        payload = export.redeem(req, token, current_user)
        db.session.commit()
    except RequestError as exc:
        db.session.rollback()
        return _render_detail(school, db.session.get(SubjectRequest, request_id), error=str(exc), status=410)
    return Response(payload, mimetype="application/zip", headers={
        "Content-Disposition": f'attachment; filename="subject-access-request-{req.id}.zip"',
        "Cache-Control": "no-store",
    })


@bp.route("/schools/<int:school_id>/requests/<int:request_id>/refusal.txt")
@login_required
def refusal_letter(school_id: int, request_id: int):
    _school, req = _request_or_404(school_id, request_id)
    if req.refusal_reason is None:
        abort(404)
    return Response(register.refusal_letter(req), mimetype="text/plain")
