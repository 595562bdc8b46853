"""The support admin: one secured base, CSRF on every form, secrets never shown, every change audited."""
from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import func, select, text

from portal.admin.views import SecureBaseView, SecureIndexView, SecureModelView
from portal.extensions import db
from portal.models import AuditEntry, Connection, Membership, Organisation, OrgKind, Role, User
from tests.conftest import Auth
from tests.factories import PASSWORD

SECRET_SETTING = "sentinel-connector-token-5f1c"


def token_of(html: bytes) -> str:
    match = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert match, "the form has no CSRF token"
    return match.group(1).decode()


def post_form(client, path: str, data: dict):
    """Open the admin form, then send it back with its CSRF token, as a browser does."""
    page = client.get(path)
    assert page.status_code == 200, path
    return client.post(path, data={**data, "csrf_token": token_of(page.data)})


def count(model) -> int:
    return db.session.execute(select(func.count()).select_from(model)).scalar()


def admin_rules(app) -> list:
    return [r for r in app.url_map.iter_rules() if r.rule.startswith("/admin") and "static" not in r.endpoint]


@pytest.fixture
def staff(app, client, make):
    """A support user signed in with their second factor."""
    user = make.user(support=True)
    db.session.commit()
    Auth(client).login(user)
    return user


# ------------------------------------------------------------------ who gets in


def test_every_admin_view_uses_the_secured_base(app):
    admin = app.extensions["admin"][0]
    views = [admin.index_view, *admin._views]
    assert len(views) > 6
    for view in views:
        assert isinstance(view, (SecureIndexView, SecureModelView, SecureBaseView)), type(view).__name__
        if isinstance(view, SecureModelView):
            assert view.form_base_class.__name__ == "AdminForm"


def test_anonymous_is_sent_to_sign_in_with_a_safe_next(app, client, make):
    resp = client.get("/admin/users/?page=2")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/login?next=/admin/users/?page%3D2"
    user = make.user(support=True)
    db.session.commit()
    client.post(resp.headers["Location"], data={"email": user.email, "password": PASSWORD})
    from tests.conftest import fresh_totp_code

    done = client.post("/login/totp", data={"code": fresh_totp_code(user)})
    assert done.headers["Location"] == "/admin/users/?page=2"


def test_every_admin_url_is_404_for_a_signed_in_non_support_user(app, client, make, auth):
    user = make.user(Role.school_admin, make.school(), totp=True)
    db.session.commit()
    auth.login(user)
    rules = admin_rules(app)
    assert len(rules) > 40
    for rule in rules:
        url = rule.rule.replace("<export_type>", "csv")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert client.open(url, method=method).status_code == 404, (method, url)


def test_support_without_a_second_factor_in_this_session_cannot_enter(app, client, make, auth):
    user = make.user(Role.school_admin, make.school())
    db.session.commit()
    auth.login(user)  # password only: no TOTP on this account
    # Made support staff while signed in (e.g. directly in the database): the session has no second factor.
    db.session.execute(text("UPDATE users SET is_support = :t WHERE id = :id"), {"t": True, "id": user.id})
    db.session.commit()
    db.session.expire_all()
    assert client.get("/home").status_code == 200
    assert client.get("/admin/").status_code == 404
    assert client.get("/admin/users/").status_code == 404


def test_support_with_second_factor_enters(staff, client):
    page = client.get("/admin/")
    assert page.status_code == 200 and b"Portal support" in page.data


# ------------------------------------------------------------------ CSRF


def test_admin_forms_carry_and_need_a_csrf_token(staff, client):
    before = count(Organisation)
    refused = client.post("/admin/organisations/new/", data={"kind": "trust", "name": "No Token Trust"})
    assert refused.status_code == 200 and b"The form expired or was sent from elsewhere" in refused.data
    assert count(Organisation) == before
    made = post_form(client, "/admin/organisations/new/", {"kind": "trust", "name": "Token Trust"})
    assert made.status_code == 302
    assert count(Organisation) == before + 1


