"""Deletions reach the products (R42): per-product deletion feed, acknowledgement, overdue on both dashboards."""
from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import select

from portal import deletions
from portal.api import authorisations
from portal.connectors import AttendanceMarkRecord, StaffRecord
from portal.extensions import db
from portal.lifecycle import revoke
from portal.models import AuditEntry, Organisation, Role
from portal.models.deletions import DeletionNotice, ProductReceipt
from portal.models.mis import MisAttendanceMark, MisPupil
from portal.privacy import actions, register
from portal.retention.sweep import run_sweep
from tests import api_support as s
from tests.conftest import Auth
from tests.test_retention import exists, world, zero_window_app  # noqa: F401  (fixtures)

FEATURE = "attendance_reporting"  # reads pupils and attendance, including leavers (no on-roll limit)


def _ids(client, token, school_id, record_type="pupils", category="student_basic") -> set[int]:
    body = s.get(client, token, s.records_path(FEATURE, school_id, category, record_type), limit=10000).json
    return {r["id"] for r in body["records"]}


def _feed(client, token, **params) -> list[dict]:
    resp = s.get(client, token, "/deletions", **params)
    assert resp.status_code == 200, resp.json
    return resp.json["notices"]


def _ack(client, token, ids):
    return client.post("/api/v1/deletions/ack", json={"ids": ids}, headers={"Authorization": f"Bearer {token}"})


def _mails(app) -> list[str]:
    outbox = Path(app.instance_path) / "mail"
    return sorted(p.read_text() for p in outbox.glob("*.eml")) if outbox.exists() else []


def test_r42_after_the_sweep_deletes_p_the_product_that_read_p_is_told_and_the_one_that_never_did_is_not(
        zero_window_app, world, make):
    app = zero_window_app
    client = app.test_client()
    conn = world.school()
    school = db.session.get(Organisation, conn.school_id)
    a, c = s.product(FEATURE, name="Reader A"), s.product(FEATURE, name="Never-read C")
    for p in (a, c):
        authorisations.authorise_product(school, p, None)
    stays = world.pupil(conn, year="3", extracted=date(2025, 10, 1))
    db.session.commit()
    token_a, token_c = s.token_for(a), s.token_for(c)
    stays_id = stays.id
    # C reads the school before P arrives, so it never receives P.
    assert _ids(client, token_c, school.id) == {stays_id}
    p = world.pupil(conn, year="3", extracted=date(2025, 1, 10), leaving=date(2025, 7, 22))  # deadline 2026-01-22
    db.session.commit()
    p_id = p.id
    assert p_id in _ids(client, token_a, school.id)
    assert _ids(client, token_a, school.id, "attendance_marks", "student_attendance_exclusions")

    run_sweep(as_of=date(2026, 1, 22))
    assert not exists(MisPupil, p_id) and exists(MisPupil, stays_id)

    [notice] = _feed(client, token_a)
    assert (notice["record_type"], notice["record_id"], notice["scope"], notice["school_id"]) == ("pupils", p_id, "subject", school.id)
    assert (notice["reason"], notice["rule"], notice["acknowledged_at"]) == ("retention_rule", "R29", None)
    assert _feed(client, token_c) == [] and _feed(client, token_c, status="all") == []
    # The notice holds ids only; what A received about P is no longer recorded.
    assert db.session.execute(select(ProductReceipt).where(ProductReceipt.subject_id == p_id,
                                                           ProductReceipt.record_type == "pupils")).first() is None

    # Day 7: the unacknowledged notice appears on the support operations page and on the school's page.
    stored = db.session.get(DeletionNotice, notice["id"])
    stored.created_at -= timedelta(days=deletions.ACK_DAYS)
    staff = make.user(support=True)
    viewer = make.user(Role.school_viewer, school)
    db.session.commit()
    Auth(client).login(staff)
    ops = client.get("/admin/operations/").get_data(as_text=True)
    assert 'data-testid="overdue-deletions"' in ops and f'data-product-id="{a.id}"' in ops
    assert f'data-product-id="{c.id}"' not in ops
    Auth(client).logout()
    school_client = app.test_client()
    Auth(school_client).login(viewer)
    page = school_client.get(f"/schools/{school.id}/data-use").get_data(as_text=True)
    assert "Deletions not yet confirmed" in page and "Reader A" in page.split("Deletions not yet confirmed")[1]

    # The alert goes once for the batch, to the school and to support staff.
    admin = make.user(Role.school_admin, school)
    db.session.commit()
    assert deletions.send_overdue_alerts() == {"batches": 1, "emails": 2}
    mails = [m for m in _mails(app) if "Deletions not confirmed: Reader A" in m]
    assert len(mails) == 2 and any(admin.email in m for m in mails) and any(staff.email in m for m in mails)
    assert deletions.send_overdue_alerts() == {"batches": 0, "emails": 0}

    # Acknowledging clears it from both dashboards.
    assert _ack(client, token_a, [notice["id"]]).json == {"acknowledged": 1, "already_acknowledged": 0}
    assert deletions.overdue_summary() == []
    history = school_client.get(f"/schools/{school.id}/history").get_data(as_text=True)
    assert "Products told to delete their copies" in history and "A product confirmed it deleted its copies" in history
    page = school_client.get(f"/schools/{school.id}/data-use").get_data(as_text=True)
    assert "Deletions not yet confirmed" not in page
    assert _feed(client, token_a) == [] and len(_feed(client, token_a, status="all")) == 1


