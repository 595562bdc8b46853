"""Run history (with chart and plain-English failures), live progress, data use (R8, R22), trust and LA views (R54–R56)."""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

from portal.clock import LONDON, london_date
from portal.extensions import db
from portal.models import ErrorKind, Feature, Product, Role, RunStatus, SubscriptionRoute
from tests.school import helpers
from tests.school.helpers import counts


def _admin(make):
    school = make.school()
    admin = make.user(Role.school_admin, school)
    return school, admin


def test_run_history_shows_status_counts_and_what_happens_next(app, client, make, auth):
    school, admin = _admin(make)
    conn = helpers.connection(school)
    ok = helpers.run(conn, ago=timedelta(days=2), categories={"student_basic": counts(inserted=250, updated=3)})
    failed = helpers.run(conn, RunStatus.failed, ago=timedelta(days=1), error=(
        ErrorKind.provider_problem, "bad_response", "The provider answered with something we could not read."))
    temp = helpers.run(conn, RunStatus.failed, ago=timedelta(hours=3), error=(
        ErrorKind.temporary, "provider_unavailable", "The provider did not answer."))
    db.session.commit()
    auth.login(admin)
    page = client.get(f"/schools/{school.id}/runs").get_data(as_text=True)
    assert f'data-run-id="{ok.id}"' in page and "253" in page
    assert "The provider has a problem" in page and "the next scheduled extract will try again" in page
    assert "Temporary problem" in page and "retry automatically" in page
    assert '<svg class="chart" id="chart-records"' in page and "chart__bar--failed" in page
    detail = client.get(f"/schools/{school.id}/runs/{ok.id}").get_data(as_text=True)
    assert 'data-category="student_basic"' in detail and ">250<" in detail
    assert client.get(f"/schools/{school.id}/runs/{failed.id}").status_code == 200
    assert f'data-run-id="{temp.id}"' in page


def test_run_progress_json_reports_live_counts(app, client, make, auth):
    school, admin = _admin(make)
    conn = helpers.connection(school)
    running = helpers.run(conn, RunStatus.running, categories={"student_basic": counts(inserted=40)})
    db.session.commit()
    auth.login(admin)
    data = client.get(f"/schools/{school.id}/runs/{running.id}/progress.json").json
    assert data["status"] == "running" and data["records"] == 40 and data["finished"] is False
    running.stats = {"categories": {"student_basic": counts(inserted=90)}}
    db.session.commit()
    assert client.get(f"/schools/{school.id}/runs/{running.id}/progress.json").json["records"] == 90


def test_runs_of_another_school_are_not_found(app, client, make, auth):
    school, admin = _admin(make)
    other = make.school()
    run = helpers.run(helpers.connection(other))
    db.session.commit()
    auth.login(admin)
    assert client.get(f"/schools/{school.id}/runs/{run.id}").status_code == 404
    assert client.get(f"/schools/{other.id}/runs").status_code == 404
    assert client.get(f"/schools/{school.id}/runs/{run.id}/progress.json").status_code == 404


def test_r8_data_use_shows_products_features_categories_and_freshness(app, client, make, auth):
    from portal.api.authorisations import authorise_product

    school, admin = _admin(make)
    conn = helpers.connection(school)
    # Finished at midday three London days ago, whatever the time now: two whole days missed since (R22).
    # (Three days back from now crossed midnight when the test ran in the minute and a half before it.)
    now = datetime.now(timezone.utc)
    midday = datetime.combine(london_date(now) - timedelta(days=3), time(12), tzinfo=LONDON)
    helpers.run(conn, ago=now - midday, categories={"student_attendance_exclusions": counts(inserted=10)})
    product = Product(name="Attendance tracker", purpose="Attendance reporting")
    product.features.append(db.session.get(Feature, "attendance_reporting"))
    db.session.add(product)
    db.session.flush()
    authorise_product(school, product, admin)
    db.session.commit()
    auth.login(admin)
    page = client.get(f"/schools/{school.id}/data-use").get_data(as_text=True)
    assert "Attendance tracker" in page and admin.name in page
    used = {cid for cid in ("student_basic", "student_demographics", "student_attendance_exclusions")}
    for cid in ("student_basic", "student_demographics", "student_attendance_exclusions", "student_timetable", "student_assessment", "staff_basic"):
        row = page[page.index(f'data-category="{cid}"'):]
        row = row[: row.index("</tr>")]
        assert ("Not used" not in row) == (cid in used), cid
    attendance = page[page.index('data-category="student_attendance_exclusions"'):]
    attendance = attendance[: attendance.index("</tr>")]
    assert "As of" in attendance and 'data-missed="2"' in attendance
    assert "Special category" in page
    assert 'data-last-read="student_basic">not read yet' in page
    # A product read through the API shows as "last read" for that category only (R8).
    from portal import audit

    audit.record("api.read", organisation_id=school.id, target_type="products", target_id=product.id,
                 actor=f"product:{product.id}", details={"feature": "attendance_reporting",
                                                          "category": "student_basic", "count": 3})
    db.session.commit()
    page = client.get(f"/schools/{school.id}/data-use").get_data(as_text=True)
    assert 'data-last-read="student_basic">last read' in page
    assert 'data-last-read="student_attendance_exclusions">not read yet' in page
    statement = client.get(f"/schools/{school.id}/data-use/statement").get_data(as_text=True)
    assert "Attendance tracker" in statement and "data controller" in statement