def test_admin_post_without_token_is_refused_when_csrf_is_on(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        from tests import factories
        from tests.conftest import fresh_totp_code

        user = factories.user(support=True)
        db.session.commit()
        client = app.test_client()
        client.post("/login", data={"email": user.email, "password": PASSWORD, "csrf_token": token_of(client.get("/login").data)})
        page = client.get("/login/totp")
        client.post("/login/totp", data={"code": fresh_totp_code(user), "csrf_token": token_of(page.data)})
        assert client.get("/admin/").status_code == 200
        before = count(Organisation)
        resp = client.post("/admin/organisations/new/", data={"kind": "trust", "name": "Forged Trust"})
        assert b"The form expired or was sent from elsewhere" in resp.data
        assert count(Organisation) == before
        assert post_form(client, "/admin/organisations/new/", {"kind": "trust", "name": "Real Trust"}).status_code == 302
        assert count(Organisation) == before + 1


# ------------------------------------------------------------------ secrets


def test_secrets_never_appear_in_any_admin_page(app, staff, client, make):
    school = make.school()
    user = make.user(Role.school_admin, school, totp=True)
    user.session_token = "sentinel-session-token-9b2e"
    conn = Connection(school_id=school.id, connector="fake", settings_encrypted=json.dumps({"token": SECRET_SETTING}))
    db.session.add(conn)
    db.session.commit()
    raw = db.session.execute(text("SELECT settings_encrypted FROM connections WHERE id = :id"), {"id": conn.id}).scalar()
    staff_row = db.session.get(User, staff.id)
    secrets = {
        SECRET_SETTING,
        raw,
        user.password_hash,
        user.totp_secret,
        user.session_token,
        staff_row.totp_secret,
        staff_row.session_token,
        staff_row.password_hash,
    }
    pages = []
    for rule in admin_rules(app):
        if "GET" not in rule.methods or rule.arguments or "ajax" in rule.rule:
            continue
        pages.append(rule.rule)
    for endpoint, row_id in (("users", user.id), ("users", staff.id), ("connections", conn.id), ("organisations", school.id)):
        pages += [f"/admin/{endpoint}/details/?id={row_id}", f"/admin/{endpoint}/edit/?id={row_id}"]
    pages += ["/admin/users/export/csv/", "/admin/connections/export/csv/", "/admin/users/?search=" + user.email]
    shown = 0
    for path in pages:
        resp = client.get(path, follow_redirects=True)
        body = resp.data.decode()
        for secret in secrets:
            assert secret not in body, path
        shown += resp.status_code == 200
    assert shown > 10
    details = client.get(f"/admin/connections/details/?id={conn.id}").data.decode()
    assert "token: ••••••••" in details  # masked, but staff can see a setting exists


def test_support_sees_a_connections_plain_settings_and_never_its_secrets(app, staff, client, make):
    school = make.school()
    conn = Connection(school_id=school.id, connector="fake",
                      settings_encrypted=json.dumps({"api_key": SECRET_SETTING, "revoked": True, "unknown": "kept-hidden"}))
    db.session.add(conn)
    db.session.commit()
    for path in (f"/admin/connections/details/?id={conn.id}", "/admin/connections/"):
        body = client.get(path).data.decode()
        # Declared and not secret: shown. The secret and a setting the connector does not declare: masked.
        assert "api_key: ••••••••, revoked: True, unknown: ••••••••" in body, path
        assert SECRET_SETTING not in body and "kept-hidden" not in body


# ------------------------------------------------------------------ views and audit


def test_organisations_are_searchable_by_name_urn_and_dfe_number(staff, client, make):
    wanted = make.school("Findable")
    other = make.school("Unrelated")
    db.session.commit()
    for term in (wanted.name, wanted.urn, wanted.dfe_number):
        page = client.get("/admin/organisations/", query_string={"search": term}).data.decode()
        assert wanted.name in page and other.name not in page, term


def test_admin_changes_are_audited_without_values(staff, client, make):
    school = make.school()
    user = make.user(Role.school_viewer, school)
    db.session.commit()
    resp = post_form(
        client, f"/admin/users/edit/?id={user.id}", {"name": "Renamed Person", "email": user.email, "active": "y"}
    )
    assert resp.status_code == 302
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "admin.users.updated")).scalar_one()
    assert entry.target_id == str(user.id) and entry.actor == f"user:{staff.id}"
    assert entry.details == {"fields": ["name"]}
    assert "Renamed" not in json.dumps(entry.details)

    membership = db.session.execute(select(Membership).where(Membership.user_id == user.id)).scalar_one()
    page = client.get("/admin/memberships/")
    resp = client.post("/admin/memberships/delete/", data={"id": membership.id, "csrf_token": token_of(page.data)})
    assert resp.status_code == 302
    deleted = db.session.execute(select(AuditEntry).where(AuditEntry.action == "admin.memberships.deleted")).scalar_one()
    assert deleted.target_id == str(membership.id) and deleted.organisation_id == school.id
    # R38: the membership is removed now (no access) and kept for the sweep, not hard-deleted.
    db.session.expire_all()
    assert count(Membership) == 1
    assert db.session.get(Membership, membership.id).removed_at is not None
    removed = db.session.execute(select(AuditEntry).where(AuditEntry.action == "membership.removed")).scalar_one()
    assert removed.actor == f"user:{staff.id}"


