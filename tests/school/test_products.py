"""Products tab: schools authorise and end product authorisations through the real forms (R3, R4, R6, R7, R8, R9, R42)."""
from __future__ import annotations

import re

from sqlalchemy import func, select

from portal.api import authorisations
from portal.extensions import db
from portal.models import (
    AuditEntry,
    Connection,
    ConnectionState,
    Organisation,
    Product,
    ProductAuthorisation,
    Role,
    SubscriptionRoute,
)
from portal.models.mis import MisAssessmentResult, MisAttendanceMark, MisMembership, MisPupil, MisStaff
from portal.models.retention import DeletionOrder
from portal.retention import orders
from portal.retention.sweep import run_sweep
from portal.school import queries
from tests import api_support as s
from tests import factories
from tests.test_retention import exists, world  # noqa: F401  (fixture)

ATTENDANCE = "attendance_reporting"


def _pupils_path(school_id: int, feature: str = ATTENDANCE) -> str:
    return s.records_path(feature, school_id, "student_basic", "pupils")


def _read_ids(client, token, school_id, feature: str = ATTENDANCE) -> set[int]:
    resp = s.get(client, token, _pupils_path(school_id, feature), limit=10000)
    assert resp.status_code == 200, resp.json
    return {r["id"] for r in resp.json["records"]}


def _admin_of(org, role=Role.school_admin):
    user = factories.user(role, org)
    db.session.commit()
    return user


def _authorise(client, school, product, **data):
    return client.post(f"/schools/{school.id}/products/{product.id}/authorise", data={"confirm": "y", **data})


def _end(client, school, product, **data):
    return client.post(f"/schools/{school.id}/products/{product.id}/end", data={"confirm": "y", **data})


def _live(school, product) -> bool:
    db.session.expire_all()
    return authorisations.live_authorisation(school.id, product.id) is not None


def _section(page: str, product) -> str:
    return page.split(f'<section class="product" data-product="{product.id}"')[1].split("</section>")[0]


def _page(client, school) -> str:
    resp = client.get(f"/schools/{school.id}/products")
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


# ---------------------------------------------------------------- the tab (R8) and who may act (R1)


def test_r8_every_school_user_sees_each_product_its_features_categories_and_who_authorised(app, client, make, auth):
    attendance, tracking = s.product(ATTENDANCE, name="Attendance insight"), s.product("pupil_tracking", name="Tracker")
    school, _ = s.connected_school(make)
    admin = _admin_of(school)
    authorisations.authorise_product(school, attendance, admin)
    viewer = _admin_of(school, Role.school_viewer)
    auth.login(viewer)
    page = _page(client, school)
    attendance_section = _section(page, attendance)
    assert f'data-product="{attendance.id}" data-authorised="yes"' in page and "Authorised" in attendance_section
    assert f"by {admin.name}" in attendance_section and "<time" in attendance_section
    assert "Student attendance reporting and analysis" in attendance_section
    assert {"student_basic", "student_demographics", "student_attendance_exclusions"} == set(
        re.findall(r'<li data-category="([a-z_]+)"', attendance_section))
    tracking_section = _section(page, tracking)
    assert "Not authorised" in tracking_section and 'data-category="student_assessment"' in tracking_section
    # A viewer sees no action.
    assert "/authorise" not in page and "/end" not in page
    assert 'aria-current="page">Products' in page


def test_r1_a_viewer_gets_404_on_the_actions_and_nothing_changes(app, client, make, auth):
    authorised, other = s.product(ATTENDANCE), s.product(ATTENDANCE)
    school, _ = s.connected_school(make, authorised)
    viewer = _admin_of(school, Role.school_viewer)
    auth.login(viewer)
    assert client.get(f"/schools/{school.id}/products/{other.id}/authorise").status_code == 404
    assert _authorise(client, school, other).status_code == 404
    assert _end(client, school, authorised, deletion="now").status_code == 404
    assert _live(school, authorised) and not _live(school, other)


def test_r1_another_schools_admin_cannot_see_or_act(app, client, make, auth):
    product = s.product(ATTENDANCE)
    school, _ = s.connected_school(make, product)
    elsewhere = _admin_of(make.school())
    auth.login(elsewhere)
    assert client.get(f"/schools/{school.id}/products").status_code == 404
    assert _end(client, school, product, deletion="keep").status_code == 404
    assert _live(school, product)


def test_r1_a_trust_admin_authorises_for_an_academy_and_an_la_officer_only_looks(app, client, make, auth):
    product = s.product(ATTENDANCE)
    trust, la = make.trust(), make.local_authority()
    academy = make.school(trust=trust, la=la, route=SubscriptionRoute.local_authority)
    trust_admin, officer = _admin_of(trust, Role.trust_admin), _admin_of(la, Role.la_officer)
    auth.login(officer)
    assert "/authorise" not in _page(client, academy)
    assert _authorise(client, academy, product).status_code == 404
    auth.logout()
    auth.login(trust_admin)
    assert _authorise(client, academy, product).status_code == 302
    assert _live(academy, product)


