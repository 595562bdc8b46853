"""R74 on the school's request page: recording a pupil's written objection to special-category processing, and lifting it."""
from __future__ import annotations

import re
from datetime import date

from sqlalchemy import select, text

from portal.connectors import DemographicsRecord
from portal.extensions import db
from portal.models import AuditEntry, Connection, ConnectionState, FlagKind, Role, SubjectFlag
from portal.privacy import register
from tests import api_support as s
from tests.conftest import Auth

FEATURE = "self_evaluation_early_results"
POLICY = "DPA-APD-2025-03"
SPECIAL = ("ethnicity", "first_language", "eal", "sen_status", "sen_need")
RECORD = "object-special-category"
BUTTON = "Record written objection to special-category processing (ethnicity, language, SEN, …)"


def _setup(make):
    """A school with two connections holding p0 and p1's demographics, a product reading them, and a verified objection about p1."""
    product = s.product(FEATURE)
    school, first = s.connected_school(make, product)
    second = Connection(school_id=school.id, connector="fake2", state=ConnectionState.approved)
    db.session.add(second)
    db.session.commit()
    for connection in (first, second):
        s.write(connection, s.pupils(2))
        _demographics(connection, 2)
    admin = make.user(Role.school_admin, school)
    req = register.create(user=admin, request_type="objection", received_on=date.today(), channel="letter",
                          requester_kind="parent_carer", relationship="mother", subject_type="pupil", school=school,
                          subject_external_id="p1")
    register.verify_identity(req, admin, "known_to_school")
    db.session.commit()
    return school, first, admin, req, s.token_for(product)


def _demographics(connection, n):
    s.write(connection, [DemographicsRecord(external_id=f"p{i}", fsm=True, ethnicity="WBRI", first_language="ENG",
                                            eal=False, sen_status="K", sen_need="SLCN") for i in range(n)])


def _login(client, user):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    resp = client.post("/login", data={"email": user.email, "password": "correct horse battery staple", "csrf_token": token})
    assert resp.status_code == 302


def _page_token(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _stored(external_id: str) -> list[tuple]:
    """The special-category columns as stored on every connection (ciphertext or NULL), read past the model."""
    return [tuple(r) for r in db.session.execute(
        text(f"SELECT {', '.join(SPECIAL)} FROM mis_demographics WHERE external_id = :e ORDER BY connection_id"),
        {"e": external_id})]


def _served(client, token, school) -> dict:
    path = s.records_path(FEATURE, school.id, "student_demographics", "demographics")
    return {r["external_id"]: r for r in s.get(client, token, path, limit=1000).json["records"]}


def _active() -> list[SubjectFlag]:
    db.session.expire_all()
    return list(db.session.execute(select(SubjectFlag).where(
        SubjectFlag.kind == FlagKind.special_category_objection, SubjectFlag.lifted_at.is_(None))).scalars())


def test_r74_recording_the_objection_on_the_request_page_withholds_at_once_and_lifting_ends_it(make_app, make):
    app = make_app(WTF_CSRF_ENABLED=True, SPECIAL_CATEGORY_POLICY_DOCUMENT=POLICY)
    with app.app_context():
        school, connection, admin, req, token = _setup(make)
        client, api = app.test_client(), app.test_client()
        assert _served(api, token, school)["p1"]["fields"]["ethnicity"] == "WBRI"
        _login(client, admin)
        detail = f"/schools/{school.id}/requests/{req.id}"
        page = client.get(detail).get_data(as_text=True)
        assert BUTTON in page and 'data-testid="special-category-objection"' not in page

        # Without the form's CSRF token nothing is recorded.
        assert client.post(f"{detail}/{RECORD}").status_code == 400
        assert _active() == []

        assert client.post(f"{detail}/{RECORD}", data={"csrf_token": _page_token(page)}).status_code == 302
        page = client.get(detail).get_data(as_text=True)
        assert 'data-testid="special-category-objection"' in page and BUTTON not in page
        assert "next full extract" in page

        # The next product response withholds p1's fields; p0's are served.
        served = _served(api, token, school)
        assert served["p1"]["withheld"] == "objection" and [served["p1"]["fields"][f] for f in SPECIAL] == [None] * 5
        assert served["p1"]["fields"]["fsm"] is True
        assert served["p0"]["withheld"] is None and served["p0"]["fields"]["ethnicity"] == "WBRI"
        # The stored values are gone now, on both connections, without waiting for an extract.
        assert _stored("p1") == [(None,) * 5] * 2
        assert all(all(v is not None for v in row) for row in _stored("p0"))
        entry = db.session.execute(
            select(AuditEntry).where(AuditEntry.action == "dsr.special_category_objection")).scalar_one()
        assert entry.details["rows_nulled"] == {"student_demographics": 2} and entry.details["by"] == admin.id

        # Recording it again reuses the flag.
        assert client.post(f"{detail}/{RECORD}", data={"csrf_token": _page_token(page)}).status_code == 302
        assert len(_active()) == 1

        # Lifting ends it; the values come back when an extract brings them again.
        assert client.post(f"{detail}/lift-special-category", data={"csrf_token": _page_token(page)}).status_code == 302
        assert _active() == []
        page = client.get(detail).get_data(as_text=True)
        assert 'data-testid="special-category-objection"' not in page and BUTTON in page
        assert _served(api, token, school)["p1"]["withheld"] is None
        _demographics(db.session.get(Connection, connection.id), 2)
        assert _served(api, token, school)["p1"]["fields"]["ethnicity"] == "WBRI"


def test_r74_a_school_viewer_cannot_record_the_objection(make_app, make):
    app = make_app(SPECIAL_CATEGORY_POLICY_DOCUMENT=POLICY)  # CSRF off: the scope check itself must refuse
    with app.app_context():
        school, _, _, req, token = _setup(make)
        viewer = make.user(Role.school_viewer, school)
        db.session.commit()
        client = app.test_client()
        Auth(client).login(viewer)
        assert client.get(f"/schools/{school.id}/requests/{req.id}").status_code == 404
        assert client.post(f"/schools/{school.id}/requests/{req.id}/{RECORD}").status_code == 404
        assert _active() == []
        assert _served(app.test_client(), token, school)["p1"]["withheld"] is None
        assert all(all(v is not None for v in row) for row in _stored("p1"))
