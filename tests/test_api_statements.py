"""Art. 30 record of processing and per-school data-use statements, built from the live grants; admin views for the API."""
from __future__ import annotations

import csv
import io
import re

from sqlalchemy import select

from portal.extensions import db
from portal.models import ApiCredential, Role
from tests import api_support as s


def _csv(resp) -> list[dict]:
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))


def test_art30_record_lists_every_granted_pair_of_registered_products(app, client, make, auth):
    p = s.product("attendance_reporting", "user_provisioning", name="Attendance and Login")
    s.connected_school(make, p)
    staff = make.user(support=True)
    db.session.commit()
    auth.login(staff)
    html = client.get("/data-use/record-of-processing")
    assert html.status_code == 200
    assert b"Article 30" in html.data and b"Attendance and Login" in html.data
    rows = _csv(client.get("/data-use/record-of-processing.csv"))
    granted = {f["id"]: set(f["categories"]) for f in s.matrix()["features"]}
    expected = {(f, c) for f in ("attendance_reporting", "user_provisioning") for c in granted[f]}
    assert {(r["feature_id"], r["category_id"]) for r in rows} == expected
    demographics = next(r for r in rows if r["category_id"] == "student_demographics")
    assert demographics["special_category_basis"].startswith("UK GDPR Art. 9(2)(g)")
    assert set(demographics["special_category_fields"].split(", ")) == {"sen", "first_language", "eal", "ethnicity"}
    assert {r["schools_authorising"] for r in rows} == {"1"}
    assert next(r for r in rows if r["category_id"] == "staff_basic")["data_subjects"] == "School staff"


def test_art30_record_is_for_support_staff_only(app, client, make, auth):
    school = make.school()
    admin = make.user(Role.school_admin, school, totp=True)
    db.session.commit()
    auth.login(admin)
    assert client.get("/data-use/record-of-processing").status_code == 404
    assert client.get("/data-use/record-of-processing.csv").status_code == 404


def test_a_school_downloads_its_own_statement_from_its_live_grants(app, client, make, auth):
    attendance = s.product("attendance_reporting", name="Attendance")
    tracking = s.product("pupil_tracking", name="Tracking")
    school, _ = s.connected_school(make, attendance)
    other, _ = s.connected_school(make, tracking)
    viewer = make.user(Role.school_viewer, school, totp=True)
    db.session.commit()
    auth.login(viewer)
    rows = _csv(client.get(f"/schools/{school.id}/data-use/statement.csv"))
    assert {r["product"] for r in rows} == {"Attendance"}
    assert sorted(r["category_id"] for r in rows) == sorted(
        next(f["categories"] for f in s.matrix()["features"] if f["id"] == "attendance_reporting"))
    assert "schools_authorising" not in rows[0]
    html = client.get(f"/schools/{school.id}/data-use/statement.html")
    assert html.status_code == 200 and b"Attendance" in html.data and b"Tracking" not in html.data
    assert "attachment" in html.headers["Content-Disposition"]
    assert client.get(f"/schools/{other.id}/data-use/statement.csv").status_code == 404


def test_support_staff_issue_a_credential_that_is_shown_once_and_stored_hashed(app, client, make, auth):
    p = s.product("pupil_tracking", name="Tracker")
    staff = make.user(support=True)
    db.session.commit()
    auth.login(staff)
    assert client.get("/admin/products/").status_code == 200
    resp = client.post("/admin/issue_credential/", data={"product_id": p.id, "label": "Tracker live", "valid_days": "30"})
    assert resp.status_code == 200
    token = re.search(rb'data-testid="token">([^<]+)<', resp.data).group(1).decode()
    stored = db.session.execute(select(ApiCredential)).scalar_one()
    assert stored.token_hash != token and token not in client.get("/admin/api_credentials/").get_data(as_text=True)
    assert s.get(client, token, "/features/pupil_tracking/schools").status_code == 200


def test_the_admin_refuses_a_product_outside_the_uk(app, client, make, auth):
    from portal.models import Product

    staff = make.user(support=True)
    db.session.commit()
    auth.login(staff)
    form = client.get("/admin/products/new/").get_data(as_text=True)
    csrf = re.search(r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', form).group(1)
    data = {"csrf_token": csrf, "name": "Abroad", "purpose": "Analyse.", "features": ["pupil_tracking"],
            "processing_location": "IE"}
    resp = client.post("/admin/products/new/", data=data, follow_redirects=True)
    assert b"only in the UK" in resp.data
    assert db.session.execute(select(Product)).first() is None
    resp = client.post("/admin/products/new/", data={**data, "processing_location": "UK"}, follow_redirects=True)
    product = db.session.execute(select(Product)).scalar_one()
    assert product.name == "Abroad" and [f.id for f in product.features] == ["pupil_tracking"]
