"""The school's request pages and support staff's intake: forms that say what is wrong, the queue, actions, the download."""
from __future__ import annotations

import io
import zipfile
from datetime import date, timedelta

from sqlalchemy import func, select

from portal.connectors import PupilRecord
from portal.extensions import db
from portal.models import Role, SubjectRequest
from portal.models.dsr import RequestStatus
from portal.privacy import register
from tests import api_support as s


def _school(make, n=2):
    school, connection = s.connected_school(make)
    s.write(connection, s.pupils(n) + [PupilRecord(external_id="twin-a", legal_forename="Sam", legal_surname="Twin",
                                                   date_of_birth=date(2015, 2, 3)),
                                       PupilRecord(external_id="twin-b", legal_forename="Sid", legal_surname="Twin",
                                                   date_of_birth=date(2015, 2, 3))])
    admin = make.user(Role.school_admin, school)
    return school, admin


def _form(**overrides):
    data = {"request_type": "access", "received_on": date.today().isoformat(), "channel": "email",
            "requester_kind": "parent_carer", "relationship": "father", "requester_contact": "A Parent, 1 Road",
            "subject_external_id": "p1"}
    data.update(overrides)
    return data


def test_r43_the_intake_form_shows_what_is_wrong_and_saves_nothing(app, client, make, auth):
    school, admin = _school(make)
    auth.login(admin)
    resp = client.post(f"/schools/{school.id}/requests/new", data=_form(request_type="", received_on=""))
    page = resp.get_data(as_text=True)
    assert resp.status_code == 400
    assert "Choose the type of request." in page and "Enter the date the request was received." in page
    resp = client.post(f"/schools/{school.id}/requests/new", data=_form(subject_external_id="nobody"))
    assert resp.status_code == 400 and "No pupil of this school has that MIS id." in resp.get_data(as_text=True)
    assert db.session.execute(select(func.count()).select_from(SubjectRequest)).scalar() == 0


def test_an_ambiguous_search_lists_every_match_for_an_explicit_choice(app, client, make, auth):
    school, admin = _school(make)
    auth.login(admin)
    page = client.get(f"/schools/{school.id}/requests/find",
                      query_string={"surname": "Twin", "date_of_birth": "2015-02-03"}).get_data(as_text=True)
    assert "2 matches" in page and "More than one pupil matches" in page
    assert "subject=twin-a" in page and "subject=twin-b" in page
    other = make.school()
    assert client.get(f"/schools/{other.id}/requests/find").status_code == 404


def test_a_school_admin_records_verifies_exports_once_and_closes_a_request(app, client, make, auth):
    school, admin = _school(make)
    auth.login(admin)
    resp = client.post(f"/schools/{school.id}/requests/new", data=_form())
    assert resp.status_code == 302
    req = db.session.execute(select(SubjectRequest)).scalar_one()
    assert req.requester_contact == "A Parent, 1 Road" and req.status == RequestStatus.identity_pending
    detail = f"/schools/{school.id}/requests/{req.id}"
    # R46: no export before identity is verified.
    assert client.post(f"{detail}/export").status_code == 400
    resp = client.post(f"{detail}/verify", data={"method": ""})
    assert resp.status_code == 400 and "Choose how identity was checked." in resp.get_data(as_text=True)
    assert client.post(f"{detail}/verify", data={"method": "known_to_school"}).status_code == 302
    page = client.post(f"{detail}/export").get_data(as_text=True)
    assert 'data-testid="export-ready"' in page
    link = page.split(f'href="{detail}/download/')[1].split('"')[0]
    download = client.get(f"{detail}/download/{link}")
    assert download.status_code == 200 and download.headers["Content-Type"] == "application/zip"
    assert "export.json" in zipfile.ZipFile(io.BytesIO(download.data)).namelist()
    again = client.get(f"{detail}/download/{link}")
    assert again.status_code == 410 and "already been used" in again.get_data(as_text=True)
    assert client.post(f"{detail}/complete").status_code == 302
    db.session.expire_all()
    assert db.session.get(SubjectRequest, req.id).status == RequestStatus.completed


def test_the_queue_shows_soonest_first_and_flags_overdue_and_due_soon(app, client, make, auth):
    school, admin = _school(make)
    today = date.today()
    made = {}
    for name, received in (("later", today), ("overdue", today - timedelta(days=40)), ("soon", today - timedelta(days=27))):
        made[name] = register.create(user=admin, request_type="erasure", received_on=received, channel="letter",
                                     requester_kind="subject", subject_type="pupil", school=school, subject_external_id="p0")
    db.session.commit()
    auth.login(admin)
    page = client.get(f"/schools/{school.id}/requests").get_data(as_text=True)
    order = [page.index(f'data-request="{made[n].id}"') for n in ("overdue", "soon", "later")]
    assert order == sorted(order)
    assert "Overdue" in page and "Due soon" in page


def test_a_school_viewer_cannot_see_requests(app, client, make, auth):
    school, _ = _school(make)
    viewer = make.user(Role.school_viewer, school)
    auth.login(viewer)
    assert client.get(f"/schools/{school.id}/requests").status_code == 404


def test_r51_the_request_page_shows_the_pupil_as_restricted_and_lifting_works(app, client, make, auth):
    school, admin = _school(make)
    req = register.create(user=admin, request_type="restriction", received_on=date.today(), channel="letter",
                          requester_kind="subject", subject_type="pupil", school=school, subject_external_id="p1")
    register.verify_identity(req, admin, "known_to_school")
    db.session.commit()
    auth.login(admin)
    detail = f"/schools/{school.id}/requests/{req.id}"
    assert client.post(f"{detail}/restrict", data={"reason": "accuracy_contested"}).status_code == 302
    assert 'data-testid="restricted"' in client.get(detail).get_data(as_text=True)
    assert client.post(f"{detail}/lift").status_code == 302
    assert 'data-testid="restricted"' not in client.get(detail).get_data(as_text=True)


def test_r43_privacy_page_shows_the_dpo_and_admin_warns_when_none_is_set(make_app, make):
    app = make_app(DPO_EMAIL="dpo@operator.example")
    with app.app_context():
        assert "dpo@operator.example" in app.test_client().get("/privacy").get_data(as_text=True)
    bare = make_app()
    with bare.app_context():
        assert 'data-testid="dpo-missing"' in bare.test_client().get("/privacy").get_data(as_text=True)


def test_r47_support_staff_record_a_request_that_is_routed_to_the_school(app, client, make, auth):
    school, admin = _school(make)
    support = make.user(None, support=True, totp=True)
    auth.login(support)
    page = client.get("/admin/dsr_intake/").get_data(as_text=True)
    assert 'data-testid="no-dpo"' in page
    resp = client.post("/admin/dsr_intake/", data={
        "request_type": "erasure", "received_on": date.today().isoformat(), "channel": "email",
        "requester_kind": "parent_carer", "subject_type": "pupil", "school_id": str(school.id), "subject_external_id": "p1"})
    page = resp.get_data(as_text=True)
    assert 'data-testid="done"' in page and "routed to controller" in page
    req = db.session.execute(select(SubjectRequest)).scalar_one()
    assert req.status == RequestStatus.routed_to_controller and req.school_id == school.id
    resp = client.post("/admin/dsr_intake/", data={"request_type": "", "received_on": ""})
    assert "Choose the type of request." in resp.get_data(as_text=True)
    assert client.get("/admin/dsr_register/").status_code == 200