def test_r42_the_overdue_boundary_is_exactly_seven_days(app, make):
    product = s.product(FEATURE)
    school, _ = s.connected_school(make, product)
    notice = DeletionNotice(product_id=product.id, school_id=school.id, record_type="pupils", category="student_basic",
                            record_id=7, scope="subject", reason="erasure")
    db.session.add(notice)
    db.session.commit()
    published = notice.created_at
    assert deletions.overdue_summary(now=published + timedelta(days=7) - timedelta(seconds=1)) == []
    assert deletions.send_overdue_alerts(now=published + timedelta(days=7) - timedelta(seconds=1))["batches"] == 0
    [overdue] = deletions.overdue_summary(now=published + timedelta(days=7))
    assert (overdue.school_id, overdue.product_id, overdue.count) == (school.id, product.id, 1)
    assert overdue_ids(school.id, published + timedelta(days=7)) == [product.id]
    assert overdue_ids(school.id + 1000, published + timedelta(days=7)) == []


def overdue_ids(school_id, now):
    return [o.product_id for o in deletions.overdue_summary(school_id, now=now)]


def test_r42_erasure_publishes_to_the_readers_of_the_pupil_and_of_the_staff_member(app, client, make):
    reader, other = s.product("pupil_tracking", "user_provisioning", name="Reader"), s.product(FEATURE, name="Other")
    school, connection = s.connected_school(make, reader, other)
    s.write(connection, s.pupils(3))
    s.write(connection, [AttendanceMarkRecord(external_id=f"m{i}", pupil_external_id="p1", session_date=date(2025, 9, 8),
                                              session="AM" if i else "PM", code="/") for i in range(2)])
    s.write(connection, [StaffRecord(external_id="s1", forename="Sam", roles=("teacher",))])
    token, other_token = s.token_for(reader), s.token_for(other)
    pupil_ids = {r["external_id"]: r["id"] for r in s.get(client, token, s.records_path(
        "pupil_tracking", school.id, "student_basic", "pupils")).json["records"]}
    [staff] = s.get(client, token, s.records_path("user_provisioning", school.id, "staff_basic", "staff")).json["records"]
    # The other product reads only p1's attendance: it received p1 through its marks' pupil_id.
    marks = s.get(client, other_token, s.records_path(FEATURE, school.id, "student_attendance_exclusions",
                                                      "attendance_marks")).json["records"]
    assert {m["fields"]["pupil_id"] for m in marks} == {pupil_ids["p1"]}

    admin = make.user(Role.school_admin, school)
    for kind, subject in (("pupil", "p1"), ("staff", "s1")):
        req = register.create(user=admin, request_type="erasure", received_on=date.today(), channel="email",
                              requester_kind="parent_carer" if kind == "pupil" else "subject", relationship="mother",
                              subject_type=kind, school=school, subject_external_id=subject)
        register.verify_identity(req, admin, "known_to_school")
        actions.erase(req, admin)
        db.session.commit()

    mine = {(n["record_type"], n["record_id"], n["scope"], n["reason"]) for n in _feed(client, token)}
    assert mine == {("pupils", pupil_ids["p1"], "subject", "erasure"), ("staff", staff["id"], "record", "erasure")}
    assert {(n["record_type"], n["record_id"]) for n in _feed(client, other_token)} == {("pupils", pupil_ids["p1"])}
    actions_logged = set(db.session.execute(select(AuditEntry.action)).scalars())
    assert {"deletions.published", "api.deletions_listed"} <= actions_logged


