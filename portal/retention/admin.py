"""Support staff's retention views: edit rules within the seeds' limits, legal holds, the DfE agreement end, proofs, preview."""
from __future__ import annotations

from datetime import date

from flask import current_app, flash, request
from flask_admin import expose
from flask_admin.actions import action
from flask_login import current_user
from sqlalchemy import select
from wtforms import SelectField
from wtforms.validators import ValidationError

from portal import audit
from portal.admin.views import ReadOnlyModelView, SecureBaseView, SecureModelView
from portal.extensions import db
from portal.models import Organisation
from portal.models.base import utcnow
from portal.models.mis import MisPupil, MisStaff
from portal.models.retention import DeletionOrder, DfeAgreement, LegalHold, RetentionProof, RetentionRule
from portal.retention.calendar import london_date
from portal.retention.preview import preview
from portal.retention.rules import CLOCKS, COVERS, TIMINGS, rule_problem

HOLD_TABLES = {"mis_pupils": MisPupil, "mis_staff": MisStaff}


def _actor() -> dict:
    return {"actor": f"user:{current_user.id}", "actor_user_id": current_user.id}


class RetentionRuleView(SecureModelView):
    """Rules as data: a deployment adds rules or shortens periods; lengthening past the seeds is refused."""

    can_delete = False
    column_list = ("id", "title", "covers", "clock", "period", "period_unit", "max_period", "timing", "action", "enabled")
    column_default_sort = "id"
    form_columns = ("id", "title", "covers", "clock", "period", "period_unit", "timing", "action", "source")
    form_overrides = {"covers": SelectField, "clock": SelectField, "timing": SelectField}
    form_args = {
        "covers": {"choices": list(COVERS.items())},
        "clock": {"choices": list(CLOCKS.items())},
        "timing": {"choices": list(TIMINGS.items())},
    }
    # Only the period changes after creation: the seeds' limit (max_period) is fixed by the migration, and
    # changing a rule's clock, unit or timing, or switching it off, would keep data past the seeds' deadline.
    FIXED_AFTER_CREATE = ("id", "covers", "clock", "period_unit", "timing", "action")

    def edit_form(self, obj=None):
        form = super().edit_form(obj)
        for name in self.FIXED_AFTER_CREATE:
            del form[name]
        return form

    def on_model_change(self, form, model: RetentionRule, is_created: bool) -> None:
        if model.categories is None:
            model.categories = []
        problem = rule_problem(model)
        if problem:
            raise ValidationError(problem)
        audit.record("retention.rule_added" if is_created else "retention.rule_changed", target_type="retention_rules",
                     target_id=model.id, details={"period": model.period, "enabled": model.enabled}, **_actor())


class LegalHoldView(SecureModelView):
    """Legal holds on one pupil or staff record (R40): a reason, a review date, DPO approval; never a whole school."""

    can_delete = False
    column_list = ("id", "school_id", "record_table", "record_id", "review_on", "dpo_approved_at", "released_at", "created_at")
    column_default_sort = ("id", True)
    form_columns = ("school_id", "record_table", "record_id", "reason", "review_on")
    form_overrides = {"record_table": SelectField}
    form_args = {"record_table": {"choices": [("mis_pupils", "Pupil"), ("mis_staff", "Member of staff")], "label": "Subject"},
                 "record_id": {"label": "Record id (from the store, not a name)"}}

    def on_model_change(self, form, model: LegalHold, is_created: bool) -> None:
        if not (model.reason or "").strip():
            raise ValidationError("Enter the reason for the hold (the legal claim it protects).")
        if model.review_on is None or model.review_on <= london_date(utcnow()):
            raise ValidationError("Enter a review date in the future; the hold lapses on it unless renewed.")
        table = HOLD_TABLES.get(model.record_table)
        if table is None or model.record_id is None:
            raise ValidationError("A hold is for one pupil or one member of staff; a whole school cannot be held.")
        owner = db.session.execute(select(table.school_id).where(table.id == model.record_id)).scalar()
        if owner is None or owner != model.school_id:
            raise ValidationError("No such record at that school.")
        if is_created:
            model.created_by_id = current_user.id

    def after_model_change(self, form, model: LegalHold, is_created: bool) -> None:
        audit.record("retention.hold_created" if is_created else "retention.hold_changed", organisation_id=model.school_id,
                     target=model, details={"record_table": model.record_table, "record_id": model.record_id,
                                            "review_on": model.review_on.isoformat()}, **_actor())
        db.session.commit()

    @action("approve", "Approve as DPO", "Approve the selected holds? Deletion of these records is suspended until review.")
    def approve(self, ids):
        now = utcnow()
        for hold in db.session.execute(select(LegalHold).where(LegalHold.id.in_([int(i) for i in ids]))).scalars():
            if hold.dpo_approved_at is None:
                hold.dpo_approved_at, hold.dpo_approved_by_id = now, current_user.id
                audit.record("retention.hold_approved", organisation_id=hold.school_id, target=hold, details={}, **_actor())
        db.session.commit()
        flash("Approved.")

    @action("release", "Release", "Release the selected holds? The records are deleted at the next sweep if due.")
    def release(self, ids):
        now = utcnow()
        for hold in db.session.execute(select(LegalHold).where(LegalHold.id.in_([int(i) for i in ids]))).scalars():
            if hold.released_at is None:
                hold.released_at = now
                audit.record("retention.hold_released", organisation_id=hold.school_id, target=hold, details={}, **_actor())
        db.session.commit()
        flash("Released.")