# ---------------------------------------------------------------- authorise (R3)


def test_r3_authorising_on_the_page_lets_that_product_read_and_no_other(app, client, make, auth):
    a, b = s.product(ATTENDANCE, name="Product A"), s.product(ATTENDANCE, name="Product B")
    school, connection = s.connected_school(make)
    s.write(connection, s.pupils(2))
    admin = _admin_of(school)
    token_a, token_b = s.token_for(a), s.token_for(b)
    assert s.get(client, token_a, _pupils_path(school.id)).status_code == 403

    auth.login(admin)
    resp = _authorise(client, school, a)
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/schools/{school.id}/products")
    assert "Product A is authorised" in client.get(resp.headers["Location"]).get_data(as_text=True)
    assert len(_read_ids(client, token_a, school.id)) == 2
    refused = s.get(client, token_b, _pupils_path(school.id))
    assert refused.status_code == 403 and refused.json["error"]["code"] == "school_not_authorised"
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "product.authorised")).scalar_one()
    assert (entry.organisation_id, entry.actor_user_id, entry.details) == (school.id, admin.id, {"product_id": a.id})


def test_r3_confirmation_lists_features_and_categories_and_says_when_no_connection_is_approved(app, client, make, auth):
    product = s.product(ATTENDANCE, "user_provisioning", name="Two features")
    school, _ = s.connected_school(make, state=ConnectionState.pending)
    admin = _admin_of(school)
    auth.login(admin)
    page = client.get(f"/schools/{school.id}/products/{product.id}/authorise").get_data(as_text=True)
    assert "Student attendance reporting and analysis" in page and 'data-feature="user_provisioning"' in page
    assert {"student_basic", "student_demographics", "student_attendance_exclusions", "staff_basic"} == set(
        re.findall(r'<li data-category="([a-z_]+)"', page))
    assert 'data-testid="no-connection"' in page
    # Still allowed: the product gets data once a connection is approved.
    assert _authorise(client, school, product).status_code == 302
    assert _live(school, product)


def test_r3_authorising_without_the_tick_shows_the_error_and_authorises_nothing(app, client, make, auth):
    product = s.product(ATTENDANCE)
    school, _ = s.connected_school(make)
    auth.login(_admin_of(school))
    resp = client.post(f"/schools/{school.id}/products/{product.id}/authorise", data={})
    assert resp.status_code == 400
    body = resp.get_data(as_text=True)
    assert 'class="error-summary"' in body and "Tick the box to confirm you authorise this product." in body
    assert 'href="#confirm"' in body and body.count("<title>Error:") == 1
    assert db.session.scalar(select(func.count()).select_from(ProductAuthorisation)) == 0


def test_r3_with_csrf_on_the_product_forms_need_the_pages_token(make_app, make):
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        product = s.product(ATTENDANCE)
        school, _ = s.connected_school(make)
        admin = _admin_of(school)
        client = app.test_client()
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
        client.post("/login", data={"email": admin.email, "password": "correct horse battery staple", "csrf_token": token})
        forged = _authorise(client, school, product)
        assert forged.status_code == 400 and "The form expired or was sent from elsewhere" in forged.get_data(as_text=True)
        assert not _live(school, product)
        page = client.get(f"/schools/{school.id}/products/{product.id}/authorise").get_data(as_text=True)
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        missing_tick = client.post(f"/schools/{school.id}/products/{product.id}/authorise", data={"csrf_token": token})
        assert missing_tick.status_code == 400 and "Tick the box to confirm" in missing_tick.get_data(as_text=True)
        assert _authorise(client, school, product, csrf_token=token).status_code == 302
        assert _live(school, product)


# ---------------------------------------------------------------- end (R4, R6, R7, R42)