def test_r42_revocation_with_deletion_now_and_an_ended_authorisation_publish(app, client, make):
    kept, ended = s.product(FEATURE, name="Kept"), s.product(FEATURE, name="Ended")
    school, connection = s.connected_school(make, kept, ended)
    s.write(connection, s.pupils(2))
    token_kept, token_ended = s.token_for(kept), s.token_for(ended)
    read = _ids(client, token_kept, school.id)
    assert _ids(client, token_ended, school.id) == read and len(read) == 2

    # The school ends one product's authorisation: every id it received is published to it alone.
    authorisations.revoke_product(school, ended, None)
    db.session.commit()
    assert {(n["record_id"], n["reason"]) for n in _feed(client, token_ended)} == {(i, "authorisation_ended") for i in read}
    assert _feed(client, token_kept) == []

    # The school revokes the connection and asks for deletion at once: the next sweep deletes and publishes.
    admin = make.user(Role.school_admin, school, totp=True)
    db.session.commit()
    revoke(connection, admin, delete_now=True)
    run_sweep()
    assert {(n["record_id"], n["reason"], n["rule"]) for n in _feed(client, token_kept)} == {(i, "revocation", "R32-now") for i in read}


def test_r42_a_product_cannot_see_or_acknowledge_another_products_notices(app, client, make):
    a, b = s.product(FEATURE, name="A"), s.product(FEATURE, name="B")
    school, connection = s.connected_school(make, a, b)
    s.write(connection, s.pupils(1))
    token_a, token_b = s.token_for(a), s.token_for(b)
    _ids(client, token_a, school.id)
    authorisations.revoke_product(school, a, None)
    db.session.commit()
    [notice] = _feed(client, token_a)
    # A's authorisation has ended: its record reads are refused (403), its deletion feed still answers.
    refused_read = s.get(client, token_a, s.records_path(FEATURE, school.id, "student_basic", "pupils"))
    assert refused_read.status_code == 403 and refused_read.json["error"]["code"] == "school_not_authorised"
    assert _feed(client, token_b, status="all") == []
    refused = _ack(client, token_b, [notice["id"]])
    assert refused.status_code == 422
    assert refused.json["error"]["code"] == "unknown_notice" and refused.json["error"]["ids"] == [notice["id"]]
    assert _feed(client, token_a)[0]["acknowledged_at"] is None
    # Acknowledging is idempotent.
    assert _ack(client, token_a, [notice["id"]]).json == {"acknowledged": 1, "already_acknowledged": 0}
    assert _ack(client, token_a, [notice["id"], notice["id"]]).json == {"acknowledged": 0, "already_acknowledged": 1}


