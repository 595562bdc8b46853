"""Every support admin page in a real browser: axe finds no WCAG 2.2 AA problem, the portal's header is there, no CSP errors."""
from __future__ import annotations

import pytest
from flask import url_for
from flask_admin.contrib.sqla import ModelView
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditEntry
from tests.browser.conftest import check_accessibility, plain, screenshot, sign_in
from tests.test_retention import World

# The pages, not the database, are under test here (test_admin.py covers the admin views on both backends);
# PostgreSQL, the stricter of the two, when it is chosen.
pytestmark = [pytest.mark.browser, pytest.mark.one_backend("postgresql")]

# Pages shown in docs/pages.md (the operations page's is taken with a held run, in test_flows).
SCREENSHOTS = {"admin": "admin-overview", "audit": "admin-audit", "users": "admin-users",
               "products-create": "admin-product-form", "memberships-create": "admin-membership-form",
               "dsr_intake": "admin-dsr-intake"}


def admin_pages(app) -> list[tuple[str, str]]:
    """(name, path) of every admin page: each view's index, and for model views a row's details and edit form and the create form."""
    pages = []
    with app.test_request_context():
        admin = app.extensions["admin"][0]
        for view in [admin.index_view, *admin._views]:
            pages.append((view.endpoint, url_for(f"{view.endpoint}.index_view" if isinstance(view, ModelView) else f"{view.endpoint}.index")))
            if not isinstance(view, ModelView):
                continue
            first = db.session.execute(select(view.model).limit(1)).scalar()
            pk = view.get_pk_value(first) if first is not None else None
            if view.can_create:
                pages.append((f"{view.endpoint}-create", url_for(f"{view.endpoint}.create_view")))
            if pk is not None and view.can_view_details:
                pages.append((f"{view.endpoint}-details", url_for(f"{view.endpoint}.details_view", id=pk)))
            if pk is not None and view.can_edit:
                pages.append((f"{view.endpoint}-edit", url_for(f"{view.endpoint}.edit_view", id=pk)))
    return pages


def test_every_admin_page_passes_axe_and_shows_the_portal_header(serve, make, page):
    server = serve()
    app = server.app
    with app.app_context():
        world = World(make)
        conn = world.school()
        world.pupil(conn)
        staff = make.user(support=True)
        from portal import audit

        audit.record("connection.approved", organisation_id=conn.school_id, target=conn, actor_user_id=staff.id,
                     actor=f"user:{staff.id}")
        db.session.commit()
        staff = plain(staff)
        pages = admin_pages(app)
        actor_shown = db.session.execute(select(AuditEntry.actor_user_id)).scalars().first()
    assert len(pages) > 30
    sign_in(page, server.url, staff)
    for name, path in pages:
        response = page.goto(f"{server.url}{path}")
        assert response.status == 200, f"{path}: {response.status}"
        header = page.get_by_test_id("admin-header")
        assert staff.name in header.inner_text() and page.get_by_test_id("back-to-portal").is_visible(), path
        check_accessibility(page)
        if name in SCREENSHOTS:
            screenshot(page, SCREENSHOTS[name])

    # Human labels: the audit trail names the actor and gives London times, not "user:8" or raw timestamps.
    page.goto(f"{server.url}/admin/audit/")
    body = page.locator("main").inner_text()
    assert actor_shown == staff.id and f"{staff.name} (user {staff.id})" in body and f"user:{staff.id}" not in body
    assert "+00:00" not in body

    # Sign out from the admin's header ends the session.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_load_state()
    assert page.goto(f"{server.url}/admin/").url.startswith(f"{server.url}/login")