def test_trust_admin_sees_the_trust_schools_and_not_a_third(app, client, make, auth):
    trust = make.trust()
    a, b = make.school("Alpha", trust=trust), make.school("Beta", trust=trust)
    c = make.school("Gamma")
    admin = make.user(Role.trust_admin, trust)
    helpers.run(helpers.connection(a), categories={"student_basic": counts(inserted=5)})
    helpers.run(helpers.connection(c), categories={"student_basic": counts(inserted=7)})
    db.session.commit()
    auth.login(admin)
    home = client.get("/home").get_data(as_text=True)
    assert a.name in home and b.name in home and c.name not in home
    runs = client.get("/runs").get_data(as_text=True)
    assert a.name in runs and c.name not in runs
    assert client.get(f"/schools/{c.id}/connections").status_code == 404
    assert client.get(f"/schools/{b.id}/terms").status_code == 200  # a trust admin may authorise for its academies


def test_la_officer_sees_only_schools_subscribed_through_the_la(app, client, make, auth):
    la = make.local_authority()
    via_la = make.school("Via LA", la=la, route=SubscriptionRoute.local_authority)
    direct = make.school("Direct", la=la, route=SubscriptionRoute.direct)
    officer = make.user(Role.la_officer, la)
    db.session.commit()
    auth.login(officer)
    home = client.get("/home").get_data(as_text=True)
    assert via_la.name in home and direct.name not in home
    assert client.get(f"/schools/{direct.id}/runs").status_code == 404
    page = client.get(f"/schools/{via_la.id}/connections").get_data(as_text=True)
    assert "Authorise" not in page


def test_home_is_paged_for_many_schools(app, client, make, auth):
    trust = make.trust()
    for n in range(55):
        make.school(f"School {n:02d}", trust=trust)
    admin = make.user(Role.trust_admin, trust)
    db.session.commit()
    auth.login(admin)
    first = client.get("/home").get_data(as_text=True)
    assert "Page 1 of 2" in first and first.count("data-school-id=") == 50
    second = client.get("/home?page=2").get_data(as_text=True)
    assert second.count("data-school-id=") == 5
    assert client.get("/home?page=abc").status_code == 200


def test_history_is_visible_to_a_school_viewer(app, client, make, auth):
    school, admin = _admin(make)
    viewer = make.user(Role.school_viewer, school)
    db.session.commit()
    from portal import lifecycle

    lifecycle.accept_terms(school, admin, "2025-09")
    auth.login(viewer)
    page = client.get(f"/schools/{school.id}/history").get_data(as_text=True)
    assert "Terms accepted" in page and admin.name in page


def test_data_use_shows_records_held_per_category_from_the_store(app, client, make, auth):
    from portal import store
    from portal.connectors import PupilRecord, StaffRecord

    school, admin = _admin(make)
    conn = helpers.connection(school)
    run = helpers.run(conn, categories={"student_basic": counts(inserted=3), "staff_basic": counts(inserted=1)})
    db.session.commit()
    writer = store.Writer(conn, run.id, full=False, batch_size=100)
    for n in range(3):
        writer.add(PupilRecord(external_id=f"P{n}", legal_surname="Example"))
    writer.add(StaffRecord(external_id="S1", surname="Teacher"))
    writer.flush()
    db.session.commit()
    auth.login(admin)
    page = client.get(f"/schools/{school.id}/data-use").get_data(as_text=True)
    basic = page[page.index('data-category="student_basic"'):]
    assert '<td class="numeric">3</td>' in basic[: basic.index("</tr>")]
    staff = page[page.index('data-category="staff_basic"'):]
    assert '<td class="numeric">1</td>' in staff[: staff.index("</tr>")]


def _statements(client, url):
    from sqlalchemy import event

    seen = []

    def count(*_args):
        seen.append(1)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        assert client.get(url).status_code == 200
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    return len(seen)


def test_list_pages_use_the_same_number_of_queries_for_more_schools(app, client, make, auth):
    trust = make.trust()
    admin = make.user(Role.trust_admin, trust)

    def add_schools(n):
        for _ in range(n):
            school = make.school(trust=trust)
            helpers.run(helpers.connection(school), categories={"student_basic": counts(inserted=1)})
        db.session.commit()

    add_schools(2)
    auth.login(admin)
    few = {url: _statements(client, url) for url in ("/home", "/runs")}
    add_schools(12)
    many = {url: _statements(client, url) for url in ("/home", "/runs")}
    assert many == few
