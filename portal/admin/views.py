"""One secured base for every admin view (support role + TOTP, SecureForm, checked next, audit) and the core views."""
from __future__ import annotations

import logging
import secrets
from datetime import date, datetime
from typing import Any

from flask import abort, flash, g, redirect, request, session, url_for
from flask_admin import AdminIndexView, BaseView, expose
from flask_admin.actions import action
from flask_admin.babel import gettext
from flask_admin.contrib.sqla import ModelView
from flask_admin.form import BaseForm
from flask_admin.model import typefmt
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import generate_csrf, validate_csrf
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, InvalidRequestError
from wtforms.csrf.core import CSRF
from wtforms.validators import DataRequired, Email, Length, NumberRange, Optional, Regexp, ValidationError

from portal import audit
from portal.auth.views import MFA_KEY, safe_next, send_reset_link
from portal.converters import MAX_ID, parse_id
from portal.extensions import db
from portal.members import remove_membership
from portal.models import AuditEntry, Connection, JobRun, Membership, Organisation, OrgKind, Role, User
from portal.plugins.manager import get_plugins
from portal.school.queries import LONDON

log = logging.getLogger(__name__)

# Shown in place of any secret value: admin pages never carry the value itself (R62).
MASK = "••••••••"


def staff_allowed() -> bool:
    """Return whether the current user is support staff signed in with a second factor."""
    return bool(current_user.is_authenticated and current_user.is_support and session.get(MFA_KEY))


def _deny():
    if current_user.is_authenticated:
        # Signed in but not support staff (or without a second factor): do not reveal the admin exists.
        abort(404)
    return redirect(url_for("auth.login", next=safe_next(request.full_path.rstrip("?"))))


class SecureIndexView(AdminIndexView):
    """The admin's front page."""

    def is_accessible(self) -> bool:
        return staff_allowed()

    def inaccessible_callback(self, name: str, **kwargs: Any):
        return _deny()

    @expose("/")
    def index(self):
        return self.render("admin/index.html")


class SecureBaseView(BaseView):
    """Base for custom admin pages."""

    def is_accessible(self) -> bool:
        return staff_allowed()

    def inaccessible_callback(self, name: str, **kwargs: Any):
        return _deny()


def organisation_of(model: Any) -> int | None:
    """Return the organisation an admin change concerns, for the audit trail."""
    if isinstance(model, Organisation):
        return model.id
    for attr in ("organisation_id", "school_id"):
        if getattr(model, attr, None) is not None:
            return getattr(model, attr)
    return None


class _AppToken(CSRF):
    """The app's CSRF token (Flask-WTF's), checked by the form itself on every submission."""

    def generate_csrf_token(self, csrf_token_field) -> str:
        return generate_csrf()

    def validate_csrf_token(self, form, field) -> None:
        # Always checked here: admin views are exempt from the app-wide check, which would otherwise vouch for it.
        validate_csrf(field.data)


class AdminForm(BaseForm):
    """flask-admin's form with Flask-WTF's CSRF token, the one the rest of the portal and every admin template use.

    flask-admin's own SecureForm signs a different token, and its form template also writes the app's token
    (``csrf_token()``) before the form's: a browser then sends both under one name and the first one failed.
    With one kind of token, whichever a template writes is valid; admin forms check it even where a test
    configuration turns the app-wide check off.
    """

    class Meta(BaseForm.Meta):
        csrf = True
        csrf_class = _AppToken

    # flask-admin writes hidden_tag() (the token once) when a form has one, else the token twice.
    hidden_tag = FlaskForm.hidden_tag


def london_time(view, moment: datetime, name: str = "") -> str:
    """A stored UTC time as staff read it: London local time, to the minute."""
    if moment.tzinfo is None:  # SQLite hands back naive values; the portal stores UTC
        from datetime import timezone

        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(LONDON).strftime("%-d %b %Y, %H:%M")


def long_date(view, day: date, name: str = "") -> str:
    return day.strftime("%-d %b %Y")


# Times in London local time and dates written out, in lists and details alike.
TYPE_FORMATTERS = {**typefmt.BASE_FORMATTERS, datetime: london_time, date: long_date}
TYPE_FORMATTERS_DETAIL = {**typefmt.DETAIL_FORMATTERS, datetime: london_time, date: long_date}


def user_names(ids: set[int]) -> dict[int, str]:
    """Names of the given users, read once per request (list pages show many rows by few actors)."""
    cache = g.setdefault("admin_user_names", {})
    missing = {i for i in ids if i not in cache}
    if missing:
        cache.update({row.id: row.name for row in db.session.execute(select(User.id, User.name).where(User.id.in_(missing)))})
    return cache


