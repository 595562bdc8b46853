"""Support staff's views of data-subject requests: the register, suppression entries, and intake of requests that reached us."""
from __future__ import annotations

from datetime import date

from flask import current_app, request
from flask_admin import expose

from portal.admin.views import ReadOnlyModelView, SecureBaseView
from portal.extensions import db
from portal.models import Organisation, OrgKind, User
from portal.models.dsr import RequestType, SubjectRequest, Suppression
from portal.privacy import register
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
            user_id = int(form["subject_user_id"]) if form.get("subject_user_id", "").isdigit() else None
            if user_id is not None and db.session.get(User, user_id) is None:
                user_id = None
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


def privacy_views() -> list:
    """Return the data-subject request admin views."""
    s = db
    return [
        IntakeView(name="Record a request", endpoint="dsr_intake", category="Data-subject requests"),
        RequestRegisterView(SubjectRequest, s, name="Request register", endpoint="dsr_register",
                            category="Data-subject requests"),
        SuppressionView(Suppression, s, name="Suppressed subjects", endpoint="dsr_suppressions",
                        category="Data-subject requests"),
    ]
