"""One secured base for every admin view (support role + TOTP, SecureForm, checked next) and the core views."""
from __future__ import annotations

from typing import Any

from flask import redirect, request, session, url_for
from flask_admin import AdminIndexView, BaseView, expose
from flask_admin.contrib.sqla import ModelView
from flask_admin.form import SecureForm
from flask_login import current_user

from portal.auth.views import MFA_KEY, safe_next


def staff_allowed() -> bool:
    """Return whether the current user is support staff signed in with a second factor."""
    return bool(current_user.is_authenticated and current_user.is_support and session.get(MFA_KEY))


def _deny():
    if current_user.is_authenticated:
        # Signed in but not support staff (or without TOTP): do not reveal the admin exists.
        from flask import abort

        abort(404)
    return redirect(url_for("auth.login", next=safe_next(request.full_path.rstrip("?"))))


class SecureIndexView(AdminIndexView):
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


class SecureModelView(ModelView):
    """Base for model views: access policy and CSRF in one place."""

    form_base_class = SecureForm
    page_size = 50
    can_view_details = True

    def is_accessible(self) -> bool:
        return staff_allowed()

    def inaccessible_callback(self, name: str, **kwargs: Any):
        return _deny()


class ReadOnlyModelView(SecureModelView):
    can_create = False
    can_edit = False
    can_delete = False


def core_views() -> list[BaseView]:
    """Return the core admin views."""
    from portal.extensions import db
    from portal.models import AuditEntry, Connection, JobRun, Membership, Organisation, User

    class OrganisationView(SecureModelView):
        column_list = ("name", "kind", "urn", "dfe_number", "phase", "local_authority", "trust")
        column_searchable_list = ("name", "urn", "dfe_number")
        column_filters = ("kind", "phase")
        column_default_sort = "name"
        form_excluded_columns = ("subscriptions", "created_at")

    class UserView(SecureModelView):
        column_list = ("name", "email", "is_support", "active", "totp_enabled", "last_login_at")
        column_searchable_list = ("name", "email")
        # Never hashes, TOTP secrets or session tokens.
        column_exclude_list = ("password_hash", "totp_secret", "session_token")
        column_details_exclude_list = ("password_hash", "totp_secret", "session_token")
        form_excluded_columns = ("password_hash", "totp_secret", "session_token", "created_at", "last_login_at", "memberships")
        can_delete = False

    class MembershipView(SecureModelView):
        column_list = ("user", "organisation", "role", "suspended_at")
        column_filters = ("role",)

    class ConnectionView(SecureModelView):
        column_list = ("school", "connector", "state", "state_changed_at", "paused", "provider_school_id")
        column_filters = ("connector", "state", "paused")
        column_exclude_list = ("settings_encrypted",)
        column_details_exclude_list = ("settings_encrypted",)
        form_excluded_columns = ("settings_encrypted", "created_at")
        can_create = False
        can_delete = False

    class RunView(ReadOnlyModelView):
        column_list = ("job_id", "kind", "connection", "status", "scheduled_for", "started_at", "finished_at", "error_kind", "error_message")
        column_filters = ("status", "kind", "job_id")
        column_default_sort = ("id", True)

    class AuditView(ReadOnlyModelView):
        column_list = ("id", "at", "actor", "action", "organisation_id", "target_type", "target_id")
        column_filters = ("action", "actor", "organisation_id")
        column_default_sort = ("id", True)

    s = db
    return [
        OrganisationView(Organisation, s, name="Organisations", endpoint="organisations"),
        UserView(User, s, name="Users", endpoint="users"),
        MembershipView(Membership, s, name="Memberships", endpoint="memberships"),
        ConnectionView(Connection, s, name="Connections", endpoint="connections"),
        RunView(JobRun, s, name="Runs", endpoint="runs"),
        AuditView(AuditEntry, s, name="Audit trail", endpoint="audit"),
    ]