def actor_label(view, context, model, name) -> str:
    """Who did it, in words: a user's name (their id beside it), the system, or a product feature."""
    user_id = getattr(model, "actor_user_id", None)
    if user_id is not None:
        return f"{user_names({user_id}).get(user_id, 'Unknown user')} (user {user_id})"
    if getattr(model, "actor_ref", None):
        return "A user whose data was erased"
    actor = model.actor or ""
    if actor.startswith("product-feature:"):
        return f"Product feature {actor.split(':', 1)[1].replace('_', ' ')}"
    return actor.replace("_", " ").replace(":", " ").capitalize()


class SecureModelView(ModelView):
    """Base for model views: access policy, CSRF and the audit of every change in one place."""

    form_base_class = AdminForm
    column_type_formatters = TYPE_FORMATTERS
    column_type_formatters_detail = TYPE_FORMATTERS_DETAIL
    page_size = 50
    can_view_details = True
    can_export = False

    def is_accessible(self) -> bool:
        return staff_allowed()

    def inaccessible_callback(self, name: str, **kwargs: Any):
        return _deny()

    def _get_list_extra_args(self):
        args = super()._get_list_extra_args()
        # A page number or size past anything a table holds would overflow the database's OFFSET: first page.
        if not 0 <= (args.page or 0) <= MAX_ID:
            args.page = 0
        if not 0 <= (args.page_size or 0) <= 1000:
            args.page_size = 0
        return args

    def get_one(self, id):
        # An id no row can have (not a number, or past the id columns' range) is simply not found.
        if self.model.__table__.primary_key.columns[0].type.python_type is int and parse_id(id) is None:
            return None
        try:
            return super().get_one(id)
        except InvalidRequestError:  # a key with the wrong number of parts for a composite primary key
            return None

    def validate_form(self, form) -> bool:
        ok = super().validate_form(form)
        csrf_field = getattr(form, "csrf_token", None)
        if not ok and csrf_field is not None and csrf_field.errors:
            flash(gettext("The form expired or was sent from elsewhere. Reload the page and try again."), "error")
        return ok

    def on_model_change(self, form, model, is_created: bool) -> None:
        self.validate_model(model, is_created)
        db.session.flush()  # so a new row has its id for the audit entry
        # Field names only: the values may be personal data and the trail keeps none (R65).
        changed = sorted(f.name for f in form if f.name != "csrf_token" and (is_created or f.data != f.object_data))
        audit.record(
            f"admin.{self.endpoint}.{'created' if is_created else 'updated'}",
            organisation_id=organisation_of(model),
            target=model,
            details={"fields": changed},
        )

    def on_model_delete(self, model) -> None:
        # Recorded before the delete, in the same transaction, so a delete is never left unaudited.
        audit.record(f"admin.{self.endpoint}.deleted", organisation_id=organisation_of(model), target=model)

    def validate_model(self, model, is_created: bool) -> None:
        """Raise wtforms.ValidationError with a message for staff when the change is not allowed."""

    def handle_view_exception(self, exc: Exception) -> bool:
        if isinstance(exc, IntegrityError):
            # The database's message quotes values; staff get a plain sentence, the log gets the type only.
            log.warning("admin %s refused a change: %s", self.endpoint, type(exc.orig).__name__)
            flash(gettext("That change clashes with another record (for example the same email, URN or DfE number)."), "error")
            return True
        return super().handle_view_exception(exc)


class ReadOnlyModelView(SecureModelView):
    """Base for audit-like tables: list and details only."""

    can_create = False
    can_edit = False
    can_delete = False


def _masked_settings(view, context, model, name) -> str:
    """Show a connection's settings: the values of those its connector declares as not secret, every other masked.

    Support needs to see which school id or host a connection points at; a secret, a setting the
    connector does not declare, or any setting of a connector that is not enabled shows only that it is set.
    """
    import json

    try:
        values = json.loads(model.settings_encrypted or "{}")
    except (ValueError, TypeError):
        return MASK
    if not isinstance(values, dict):
        return MASK
    try:
        safe = get_plugins().connector(model.connector).masked(values, MASK)
    except KeyError:
        safe = dict.fromkeys(values, MASK)
    return ", ".join(f"{k}: {safe[k]}" for k in sorted(safe)) or "none"


def _ids_of(model_cls, ids: list[str]) -> list:
    return list(db.session.execute(select(model_cls).where(model_cls.id.in_([int(i) for i in ids]))).scalars())