def test_r41_support_staff_cannot_delete_an_organisation_past_the_retention_rules(staff, client, make):
    school = make.school()
    db.session.commit()
    page = client.get("/admin/organisations/")
    assert b"/admin/organisations/delete/" not in page.data
    client.post("/admin/organisations/delete/", data={"id": school.id})
    db.session.expire_all()
    assert db.session.get(Organisation, school.id) is not None


def test_new_organisation_is_audited(staff, client):
    post_form(client, "/admin/organisations/new/", {"kind": "trust", "name": "Audited Trust"})
    org = db.session.execute(select(Organisation).where(Organisation.name == "Audited Trust")).scalar_one()
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "admin.organisations.created")).scalar_one()
    assert entry.organisation_id == org.id and "name" in entry.details["fields"]


@pytest.mark.parametrize(
    ("path", "data", "message"),
    [
        ("/admin/organisations/new/", {"kind": "school", "name": "Bad URN School", "urn": "12"}, "A URN is 6 digits."),
        ("/admin/organisations/new/", {"kind": "trust", "name": "Numbered Trust", "urn": "123456"}, "Only schools have a URN"),
        ("/admin/users/new/", {"name": "Someone", "email": "not-an-address"}, "Enter a valid email address."),
        ("/admin/users/new/", {"name": "", "email": "someone@example.org"}, "Enter the name."),
    ],
)
def test_bad_admin_input_is_explained_and_changes_nothing(staff, client, path, data, message):
    before = (count(Organisation), count(User), count(AuditEntry))
    resp = post_form(client, path, data)
    assert resp.status_code == 200
    assert message in resp.data.decode()
    assert (count(Organisation), count(User), count(AuditEntry)) == before


def test_membership_role_must_fit_the_organisation(staff, client, make):
    trust = make.trust()
    user = make.user()
    db.session.commit()
    before = count(AuditEntry)
    resp = post_form(
        client, "/admin/memberships/new/", {"user": user.id, "organisation": trust.id, "role": Role.school_admin.name}
    )
    assert "is for a school, not a trust" in resp.data.decode()
    assert count(Membership) == 0 and count(AuditEntry) == before
    ok = post_form(client, "/admin/memberships/new/", {"user": user.id, "organisation": trust.id, "role": Role.trust_admin.name})
    assert ok.status_code == 302 and count(Membership) == 1


