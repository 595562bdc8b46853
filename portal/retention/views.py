"""The school's retention page: what will be deleted in the next 30 days, and receipts of what was (R33, R41)."""
from __future__ import annotations

import csv
import io
from collections import defaultdict

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import SelectField
from wtforms.validators import InputRequired

from portal.extensions import db
from portal.models import Category
from portal.models.base import utcnow
from portal.models.retention import DeletionOrder, RetentionProof, RetentionRule
from portal.retention import fields
from portal.retention.calendar import london_date
from portal.retention.last_year_group import (
    YEAR_GROUP_CHOICES,
    confirm_last_year_group,
    confirmed_last_year_group,
    suggest_last_year_group,
)
from portal.retention.ledger import check_before_request
from portal.retention.preview import preview
from portal.scope import Action, can, school_or_404

bp = Blueprint("retention", __name__)
# R35: while a restored database is behind the deletion ledger, no page or API serves anything.
bp.before_app_request(check_before_request)

PREVIEW_DAYS = 30
RECEIPT_COLUMNS = ("proof", "rule", "rule_title", "trigger_date", "deadline", "deleted_at", "late_days", "category",
                   "rows_deleted", "records", "connection", "deletion_order", "sha256_of_record_ids")


class LastYearGroupForm(FlaskForm):
    last_year_group = SelectField(
        "Your school's last year group",
        choices=[("", "Choose a year group")] + [(str(n), name) for n, name in YEAR_GROUP_CHOICES],
        validators=[InputRequired("Choose your school's last year group.")],
    )


def _may_confirm(school) -> bool:
    """R30's setting is the school's choice: a school or trust admin, or support on the school's behalf."""
    return current_user.is_support or can(current_user, Action.instruct_deletion, school)


@bp.route("/schools/<int:school_id>/retention", methods=["GET", "POST"])
@login_required
def school_retention(school_id: int):
    school = school_or_404(current_user, school_id, Action.view)
    setting = confirmed_last_year_group(school)
    suggestion = suggest_last_year_group(school)
    form = None
    if _may_confirm(school):
        form = LastYearGroupForm()
        if request.method == "GET":
            value = setting.last_year_group if setting else suggestion.value
            form.last_year_group.data = "" if value is None else str(value)
        elif form.validate_on_submit():
            confirm_last_year_group(school, current_user, int(form.last_year_group.data))
            db.session.commit()
            flash("Your school's last year group is confirmed. Deletion dates for pupils completing it start from the next daily run.")
            return redirect(url_for("retention.school_retention", school_id=school.id))
    elif request.method == "POST":
        abort(404)
    today = london_date(utcnow())
    lines = preview(today, PREVIEW_DAYS, school_id=school.id)
    next_by_category: dict[str, object] = {}
    for line in lines:
        if not line.held and not line.fields and line.category not in next_by_category:
            next_by_category[line.category] = line.due_on
    proofs = db.session.execute(
        select(RetentionProof).where(RetentionProof.school_id == school.id, RetentionProof.status == "done")
        .order_by(RetentionProof.id.desc()).limit(100)
    ).scalars().all()
    orders = db.session.execute(
        select(DeletionOrder).where(DeletionOrder.school_id == school.id).order_by(DeletionOrder.id.desc()).limit(50)
    ).scalars().all()
    return render_template(
        "retention/school.html", school=school, lines=lines, days=PREVIEW_DAYS, today=today, proofs=proofs,
        orders=orders, next_by_category=next_by_category, rules=_rules(), categories=_categories(),
        overdue_categories={line.category for line in lines if not line.held and not line.fields and line.deadline < today},
        field_words=lambda order: fields.describe(order, _categories()),
        form=form, setting=setting, suggestion=suggestion, year_names=dict(YEAR_GROUP_CHOICES),
    ), 400 if form is not None and form.errors else 200


@bp.route("/schools/<int:school_id>/retention/receipts.csv")
@login_required
def receipts(school_id: int):
    """Download the deletion receipts: what was deleted, when, under which rule; ids only as a hash."""
    school = school_or_404(current_user, school_id, Action.view)
    query = select(RetentionProof).where(RetentionProof.school_id == school.id, RetentionProof.status == "done")
    order_id = request.args.get("order", type=int)
    if "order" in request.args and order_id is None:
        abort(400)
    if order_id is not None:
        query = query.where(RetentionProof.order_id == order_id)
    rules = _rules()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(RECEIPT_COLUMNS)
    for proof in db.session.execute(query.order_by(RetentionProof.id)).scalars():
        counts = proof.counts or {"(nothing held)": 0}
        for category, n in sorted(counts.items()):
            writer.writerow([
                proof.id, proof.rule_id, rules.get(proof.rule_id, ""), proof.trigger_on.isoformat(),
                proof.deadline.isoformat(), proof.done_at.isoformat() if proof.done_at else "", proof.late_days,
                category, n, proof.records, proof.connection_id or "", proof.order_id or "", proof.ids_sha256 or "",
            ])
    name = f"deletion-receipts-school-{school.id}{f'-order-{order_id}' if order_id else ''}.csv"
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _rules() -> dict[str, str]:
    return dict(db.session.execute(select(RetentionRule.id, RetentionRule.title)).all())


# Kinds of data the sweep deletes that are not MIS categories of the usage matrix.
PORTAL_DATA_NAMES = {"user_data": "Portal user accounts", "run_logs": "Extract run logs"}


def _categories() -> dict[str, str]:
    names = defaultdict(str, db.session.execute(select(Category.id, Category.name)).all())
    names.update(PORTAL_DATA_NAMES)
    return names
