"""flask-admin for support staff, built per app inside create_app()."""
from __future__ import annotations

from flask import Flask
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme

from portal.admin.views import SecureBaseView, SecureIndexView, SecureModelView
from portal.errors import StartupError
from portal.extensions import csrf
from portal.plugins.manager import get_plugins


def init_admin(app: Flask) -> Admin:
    """Build a fresh Admin for this app and add every view the plugins (core included) contribute."""
    views = get_plugins(app).admin_views(app)
    for view in views:
        # Access policy lives in the two secured bases only; an unsecured view would open the admin.
        if not isinstance(view, (SecureBaseView, SecureModelView)):
            raise StartupError(
                f"admin view {type(view).__qualname__} from {type(view).__module__} must subclass "
                "portal.admin.views.SecureBaseView or SecureModelView"
            )
    admin = Admin(
        app,
        name="Portal support",
        index_view=SecureIndexView(url="/admin", name="Overview"),
        theme=Bootstrap4Theme(base_template="admin/portal_base.html"),
    )
    for view in views:
        admin.add_view(view)
        if isinstance(view, SecureModelView):
            # AdminForm checks every form of these views (and re-shows it with a message when the token fails);
            # the app-wide check would answer an error page instead, so each form is checked once, by AdminForm.
            csrf.exempt(view.blueprint)
    return admin