def test_r42_deletion_feed_errors_are_json_with_stable_codes(app, client, make):
    a = s.product(FEATURE)
    s.connected_school(make, a)
    token = s.token_for(a)
    assert s.get(client, None, "/deletions").json["error"]["code"] == "unauthenticated"
    unauth = client.post("/api/v1/deletions/ack", json={"ids": [1]})
    assert unauth.status_code == 401 and unauth.json["error"]["code"] == "unauthenticated"
    assert _ack(client, "mpa_not-a-token", [1]).json["error"]["code"] == "invalid_credential"
    for body in ({"ids": []}, {"ids": ["1"]}, {"ids": [True]}, {"ids": [0]}, {"id": [1]}, [1], {"ids": [1], "x": 1}):
        resp = client.post("/api/v1/deletions/ack", json=body, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 422 and resp.json["error"]["code"] == "invalid_body", body
    not_json = client.post("/api/v1/deletions/ack", data="ids=1", headers={"Authorization": f"Bearer {token}"})
    assert not_json.status_code == 422 and not_json.json["error"]["code"] == "invalid_body"
    assert s.get(client, token, "/deletions", status="done").json["error"] == {
        "code": "invalid_parameter", "message": "status must be pending or all.", "parameter": "status"}
    assert s.get(client, token, "/deletions", limit=1001).status_code == 400
    assert s.get(client, token, "/deletions", cursor="forged").json["error"]["code"] == "invalid_cursor"
    assert client.get("/api/v1/deletions/ack", headers={"Authorization": f"Bearer {token}"}).json["error"]["code"] == "method_not_allowed"


def test_r42_the_feed_pages_with_a_cursor(app, client, make):
    a = s.product(FEATURE)
    school, connection = s.connected_school(make, a)
    s.write(connection, s.pupils(5))
    token = s.token_for(a)
    received = _ids(client, token, school.id)
    authorisations.revoke_product(school, a, None)
    db.session.commit()
    seen, cursor = [], None
    while True:
        body = s.get(client, token, "/deletions", limit=2, **({"cursor": cursor} if cursor else {})).json
        seen += [n["record_id"] for n in body["notices"]]
        cursor = body["next_cursor"]
        if not body["has_more"]:
            break
    assert sorted(seen) == sorted(received) and len(seen) == 5
    assert s.get(client, token, "/deletions", cursor=cursor).json["notices"] == []


def test_r42_a_record_the_sweep_removes_alone_goes_to_the_products_that_received_that_type_about_the_pupil(
        zero_window_app, world):
    client = zero_window_app.test_client()
    conn = world.school()
    school = db.session.get(Organisation, conn.school_id)
    marks_reader, pupils_only = s.product(FEATURE, name="Marks reader"), s.product(FEATURE, name="Pupils only")
    for p in (marks_reader, pupils_only):
        authorisations.authorise_product(school, p, None)
    stays = world.pupil(conn, year="3", extracted=date(2025, 10, 1))
    tomb_id = world.mark(stays, deleted=date(2026, 1, 15)).id  # deleted upstream: removed 7 days later (TOMB)
    db.session.commit()
    marks_token, pupils_token = s.token_for(marks_reader), s.token_for(pupils_only)
    assert _ids(client, marks_token, school.id, "attendance_marks", "student_attendance_exclusions")
    assert _ids(client, pupils_token, school.id) == {stays.id}

    run_sweep(as_of=date(2026, 1, 22))
    assert not exists(MisAttendanceMark, tomb_id) and exists(MisPupil, stays.id)
    assert [(n["record_type"], n["record_id"], n["scope"], n["reason"], n["rule"]) for n in _feed(client, marks_token)] == [
        ("attendance_marks", tomb_id, "record", "tombstone_removed", "TOMB")]
    assert _feed(client, pupils_token) == []


def test_r42_acknowledging_needs_the_bearer_credential_and_no_csrf_token(make_app, make):
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        a = s.product(FEATURE)
        school, connection = s.connected_school(make, a)
        s.write(connection, s.pupils(1))
        token = s.token_for(a)
        client = app.test_client()
        assert len(_ids(client, token, school.id)) == 1
        authorisations.revoke_product(school, a, None)
        db.session.commit()
        [notice] = _feed(client, token)
        assert _ack(client, token, [notice["id"]]).json == {"acknowledged": 1, "already_acknowledged": 0}
