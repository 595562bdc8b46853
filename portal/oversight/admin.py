"""Support back office pages: the breach record (R69) and the sub-processor register (R66)."""
from __future__ import annotations

from flask import abort, flash, redirect, request, url_for
from flask_admin import expose
from flask_login import current_user
from sqlalchemy import select

from portal.admin.views import SecureBaseView
from portal.clock import LONDON
from portal.extensions import db
from portal.models import Breach, BreachStatus, NoticeRecipient, Organisation, OrgKind, Product, SubProcessor
from portal.oversight import breaches, subprocessors
from portal.oversight.forms import BreachForm, EndForm, NoticeForm, SubProcessorForm, submit


class BreachesView(SecureBaseView):
    """Open a breach record, see its 72-hour deadline and affected schools, record the notices sent."""

    def _form(self) -> BreachForm:
        form = BreachForm()
        form.product_id.choices = [(0, "None")] + [(p.id, p.name) for p in
                                                   db.session.execute(select(Product).order_by(Product.name)).scalars()]
        return form

    @expose("/", methods=["GET", "POST"])
    def index(self):
        form = self._form()
        sent = submit(form, lambda: breaches.open_breach(
            form.aware_at.data.replace(tzinfo=LONDON, fold=0), form.summary.data,
            product_id=form.product_id.data or None, credential_id=form.credential_id.data or None,
            confirmed=form.confirmed.data, by_user_id=current_user.id), breaches.BreachError)
        if sent.done:
            return redirect(url_for(".detail", breach_id=sent.result.id))
        return self.render("admin/breaches.html", form=form, error=sent.error, breaches=breaches.all_breaches(),
                           deadline=breaches.deadline), sent.status

    @expose("/<int:breach_id>", methods=["GET", "POST"])
    def detail(self, breach_id: int):
        breach = db.session.get(Breach, breach_id) or abort(404)
        affected = breaches.affected(breach)
        form = NoticeForm()
        form.school_id.choices = [(0, "Choose a school")] + [(a.school_id, a.school_name) for a in affected]
        if request.method == "POST" and request.form.get("status"):
            if EndForm().validate_on_submit() and request.form["status"] in BreachStatus.__members__:
                breaches.set_status(breach, BreachStatus(request.form["status"]))
                db.session.commit()
            return redirect(url_for(".detail", breach_id=breach.id))
        sent = submit(form, lambda: breaches.record_notice(
            breach, NoticeRecipient(form.recipient.data), school_id=form.school_id.data or None,
            reference=form.reference.data, by_user_id=current_user.id), breaches.BreachError)
        if sent.done:
            flash("Notice recorded.")
            return redirect(url_for(".detail", breach_id=breach.id))
        schools = dict(db.session.execute(select(Organisation.id, Organisation.name)
                                          .where(Organisation.kind == OrgKind.school,
                                                 Organisation.id.in_([n.school_id for n in breach.notices if n.school_id]))).all())
        return self.render("admin/breach.html", breach=breach, affected=affected, deadline=breaches.deadline(breach),
                           form=form, error=sent.error, schools=schools, status_form=EndForm(),
                           statuses=list(BreachStatus)), sent.status


class SubProcessorsView(SecureBaseView):
    """The sub-processor register: add (validated against R64 and R66) and remove entries."""

    @expose("/", methods=["GET", "POST"])
    def index(self):
        form = SubProcessorForm()
        sent = submit(form, lambda: subprocessors.add(form.name.data, form.purpose.data, form.location.data,
                                                      form.data_types.data, form.mechanism.data or None,
                                                      form.pupil_data.data), subprocessors.RegisterError)
        if sent.done:
            flash("Sub-processor added to the register.")
            return redirect(url_for(".index"))
        return self.render("admin/sub_processors.html", form=form, error=sent.error, register=subprocessors.register(),
                           remove_form=EndForm()), sent.status

    @expose("/<int:item_id>/remove", methods=["POST"])
    def remove(self, item_id: int):
        item = db.session.get(SubProcessor, item_id) or abort(404)
        if not EndForm().validate_on_submit():
            abort(400)
        subprocessors.remove(item)
        db.session.commit()
        flash(f"{item.name} removed from the register.")
        return redirect(url_for(".index"))