def test_duplicate_email_is_refused(staff, client, make):
    existing = make.user()
    db.session.commit()
    resp = post_form(client, "/admin/users/new/", {"name": "Copy", "email": existing.email.upper()})
    assert "Another user already has that email address." in resp.data.decode()
    assert count(User) == 2


def test_deactivating_a_user_signs_them_out(app, staff, make):
    user = make.user(Role.school_admin, make.school())
    db.session.commit()
    theirs = app.test_client()
    Auth(theirs).login(user)
    assert theirs.get("/home").status_code == 200
    staff_client = app.test_client()
    Auth(staff_client).login(staff)
    post_form(staff_client, f"/admin/users/edit/?id={user.id}", {"name": user.name, "email": user.email})
    assert db.session.get(User, user.id).active is False
    assert theirs.get("/home").status_code == 302


def test_reset_two_factor_action(staff, client, make):
    user = make.user(Role.school_admin, make.school(), totp=True)
    db.session.commit()
    page = client.get("/admin/users/")
    resp = client.post(
        "/admin/users/action/", data={"action": "reset_totp", "rowid": [user.id], "csrf_token": token_of(page.data)}
    )
    assert resp.status_code == 302
    db.session.refresh(user)
    assert not user.totp_enabled and user.totp_secret is None
    assert db.session.execute(select(AuditEntry).where(AuditEntry.action == "admin.users.totp_reset")).scalar_one()


def test_runs_and_audit_are_read_only(staff, client):
    before = count(AuditEntry)
    assert before > 0
    first = db.session.execute(select(AuditEntry.id).order_by(AuditEntry.id)).scalar()
    assert client.get("/admin/audit/").status_code == 200
    token = token_of(client.get("/admin/organisations/new/").data)  # any admin form's token is valid for the session
    client.post("/admin/audit/delete/", data={"id": first, "csrf_token": token})
    client.post("/admin/audit/new/", data={"action": "forged", "actor": "x", "csrf_token": token})
    client.post("/admin/audit/edit/?id=%d" % first, data={"action": "forged", "csrf_token": token})
    assert count(AuditEntry) == before
    assert db.session.get(AuditEntry, first).action != "forged"
    assert client.get("/admin/runs/").status_code == 200
    assert client.get("/admin/runs/new/").status_code == 302


def test_connection_state_is_not_editable_in_admin(staff, client, make):
    school = make.school()
    conn = Connection(school_id=school.id, connector="fake")
    db.session.add(conn)
    db.session.commit()
    page = client.get(f"/admin/connections/edit/?id={conn.id}").data.decode()
    assert 'name="paused"' in page
    assert 'name="state"' not in page and 'name="settings_encrypted"' not in page


def test_organisation_kinds_are_offered(staff, client):
    page = client.get("/admin/organisations/new/").data.decode()
    for kind in OrgKind:
        assert kind.name in page


def test_a_statutory_high_age_out_of_range_or_on_a_trust_is_refused_with_its_reason(staff, client):
    # The browser refuses an out-of-range age before sending it; the server refuses it too, with the reason.
    before = count(Organisation)
    wrong = post_form(client, "/admin/organisations/new/", {"kind": "school", "name": "Aged School", "statutory_high_age": "30"})
    assert wrong.status_code == 200 and b"between 4 and 19" in wrong.data
    trust = post_form(client, "/admin/organisations/new/", {"kind": "trust", "name": "Aged Trust", "statutory_high_age": "16"})
    assert trust.status_code == 200 and b"Only schools have a URN, DfE number or statutory high age." in trust.data
    assert count(Organisation) == before
    made = post_form(client, "/admin/organisations/new/", {"kind": "school", "name": "Aged School", "statutory_high_age": "16"})
    assert made.status_code == 302
    assert db.session.execute(select(Organisation.statutory_high_age).where(Organisation.name == "Aged School")).scalar_one() == 16
