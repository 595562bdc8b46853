"""Restriction and objection of named product features only (R51): the named features' feeds omit the subject, others serve it."""
from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from portal.connectors import AttendanceMarkRecord
from portal.extensions import db
from portal.models import AuditEntry, Role
from portal.privacy import actions, register
from portal.privacy.register import RequestError
from tests import api_support as s

TRACKING, EVALUATION = "pupil_tracking", "self_evaluation_early_results"


def _setup(make, kind="restriction"):
    product = s.product(TRACKING, EVALUATION, name="Two features")
    school, connection = s.connected_school(make, product)
    s.write(connection, s.pupils(3))
    s.write(connection, [AttendanceMarkRecord(external_id=f"p{i}-am", pupil_external_id=f"p{i}",
                                              session_date=date(2025, 9, 8), session="AM", code="/") for i in range(3)])
    user = make.user(Role.school_admin, school)
    req = register.create(user=user, request_type=kind, received_on=date.today(), channel="email",
                          requester_kind="parent_carer", subject_type="pupil", school=school, subject_external_id="p1")
    register.verify_identity(req, user, "known_to_school")
    db.session.commit()
    return s.token_for(product), school, req, user


def _ids(client, token, feature, school, category="student_basic", record_type="pupils"):
    body = s.get(client, token, s.records_path(feature, school.id, category, record_type)).json
    return sorted(r["external_id"] for r in body["records"])


def _audit(action):
    return list(db.session.execute(select(AuditEntry).where(AuditEntry.action == action)).scalars())


def test_r51_restricting_one_named_feature_hides_the_pupil_from_that_feature_only(app, client, make):
    token, school, req, user = _setup(make)
    actions.restrict(req, user, "accuracy_contested", [TRACKING])
    db.session.commit()
    assert _ids(client, token, TRACKING, school) == ["p0", "p2"]
    assert _ids(client, token, TRACKING, school, "student_attendance_exclusions", "attendance_marks") == ["p0-am", "p2-am"]
    assert _ids(client, token, EVALUATION, school) == ["p0", "p1", "p2"]
    assert _ids(client, token, EVALUATION, school, "student_attendance_exclusions", "attendance_marks") == [
        "p0-am", "p1-am", "p2-am"]
    [entry] = _audit("dsr.restricted")
    assert entry.details["features"] == [TRACKING] and entry.target_id == str(req.id)
    actions.lift_restriction(req, user)
    db.session.commit()
    assert _ids(client, token, TRACKING, school) == ["p0", "p1", "p2"]
    assert len(_audit("dsr.restriction_lifted")) == 1


def test_r51_a_restriction_naming_no_feature_covers_every_feature(app, client, make):
    token, school, req, user = _setup(make)
    actions.restrict(req, user, "unlawful_processing", [])
    db.session.commit()
    assert _ids(client, token, TRACKING, school) == ["p0", "p2"]
    assert _ids(client, token, EVALUATION, school) == ["p0", "p2"]
    assert _audit("dsr.restricted")[0].details["features"] == "all"


def test_r51_an_objection_to_one_feature_restricts_that_feature_while_assessed(app, client, make):
    token, school, req, user = _setup(make, kind="objection")
    actions.object_to_processing(req, user, [EVALUATION])
    db.session.commit()
    assert _ids(client, token, EVALUATION, school) == ["p0", "p2"]
    assert _ids(client, token, TRACKING, school) == ["p0", "p1", "p2"]


def test_r51_only_features_the_school_authorises_can_be_named(app, make):
    _token, _school, req, user = _setup(make)
    with pytest.raises(RequestError) as err:
        actions.restrict(req, user, "accuracy_contested", ["user_provisioning"])
    assert err.value.code == "unknown_feature" and _audit("dsr.restricted") == []


def test_r51_the_school_chooses_features_on_the_request_page(app, client, auth, make):
    token, school, req, user = _setup(make)
    auth.login(user)
    page = client.get(f"/schools/{school.id}/requests/{req.id}").get_data(as_text=True)
    assert f'value="{TRACKING}"' in page and f'value="{EVALUATION}"' in page and 'value="user_provisioning"' not in page
    resp = client.post(f"/schools/{school.id}/requests/{req.id}/restrict",
                       data={"reason": "accuracy_contested", "features": [EVALUATION], "csrf_token": _csrf(page)})
    assert resp.status_code == 302
    page = client.get(f"/schools/{school.id}/requests/{req.id}").get_data(as_text=True)
    assert "Restricted for Self-evaluation analysis of past school performance and early results analysis service" in page
    assert _ids(client, token, EVALUATION, school) == ["p0", "p2"]
    assert _ids(client, token, TRACKING, school) == ["p0", "p1", "p2"]


def _csrf(page: str) -> str:
    import re

    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_r51_a_wider_restriction_after_a_narrow_one_covers_every_feature_and_lifting_ends_both(app, client, make):
    token, school, req, user = _setup(make)
    actions.restrict(req, user, "accuracy_contested", [TRACKING])
    actions.restrict(req, user, "accuracy_contested", [TRACKING])  # the same again: nothing new
    actions.restrict(req, user, "legal_claims", [])
    db.session.commit()
    assert len(_audit("dsr.restricted")) == 2
    assert _ids(client, token, EVALUATION, school) == ["p0", "p2"]
    assert actions.lift_restriction(req, user) == 2
    db.session.commit()
    assert _ids(client, token, EVALUATION, school) == _ids(client, token, TRACKING, school) == ["p0", "p1", "p2"]