def test_r4_ending_on_the_page_refuses_the_next_read_at_once_audits_it_and_publishes_what_it_read(app, client, make, auth):
    ended, kept = s.product(ATTENDANCE, name="Ended"), s.product(ATTENDANCE, name="Kept")
    school, connection = s.connected_school(make, ended, kept)
    s.write(connection, s.pupils(3))
    token, token_kept = s.token_for(ended), s.token_for(kept)
    read = _read_ids(client, token, school.id)
    assert len(read) == 3
    admin = _admin_of(school)
    auth.login(admin)

    resp = _end(client, school, ended)  # both read the same categories: no deletion choice is asked
    assert resp.status_code == 302
    assert "Ended no longer has access" in client.get(resp.headers["Location"]).get_data(as_text=True)
    refused = s.get(client, token, _pupils_path(school.id))
    assert refused.status_code == 403 and refused.json["error"]["code"] == "school_not_authorised"
    audited = db.session.execute(select(AuditEntry).where(AuditEntry.action == "api.read_refused")).scalars().all()
    assert [e.details.get("code") for e in audited] == ["school_not_authorised"]
    assert _read_ids(client, token_kept, school.id) == read
    # R42: every id the ended product received is on its feed, and on no other product's.
    feed = s.get(client, token, "/deletions").json["notices"]
    assert {(n["record_id"], n["reason"]) for n in feed} >= {(i, "authorisation_ended") for i in read}
    assert s.get(client, token_kept, "/deletions").json["notices"] == []
    revoked = db.session.execute(select(AuditEntry).where(AuditEntry.action == "product.revoked")).scalar_one()
    assert (revoked.actor_user_id, revoked.details) == (admin.id, {"product_id": ended.id})


def test_r6_the_end_confirmation_names_what_stops_says_processing_stays_lawful_and_gives_the_deletion_date(
        app, client, make, auth):
    product = s.product(ATTENDANCE, name="Attendance insight")
    school, _ = s.connected_school(make, product)
    auth.login(_admin_of(school))
    page = client.get(f"/schools/{school.id}/products/{product.id}/end").get_data(as_text=True)
    stopping = page.split('data-testid="stopping-features"')[1].split("</ul>")[0]
    assert "Student attendance reporting and analysis" in stopping
    assert "Processing carried out before you end the authorisation stays lawful." in page
    due = orders.category_deletion_date(queries.today_london())
    assert due.strftime("%-d %B %Y") in page.split('data-testid="deletion-date"')[1].split("</p>")[0]
    assert 'name="deletion"' in page and 'value="now"' in page and 'value="keep"' in page


def test_r7_ending_without_a_choice_or_the_tick_shows_both_errors_and_changes_nothing(app, client, make, auth):
    product = s.product(ATTENDANCE)
    school, _ = s.connected_school(make, product)
    auth.login(_admin_of(school))
    resp = client.post(f"/schools/{school.id}/products/{product.id}/end", data={})
    body = resp.get_data(as_text=True)
    assert resp.status_code == 400 and 'class="error-summary"' in body
    assert "Choose what should happen to the data only this product needed." in body
    assert "Tick the box to confirm you want to end this product&#39;s authorisation." in body
    assert _live(school, product)
    assert db.session.scalar(select(func.count()).select_from(DeletionOrder)) == 0


def _tracking_and_attendance(make, world):  # noqa: F811
    conn = world.school()
    school = db.session.get(Organisation, conn.school_id)
    tracking, attendance = s.product("pupil_tracking", name="Tracker"), s.product(ATTENDANCE, name="Attendance")
    for p in (tracking, attendance):
        authorisations.authorise_product(school, p, None)
    pupil = world.pupil(conn, year="3", extracted=s.yesterday())  # current: no other rule deletes it today
    admin = _admin_of(school)
    return school, tracking, pupil, admin


def test_r7_delete_now_removes_only_the_categories_this_product_alone_needed_at_the_next_sweep(
        app, client, make, auth, world):  # noqa: F811
    school, tracking, pupil, admin = _tracking_and_attendance(make, world)
    auth.login(admin)
    page = client.get(f"/schools/{school.id}/products/{tracking.id}/end").get_data(as_text=True)
    only = page.split('data-testid="only-categories"')[1].split("</p>")[0]
    assert "Assessment" in only or "assessment" in only.lower()
    assert "Attendance" not in only
    assert _end(client, school, tracking, deletion="now").status_code == 302
    order = db.session.execute(select(DeletionOrder)).scalar_one()
    assert (order.categories, order.rule_id, order.due_on, order.requested_by_id) == (
        ["student_assessment", "student_timetable"], orders.REVOKE_NOW_RULE, order.trigger_on, admin.id)

    def count(model):
        return db.session.execute(select(func.count()).select_from(model)).scalar()

    run_sweep(as_of=order.due_on)
    assert (count(MisAssessmentResult), count(MisMembership)) == (0, 0)
    assert exists(MisPupil, pupil) and count(MisAttendanceMark) == 2


def test_r7_keeping_the_data_schedules_it_under_the_normal_rule(app, client, make, auth, world):  # noqa: F811
    school, tracking, _, admin = _tracking_and_attendance(make, world)
    auth.login(admin)
    assert _end(client, school, tracking, deletion="keep").status_code == 302
    order = db.session.execute(select(DeletionOrder)).scalar_one()
    assert (order.categories, order.rule_id) == (["student_assessment", "student_timetable"], orders.GRANT_RULE)
    assert order.due_on == orders.category_deletion_date(order.trigger_on) and order.due_on > order.trigger_on
    run_sweep(as_of=order.trigger_on)
    assert db.session.execute(select(func.count()).select_from(MisAssessmentResult)).scalar() == 2


