"""Tenancy and scope (R54–R58): every role sees exactly its own schools, and another organisation's ids give 404."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Membership, Role, Subscription, SubscriptionRoute
from portal.models.base import utcnow
from portal.scope import Action, allowed_actions, can, school_ids

TODAY = date.today()


@pytest.fixture
def world(app, make):
    """Two LAs, two trusts and their schools, with one user per role."""
    la = make.local_authority("Northshire")
    other_la = make.local_authority("Southshire")
    trust = make.trust("North Trust")
    other_trust = make.trust("South Trust")
    w = {
        "la": la,
        "trust": trust,
        "academy": make.school("Academy", la=la, trust=trust),
        "academy2": make.school("Second Academy", la=other_la, trust=trust),
        "via_la": make.school("Via LA", la=la, route=SubscriptionRoute.local_authority),
        "direct": make.school("Direct", la=la),
        "other_la_school": make.school("Elsewhere", la=other_la, route=SubscriptionRoute.local_authority),
        "other_trust_school": make.school("Other Trust Academy", la=la, trust=other_trust),
    }
    w["school_admin"] = make.user(Role.school_admin, w["direct"])
    w["school_viewer"] = make.user(Role.school_viewer, w["direct"])
    w["trust_admin"] = make.user(Role.trust_admin, trust)
    w["la_officer"] = make.user(Role.la_officer, la)
    w["support"] = make.user(support=True)
    db.session.commit()
    return w


# Which schools each role may see (Action.view).
VISIBLE = {
    "school_admin": {"direct"},
    "school_viewer": {"direct"},
    "trust_admin": {"academy", "academy2"},
    "la_officer": {"via_la"},
    "support": {"academy", "academy2", "via_la", "direct", "other_la_school", "other_trust_school"},
}
ALL_SCHOOLS = VISIBLE["support"]
ROLES = list(VISIBLE)


def school_routes(app) -> list[tuple[str, str]]:
    """Every page route (not the product API, not admin) that takes a school id, with its methods."""
    out = []
    for rule in app.url_map.iter_rules():
        if "school_id" not in rule.arguments or rule.rule.startswith(("/api/", "/admin")):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, rule.rule))
    return out


def fill(rule: str, school_id: int) -> str:
    """Build a URL for the rule: the school id given, a plausible value for any other part."""
    import re

    url = rule.replace("<int:school_id>", str(school_id))
    url = re.sub(r"<int:[a-z_]+>", "1", url)
    return re.sub(r"<(?:[a-z]+:)?[a-z_]+>", "fake", url)


@pytest.mark.parametrize("role", ROLES)
def test_home_lists_exactly_the_schools_in_scope(world, client, auth, role):
    auth.login(world[role])
    page = client.get("/home").data.decode()
    for key in ALL_SCHOOLS:
        assert (world[key].name in page) == (key in VISIBLE[role]), key


@pytest.mark.parametrize("role", ROLES)
def test_school_pages_of_schools_out_of_scope_are_404(world, app, client, auth, role):
    auth.login(world[role])
    routes = school_routes(app)
    assert ("GET", "/schools/<int:school_id>") in routes
    for key in ALL_SCHOOLS - VISIBLE[role]:
        for method, rule in routes:
            resp = client.open(fill(rule, world[key].id), method=method)
            assert resp.status_code == 404, (role, key, method, rule)
            assert world[key].name.encode() not in resp.data


def test_unknown_school_id_is_the_same_404(world, client, auth):
    auth.login(world["school_admin"])
    missing = client.get("/schools/999999")
    hidden = client.get(f"/schools/{world['academy'].id}")
    assert missing.status_code == hidden.status_code == 404
    assert missing.data == hidden.data  # nothing tells an existing school from a missing one


@pytest.mark.parametrize("role", ROLES)
def test_school_page_of_schools_in_scope_opens(world, client, auth, role):
    auth.login(world[role])
    for key in VISIBLE[role]:
        resp = client.get(f"/schools/{world[key].id}", follow_redirects=True)
        assert resp.status_code == 200, (role, key)
        assert world[key].name.encode() in resp.data


def test_anonymous_user_is_sent_to_sign_in(world, client):
    for path in ("/home", f"/schools/{world['direct'].id}"):
        resp = client.get(path)
        assert resp.status_code == 302 and resp.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("role", [r for r in ROLES if r != "support"])
def test_admin_pages_are_404_for_everyone_but_support(world, client, auth, role):
    auth.login(world[role])
    for path in ("/admin/", "/admin/users/", "/admin/organisations/", f"/admin/organisations/edit/?id={world['direct'].id}"):
        assert client.get(path).status_code == 404, path


def test_support_opens_admin_pages(world, client, auth):
    auth.login(world["support"])
    for path in ("/admin/", "/admin/users/", "/admin/organisations/"):
        assert client.get(path).status_code == 200, path


# ------------------------------------------------------------------ R55: the role × action table

FULL = set(Action)
TABLE = {
    # role: (school it acts on, actions allowed there)
    "school_admin": ("direct", FULL),
    "school_viewer": ("direct", {Action.view, Action.view_pupil_data}),
    "trust_admin": ("academy", FULL),
    "la_officer": ("via_la", {Action.view, Action.view_users}),
    "support": ("direct", {Action.view, Action.view_users}),
}


@pytest.mark.parametrize("role", ROLES)
def test_r55_role_action_table(world, role):
    key, allowed = TABLE[role]
    user = world[role]
    for action in Action:
        assert can(user, action, world[key]) == (action in allowed), (role, action)
    if role != "support":
        # Nothing at all on a school outside the role's scope.
        assert not any(can(user, action, world["other_trust_school"]) for action in Action)


def test_r55_table_is_the_documented_one():
    assert allowed_actions(Role.school_admin) == FULL
    assert allowed_actions(Role.trust_admin) == FULL
    assert allowed_actions(Role.school_viewer) == {Action.view, Action.view_pupil_data}
    assert allowed_actions(Role.la_officer) == {Action.view, Action.view_users}
    assert allowed_actions(None) == {Action.view, Action.view_users}
    assert "pupil" not in {r.value for r in Role}  # R60: pupils are never users


def test_r55_trust_admin_sees_only_the_trusts_academies(world):
    ids = set(school_ids(world["trust_admin"], Action.view_pupil_data))
    assert ids == {world["academy"].id, world["academy2"].id}


def test_r55_suspended_membership_gives_nothing(world, client, auth):
    membership = db.session.execute(select(Membership).where(Membership.user_id == world["school_admin"].id)).scalar_one()
    membership.suspended_at = utcnow()
    db.session.commit()
    assert school_ids(world["school_admin"]) == []
    auth.login(world["school_admin"])
    assert client.get(f"/schools/{world['direct'].id}").status_code == 404


# ------------------------------------------------------------------ R56: local authorities


def test_r56_la_officer_sees_users_and_status_of_school_subscribed_through_the_la(world, client, auth):
    officer, school = world["la_officer"], world["via_la"]
    assert can(officer, Action.view_users, school)
    assert can(officer, Action.view, school)
    auth.login(officer)
    assert client.get(f"/schools/{school.id}", follow_redirects=True).status_code == 200


def test_r56_directly_subscribed_school_in_the_same_la_is_404(world, client, auth):
    officer, school = world["la_officer"], world["direct"]
    assert school.local_authority_id == world["la"].id  # being the school's LA is not enough
    assert not can(officer, Action.view_users, school)
    auth.login(officer)
    assert client.get(f"/schools/{school.id}").status_code == 404


def test_r56_la_officer_never_gets_pupil_data(world):
    officer = world["la_officer"]
    assert not can(officer, Action.view_pupil_data, world["via_la"])
    assert school_ids(officer, Action.view_pupil_data) == []
    assert not any(can(officer, a, world["via_la"]) for a in Action if a not in (Action.view, Action.view_users))


def test_r56_subscription_through_another_la_gives_nothing(world):
    # other_la_school subscribed through Southshire, not the officer's Northshire.
    assert not can(world["la_officer"], Action.view_users, world["other_la_school"])


@pytest.mark.parametrize(
    "change",
    [
        {"ends_on": TODAY - timedelta(days=1)},
        {"terminated_on": TODAY - timedelta(days=1)},
        {"starts_on": TODAY + timedelta(days=1)},
        {"route": SubscriptionRoute.direct, "local_authority_id": None},
    ],
    ids=["ended", "terminated", "not-started", "now-direct"],
)
def test_r56_access_ends_when_the_la_subscription_does_not_run(world, client, auth, change):
    officer, school = world["la_officer"], world["via_la"]
    sub = db.session.execute(select(Subscription).where(Subscription.school_id == school.id)).scalar_one()
    for field, value in change.items():
        setattr(sub, field, value)
    db.session.commit()
    assert not can(officer, Action.view_users, school)
    auth.login(officer)
    assert client.get(f"/schools/{school.id}").status_code == 404
    assert school.name.encode() not in client.get("/home").data


def test_r56_subscription_still_running_on_its_last_day(world):
    sub = db.session.execute(select(Subscription).where(Subscription.school_id == world["via_la"].id)).scalar_one()
    sub.ends_on = TODAY
    db.session.commit()
    assert can(world["la_officer"], Action.view_users, world["via_la"])


# ------------------------------------------------------------------ R58: support staff


def test_r58_support_sees_status_but_no_pupil_data(world):
    support = world["support"]
    assert set(school_ids(support, Action.view)) == {world[k].id for k in ALL_SCHOOLS}
    assert school_ids(support, Action.view_pupil_data) == []
    assert not can(support, Action.authorise, world["direct"])


def test_r58_support_membership_does_not_add_pupil_data(world, make):
    support = world["support"]
    db.session.add(Membership(user_id=support.id, organisation_id=world["direct"].id, role=Role.school_viewer))
    db.session.commit()
    db.session.refresh(support)
    assert school_ids(support, Action.view_pupil_data) == []
