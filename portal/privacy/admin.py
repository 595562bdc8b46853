"""Support staff's views of data-subject requests: the register, suppression entries, and intake of requests that reached us."""
from __future__ import annotations

from datetime import date

from flask import current_app, request
from flask_admin import expose

from portal.admin.views import ReadOnlyModelView, SecureBaseView
from portal.extensions import db
from portal.models import Organisation, OrgKind, User
from portal.models.dsr import OPEN_STATUSES, Controller, RequestType, SubjectExport, SubjectRequest, Suppression
from portal.privacy import export, register, users
from portal.privacy.register import RequestError


class RequestRegisterView(ReadOnlyModelView):
    """The register (R43): type, receipt, controller, status and deadline; no requester details."""

    column_list = ("id", "request_type", "received_on", "channel", "controller", "school_id", "subject_type", "status",
                   "deadline_on", "extended_on", "closed_at")
    column_details_list = column_list + ("identity_method", "identity_verified_at", "outcome", "refusal_reason")
    column_default_sort = ("deadline_on", False)
    column_filters = ("status", "request_type", "controller")


class SuppressionView(ReadOnlyModelView):
    """Erased subjects kept out of extracts (R50): keyed hashes only."""

    column_list = ("id", "school_id", "subject_kind", "request_id", "created_at", "lifted_at")


class IntakeView(SecureBaseView):
    """A request that reached the operator: about a school's pupil it is routed to the school (R47); about a user, ours."""

    @expose("/", methods=["GET", "POST"])
    def index(self):
        from flask_login import current_user

        error, done = None, None
        form = request.form
        if request.method == "POST":
            try:
                received = date.fromisoformat(form.get("received_on", "")) if form.get("received_on") else None
            except ValueError:
                received = None
            subject_type = form.get("subject_type", "pupil")
            school = None
            if subject_type in ("pupil", "staff"):
                school = db.session.get(Organisation, int(form["school_id"])) if form.get("school_id", "").isdigit() else None
                if school is not None and school.kind != OrgKind.school:
                    school = None
            user_id = _user_id(form.get("subject_user_id", ""))
            try:
                req = register.create(
                    user=current_user, request_type=form.get("request_type"), received_on=received,
                    channel=form.get("channel"), requester_kind=form.get("requester_kind"),
                    subject_type=subject_type if subject_type in ("pupil", "staff", "user") else "pupil",
                    school=school, subject_external_id=(form.get("subject_external_id") or "").strip() or None,
                    subject_user_id=user_id, requester_contact=form.get("requester_contact", ""),
                )
                db.session.commit()
                done = req
            except RequestError as exc:
                db.session.rollback()
                error = str(exc)
        return self.render("admin/dsr_intake.html", error=error, done=done, types=[t.value for t in RequestType],
                           channels=register.CHANNELS, requester_kinds=register.REQUESTER_KINDS,
                           dpo=current_app.config.get("DPO_EMAIL"))