def _clashes(model_cls, model, *conditions) -> bool:
    """Return whether another row (not this one) meets the conditions; the pending row is not flushed first."""
    from sqlalchemy import true

    not_this = model_cls.id != model.id if model.id is not None else true()
    with db.session.no_autoflush:
        return db.session.execute(select(model_cls.id).where(not_this, *conditions)).first() is not None


def core_views() -> list[BaseView]:
    """Return the core admin views."""
    class OrganisationView(SecureModelView):
        column_list = ("name", "kind", "urn", "dfe_number", "la_code", "phase", "local_authority.name", "trust.name")
        column_labels = {"urn": "URN", "dfe_number": "DfE number", "la_code": "LA code",
                         "statutory_high_age": "Statutory high age (GIAS)",
                         "local_authority.name": "Local authority", "trust.name": "Trust"}
        column_searchable_list = ("name", "urn", "dfe_number")
        # An organisation's data leaves through retention rules, orders and erasure, which prove each deletion
        # and tell the products (R41, R42); a cascade from here would do neither and would orphan its audit entries.
        can_delete = False
        column_filters = ("kind", "phase")
        column_default_sort = "name"
        # The statutory high age only pre-fills a school's last year group (R30), which the school confirms:
        # support corrects it here when GIAS or the demo data had it wrong.
        form_columns = ("kind", "name", "urn", "dfe_number", "la_code", "phase", "statutory_high_age",
                        "local_authority", "trust")
        form_args = {
            "name": {"validators": [DataRequired("Enter the name."), Length(max=200)]},
            "urn": {"validators": [Optional(), Regexp(r"^\d{6}$", message="A URN is 6 digits.")]},
            "dfe_number": {"validators": [Optional(), Regexp(r"^\d{7}$", message="A DfE number is 7 digits (LA code + 4).")]},
            "la_code": {"validators": [Optional(), Regexp(r"^\d{3}$", message="An LA code is 3 digits.")]},
            "statutory_high_age": {"validators": [Optional(), NumberRange(
                4, 19, message="A school's statutory high age is between 4 and 19 (GIAS's StatutoryHighAge).")]},
            "local_authority": {"query_factory": lambda: Organisation.query.filter_by(kind=OrgKind.local_authority)},
            "trust": {"query_factory": lambda: Organisation.query.filter_by(kind=OrgKind.trust)},
        }

        def validate_model(self, model, is_created):
            if model.kind != OrgKind.school and (model.urn or model.dfe_number or model.statutory_high_age is not None):
                raise ValidationError("Only schools have a URN, DfE number or statutory high age.")
            if model.kind != OrgKind.local_authority and model.la_code:
                raise ValidationError("Only local authorities have an LA code.")
            if model.kind != OrgKind.school and (model.trust or model.local_authority):
                raise ValidationError("Only schools belong to a trust or local authority.")

    user_columns = ("name", "email", "is_support", "active", "totp_enabled", "last_login_at", "created_at")

    class UserView(SecureModelView):
        # Explicit lists everywhere: never password hashes, TOTP secrets or session tokens (R62).
        column_list = user_columns
        column_details_list = user_columns
        column_export_list = user_columns
        column_labels = {"is_support": "Support staff", "totp_enabled": "Two-factor on"}
        column_searchable_list = ("name", "email")
        form_columns = ("name", "email", "is_support", "active")
        form_args = {
            "name": {"validators": [DataRequired("Enter the name."), Length(max=200)]},
            "email": {"validators": [DataRequired("Enter the email address."), Email("Enter a valid email address.")]},
        }
        can_delete = False  # deactivate instead: the audit trail and memberships keep their meaning

        def validate_model(self, model, is_created):
            model.email = model.email.strip()
            if _clashes(User, model, db.func.lower(User.email) == model.email.lower()):
                raise ValidationError("Another user already has that email address.")
            if not is_created:
                # Deactivating or changing support status ends the user's sessions at once.
                from sqlalchemy import inspect

                state = inspect(model)
                if state.attrs.active.history.has_changes() or state.attrs.is_support.history.has_changes():
                    model.session_token = secrets.token_hex(32)

        @action("reset_totp", "Reset two-factor sign-in", "Reset two-factor sign-in for the selected users?")
        def action_reset_totp(self, ids: list[str]) -> None:
            users = _ids_of(User, ids)
            for user in users:
                user.totp_secret = None
                user.totp_enabled = False
                user.totp_last_step = None
                user.session_token = secrets.token_hex(32)
                audit.record("admin.users.totp_reset", target=user)
            db.session.commit()
            flash(f"Two-factor sign-in reset for {len(users)} user(s). They set it up again at their next sign-in.")

        @action("send_reset", "Send password reset link", "Email a password reset link to the selected users?")
        def action_send_reset(self, ids: list[str]) -> None:
            users = [u for u in _ids_of(User, ids) if u.active]
            for user in users:
                send_reset_link(user)
                audit.record("admin.users.reset_sent", target=user)
            db.session.commit()
            flash(f"Password reset link sent to {len(users)} active user(s).")

    class MembershipView(SecureModelView):
        column_list = ("user.email", "organisation.name", "role", "suspended_at", "removed_at")
        column_labels = {"user.email": "User", "organisation.name": "Organisation"}
        column_searchable_list = ("user.email", "organisation.name")
        column_filters = ("role",)
        form_columns = ("user", "organisation", "role", "suspended_at")
        form_args = {"user": {"get_label": "email"}, "organisation": {"get_label": "name"}}
        form_choices = {"role": [(r.name, r.label) for r in Role]}
        column_formatters = {"role": lambda view, context, model, name: Role(model.role).label}

        # Which kind of organisation each role belongs to (R55).
        ROLE_KINDS = {
            Role.school_admin: OrgKind.school,
            Role.school_viewer: OrgKind.school,
            Role.trust_admin: OrgKind.trust,
            Role.la_officer: OrgKind.local_authority,
            Role.diocese_officer: OrgKind.diocese,
        }

        def validate_model(self, model, is_created):
            if model.user is None or model.organisation is None:
                raise ValidationError("Choose a user and an organisation.")
            role = Role(model.role)
            if self.ROLE_KINDS[role] != model.organisation.kind:
                raise ValidationError(
                    f"The role {role.label} is for a {self.ROLE_KINDS[role].value.replace('_', ' ')}, "
                    f"not a {model.organisation.kind.value.replace('_', ' ')}."
                )
            if _clashes(
                Membership, model, Membership.user_id == model.user.id, Membership.organisation_id == model.organisation.id
            ):
                raise ValidationError("This user already has a role in this organisation.")

        def delete_model(self, model) -> bool:
            # R38: deleting a user from an organisation ends their access now and starts the 7-year clock;
            # the row stays, marked removed, until the retention sweep deletes it with the user's data.
            self.on_model_delete(model)
            remove_membership(model, current_user)
            db.session.commit()
            return True

    class ConnectionView(SecureModelView):
        column_list = ("school.name", "connector", "state", "state_changed_at", "paused", "provider_school_id", "settings")
        column_details_list = column_list
        column_labels = {"school.name": "School", "settings": "Settings"}
        column_formatters = {"settings": _masked_settings}
        column_formatters_detail = {"settings": _masked_settings}
        column_filters = ("connector", "state", "paused")
        column_searchable_list = ("school.name", "connector")
        # State changes go through portal.lifecycle only; staff may pause and resume extracts here.
        form_columns = ("paused",)
        can_create = False
        can_delete = False

    class RunView(ReadOnlyModelView):
        column_list = ("id", "job_id", "kind", "status", "scheduled_for", "started_at", "finished_at", "error_kind", "error_code", "error_message")
        column_filters = ("status", "kind", "job_id")
        column_default_sort = ("id", True)

    class AuditView(ReadOnlyModelView):
        column_list = ("id", "at", "actor", "action", "organisation_id", "target_type", "target_id")
        column_labels = {"at": "When (London)", "actor": "Who", "organisation_id": "Organisation id"}
        column_formatters = {"actor": actor_label}
        column_formatters_detail = {"actor": actor_label}

        def get_list(self, *args, **kwargs):
            count, rows = super().get_list(*args, **kwargs)
            user_names({r.actor_user_id for r in rows if r.actor_user_id is not None})  # one query for the page
            return count, rows
        column_filters = ("action", "actor", "organisation_id")
        column_default_sort = ("id", True)

    return [
        OrganisationView(Organisation, db, name="Organisations", endpoint="organisations"),
        UserView(User, db, name="Users", endpoint="users"),
        MembershipView(Membership, db, name="Memberships", endpoint="memberships"),
        ConnectionView(Connection, db, name="Connections", endpoint="connections"),
        RunView(JobRun, db, name="Runs", endpoint="runs"),
        AuditView(AuditEntry, db, name="Audit trail", endpoint="audit"),
    ]