class DfeAgreementView(SecureModelView):
    """The operator's DfE data agreement: recording its end starts R28's 20-working-day clock."""

    can_delete = False
    column_list = ("id", "reference", "ends_on", "recorded_at")
    form_columns = ("reference", "ends_on")

    def on_model_change(self, form, model: DfeAgreement, is_created: bool) -> None:
        model.recorded_by_id = current_user.id
        audit.record("retention.dfe_agreement_recorded", target_type="dfe_agreements", target_id=model.id,
                     details={"ends_on": model.ends_on.isoformat() if model.ends_on else None}, **_actor())


class ProofView(ReadOnlyModelView):
    column_list = ("id", "rule_id", "school_id", "connection_id", "order_id", "trigger_on", "deadline", "as_of",
                   "late_days", "records", "counts", "ids_sha256", "status", "done_at")
    column_filters = ("rule_id", "school_id", "late_days", "status")
    column_default_sort = ("id", True)


class OrderView(ReadOnlyModelView):
    column_list = ("id", "school_id", "connection_id", "reason", "rule_id", "categories", "fields", "trigger_on", "due_on",
                   "created_at", "cancelled_at", "completed_at")
    column_default_sort = ("id", True)


class PreviewView(SecureBaseView):
    """What every sweep of the next 30 days will delete, per school, rule and category (R41)."""

    @expose("/")
    def index(self):
        as_of = london_date(utcnow())
        error = None
        if request.args.get("as_of"):
            try:
                as_of = date.fromisoformat(request.args["as_of"])
            except ValueError:
                error = "Enter the date as YYYY-MM-DD, for example 2026-01-23."
        lines = preview(as_of, 30)
        names = dict(db.session.execute(select(Organisation.id, Organisation.name)).all())
        # R26: without the bank-holiday calendar every weekday counts, which is earlier and so safe, but staff should know.
        no_calendar = not current_app.config.get("RETENTION_BANK_HOLIDAYS", True)
        return self.render("admin/retention_preview.html", lines=lines, as_of=as_of, names=names, error=error,
                           no_calendar=no_calendar)


def retention_views() -> list:
    """Return the retention admin views."""
    s = db
    return [
        RetentionRuleView(RetentionRule, s, name="Retention rules", endpoint="retention_rules", category="Retention"),
        LegalHoldView(LegalHold, s, name="Legal holds", endpoint="legal_holds", category="Retention"),
        DfeAgreementView(DfeAgreement, s, name="DfE agreement", endpoint="dfe_agreement", category="Retention"),
        ProofView(RetentionProof, s, name="Deletion proofs", endpoint="retention_proofs", category="Retention"),
        OrderView(DeletionOrder, s, name="Deletion orders", endpoint="deletion_orders", category="Retention"),
        PreviewView(name="Deletion preview", endpoint="retention_preview", url="/admin/retention-preview", category="Retention"),
    ]