class UserRequestsView(SecureBaseView):
    """Requests about our own users' data, which the operator answers end to end (R47–R51, R53)."""

    @expose("/")
    def index(self):
        from sqlalchemy import select

        show_closed = request.args.get("show") == "all"
        query = select(SubjectRequest).where(SubjectRequest.controller == Controller.operator)
        if not show_closed:
            query = query.where(SubjectRequest.status.in_(OPEN_STATUSES))
        rows = db.session.execute(query.order_by(SubjectRequest.deadline_on, SubjectRequest.id)).scalars().all()
        return self.render("admin/dsr_user_requests.html", requests=rows, show_closed=show_closed,
                           labels=register.TYPE_LABELS)

    def _request(self, request_id: int) -> SubjectRequest:
        from flask import abort

        req = db.session.get(SubjectRequest, request_id)
        if req is None or req.controller is not Controller.operator:
            abort(404)
        return req

    def _detail(self, req: SubjectRequest, *, error: str | None = None, token: str | None = None, status: int = 200):
        from sqlalchemy import select

        exports = db.session.execute(select(SubjectExport).where(SubjectExport.request_id == req.id)
                                     .order_by(SubjectExport.id.desc())).scalars().all()
        subject = db.session.get(User, req.subject_user_id) if req.subject_user_id else None
        return self.render("admin/dsr_user_request.html", req=req, subject=subject, error=error, token=token,
                           exports=exports, is_open=req.status in OPEN_STATUSES, labels=register.TYPE_LABELS,
                           methods=register.IDENTITY_METHODS, extension_reasons=register.EXTENSION_REASONS), status

    @expose("/<int:request_id>/")
    def detail(self, request_id: int):
        return self._detail(self._request(request_id))

    @expose("/<int:request_id>/<step>", methods=["POST"])
    def act(self, request_id: int, step: str):
        from flask import abort, flash, redirect, url_for
        from flask_login import current_user

        req = self._request(request_id)
        form = request.form
        user = current_user._get_current_object()
        steps = {
            "verify": lambda: register.verify_identity(req, user, form.get("method")) or "Identity verified.",
            "extend": lambda: register.extend(req, user, form.get("reason")) or "Deadline extended.",
            "rectify": lambda: _rectified(users.rectify(req, user, name=form.get("name"), email=form.get("email"))),
            "erase": lambda: users.erase(req, user) and "The user's data is erased and the account closed.",
            "restrict": lambda: users.restrict(req, user) or "Processing restricted: no marketing, data kept.",
            "lift": lambda: users.lift_restriction(req, user) or "Restriction lifted.",
            "refuse": lambda: register.refuse(req, user, form.get("reason")) or "Request refused.",
            "complete": lambda: register.complete(req, user) or "Request closed.",
        }
        if step == "export":
            try:
                token = export.prepare(req, user)
                db.session.commit()
            except RequestError as exc:
                db.session.rollback()
                return self._detail(self._request(request_id), error=str(exc), status=400)
            return self._detail(req, token=token)
        if step not in steps:
            abort(404)
        try:
            message = steps[step]()
            db.session.commit()
        except RequestError as exc:
            db.session.rollback()
            return self._detail(self._request(request_id), error=str(exc), status=400)
        flash(message)
        return redirect(url_for(".detail", request_id=req.id))

    @expose("/<int:request_id>/download/<token>")
    def download(self, request_id: int, token: str):
        from flask import Response
        from flask_login import current_user

        req = self._request(request_id)
        try:
            payload = export.redeem(req, token, current_user._get_current_object())
            db.session.commit()
        except RequestError as exc:
            db.session.rollback()
            return self._detail(self._request(request_id), error=str(exc), status=410)
        return Response(payload, mimetype="application/zip", headers={
            "Content-Disposition": f'attachment; filename="user-access-request-{req.id}.zip"',
            "Cache-Control": "no-store",
        })

    @expose("/<int:request_id>/refusal.txt")
    def refusal_letter(self, request_id: int):
        from flask import Response, abort

        req = self._request(request_id)
        if req.refusal_reason is None:
            abort(404)
        return Response(register.refusal_letter(req), mimetype="text/plain")


def _rectified(changed: list[str]) -> str:
    parts = []
    if "name" in changed:
        parts.append("Name corrected.")
    if "email_pending" in changed:
        parts.append("A confirmation link was sent to the new email address; the old one stays in use until it is followed.")
    return " ".join(parts) or "Nothing has changed."


def _user_id(value: str) -> int | None:
    """Return the id of the user a support form names by id or by email address, if there is one."""
    from sqlalchemy import func, select

    value = value.strip()
    if value.isdigit():
        user = db.session.get(User, int(value))
        return user.id if user is not None else None
    if "@" in value:
        return db.session.execute(select(User.id).where(func.lower(User.email) == value.lower())).scalar()
    return None


def privacy_views() -> list:
    """Return the data-subject request admin views."""
    s = db
    return [
        IntakeView(name="Record a request", endpoint="dsr_intake", category="Data-subject requests"),
        UserRequestsView(name="Requests about our users", endpoint="dsr_users", category="Data-subject requests"),
        RequestRegisterView(SubjectRequest, s, name="Request register", endpoint="dsr_register",
                            category="Data-subject requests"),
        SuppressionView(Suppression, s, name="Suppressed subjects", endpoint="dsr_suppressions",
                        category="Data-subject requests"),
    ]