def test_r4_ending_a_product_that_is_not_authorised_changes_nothing(app, client, make, auth):
    product = s.product(ATTENDANCE)
    school, _ = s.connected_school(make)
    auth.login(_admin_of(school))
    resp = _end(client, school, product, deletion="now")
    assert resp.status_code == 302
    assert "nothing to end" in client.get(resp.headers["Location"]).get_data(as_text=True)
    assert client.get(f"/schools/{school.id}/products/999999/end").status_code == 404
    assert db.session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "product.revoked")) == 0


# ---------------------------------------------------------------- history (R9)


def test_r9_history_shows_the_authorisation_and_its_end_with_user_and_time(app, client, make, auth):
    product = s.product(ATTENDANCE)
    school, _ = s.connected_school(make)
    admin = _admin_of(school)
    auth.login(admin)
    assert _authorise(client, school, product).status_code == 302
    assert _end(client, school, product, deletion="keep").status_code == 302
    page = client.get(f"/schools/{school.id}/history").get_data(as_text=True)
    rows = re.findall(r'<tr data-action="(product\.[a-z]+)"><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>', page)
    assert [(action, who) for action, _, _, who in rows] == [("product.revoked", admin.name), ("product.authorised", admin.name)]
    assert all("<time datetime=" in when for _, when, _, _ in rows)
    assert [label for _, _, label, _ in rows] == [f"Product authorisation revoked: {product.name}", f"Product authorised: {product.name}"]
    products_page = _page(client, school)
    assert "Authorisation ended" in products_page and f"by {admin.name}" in products_page


def test_r8_products_tab_on_a_school_with_no_products_says_so(app, client, make, auth):
    school = make.school()
    auth.login(_admin_of(school))
    page = _page(client, school)
    assert 'data-testid="no-products"' in page and 'data-testid="no-connection"' in page


def test_r7_authorising_again_before_the_date_keeps_the_categories_it_needs(app, client, make, auth, world):  # noqa: F811
    school, tracking, _, admin = _tracking_and_attendance(make, world)
    staff_product = s.product("user_provisioning", name="Staff logins")
    authorisations.authorise_product(school, staff_product, None)
    world.staff(db.session.execute(select(Connection).where(Connection.school_id == school.id)).scalar_one())
    db.session.commit()
    auth.login(admin)
    assert _end(client, school, tracking, deletion="keep").status_code == 302
    assert _end(client, school, staff_product, deletion="keep").status_code == 302
    first, second = db.session.execute(select(DeletionOrder).order_by(DeletionOrder.id)).scalars().all()
    assert (first.categories, second.categories) == (["student_assessment", "student_timetable"], ["staff_basic"])

    assert _authorise(client, school, tracking).status_code == 302
    db.session.expire_all()
    orders_now = db.session.execute(select(DeletionOrder).order_by(DeletionOrder.id)).scalars().all()
    assert [(o.categories, o.cancelled_at is not None) for o in orders_now] == [
        (["student_assessment", "student_timetable"], True), (["staff_basic"], False)]
    run_sweep(as_of=second.due_on)
    assert db.session.execute(select(func.count()).select_from(MisAssessmentResult)).scalar() == 2
    assert db.session.execute(select(func.count()).select_from(MisStaff)).scalar() == 0


def test_r7_authorising_again_a_product_needing_part_of_a_pending_deletion_keeps_the_rest_on_its_date(
        app, client, make, auth, world):  # noqa: F811
    school, tracking, _, admin = _tracking_and_attendance(make, world)
    attendance = db.session.execute(select(Product).where(Product.name == "Attendance")).scalar_one()
    auth.login(admin)
    assert _end(client, school, attendance).status_code == 302  # tracking still reads all its categories
    assert db.session.scalar(select(func.count()).select_from(DeletionOrder)) == 0
    assert _end(client, school, tracking, deletion="keep").status_code == 302
    whole = db.session.execute(select(DeletionOrder)).scalar_one()
    assert len(whole.categories) == 5

    assert _authorise(client, school, attendance).status_code == 302
    db.session.expire_all()
    cancelled, rest = db.session.execute(select(DeletionOrder).order_by(DeletionOrder.id)).scalars().all()
    assert cancelled.cancelled_at is not None and rest.cancelled_at is None
    assert (rest.categories, rest.rule_id, rest.trigger_on, rest.due_on) == (
        ["student_assessment", "student_timetable"], orders.GRANT_RULE, whole.trigger_on, whole.due_on)
