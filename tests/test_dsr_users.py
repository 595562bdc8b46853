"""Requests about our own users' data, answered by support staff end to end (R47–R51): export, rectify, erase, restrict."""
from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import date

import jsonschema
from sqlalchemy import func, select

from portal import audit
from portal.account import marketing
from portal.auth.views import issue_reset_token
from portal.extensions import db
from portal.models import AuditEntry, Membership, Role, SubjectRequest, TermsAcceptance, User
from portal.models.dsr import RequestStatus
from tests.test_auth import sent_mail


def _record(client, kind: str, user: User, *, by_email: bool = False) -> SubjectRequest:
    resp = client.post("/admin/dsr_intake/", data={
        "request_type": kind, "received_on": date.today().isoformat(), "channel": "email", "requester_kind": "user",
        "subject_type": "user", "subject_user_id": user.email.upper() if by_email else str(user.id)})
    assert 'data-testid="done"' in resp.get_data(as_text=True)
    req = db.session.execute(select(SubjectRequest).order_by(SubjectRequest.id.desc())).scalars().first()
    assert req.controller.value == "operator" and req.status == RequestStatus.identity_pending
    assert req.subject_user_id == user.id
    return req


def _act(client, req, step, **data):
    return client.post(f"/admin/dsr_users/{req.id}/{step}", data=data)


def _subject(make):
    school = make.school()
    user = make.user(Role.school_viewer, school, email="subject@example.org")
    db.session.add(TermsAcceptance(school_id=school.id, version="2026-01", user_id=user.id))
    marketing.set_preference(user, True, via="account")
    issue_reset_token(user)  # a reset token: a secret that must never be exported
    db.session.commit()
    return school, user


def test_r48_support_export_a_users_own_data_once_with_account_memberships_sign_ins_terms_and_preferences(
        app, client, auth, make):
    school, user = _subject(make)
    auth.login(user)
    auth.logout()
    support = make.user(None, support=True, totp=True)
    db.session.commit()
    auth.login(support)
    req = _record(client, "access", user)
    assert f"Request {req.id}" in client.get("/admin/dsr_users/").get_data(as_text=True)
    # R46: nothing is disclosed before identity is verified.
    assert _act(client, req, "export").status_code == 400
    _act(client, req, "verify", method="photo_id")
    page = _act(client, req, "export").get_data(as_text=True)
    link = re.search(r'href="(/admin/dsr_users/\d+/download/[^"]+)"', page).group(1)
    resp = client.get(link)
    assert resp.status_code == 200 and resp.mimetype == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(resp.data))
    document = json.loads(archive.read("export.json"))
    jsonschema.validate(document, json.loads(archive.read("schema.json")))
    assert document["account"]["email"] == "subject@example.org" and document["account"]["marketing_opt_in"] is True
    assert document["account"]["last_login_at"]
    assert [m["organisation_id"] for m in document["tables"]["memberships"]] == [school.id]
    assert [t["version"] for t in document["tables"]["terms_acceptances"]] == ["2026-01"]
    actions = [e["action"] for e in document["audit_entries"]]
    assert {"auth.login", "auth.logout", "account.marketing_opt_in"} <= set(actions)
    assert {"csv/users.csv", "csv/memberships.csv", "csv/terms_acceptances.csv", "csv/audit_entries.csv",
            "cover.txt"} <= set(archive.namelist())
    everything = b"".join(archive.read(n) for n in archive.namelist())
    for secret in (user.password_hash, user.session_token):
        assert secret.encode() not in everything
    assert b"token_hash" not in everything and b"password_hash" not in everything
    assert client.get(link).status_code == 410  # single use
    assert _act(client, req, "complete").status_code == 302
    trail = list(db.session.execute(select(AuditEntry.action).where(AuditEntry.target_type == "subject_requests",
                                                                    AuditEntry.target_id == str(req.id))).scalars())
    assert trail == ["dsr.received", "dsr.identity_verified", "dsr.user_read", "dsr.export_prepared",
                     "dsr.export_downloaded", "dsr.completed"]


def test_r49_support_correct_a_users_name_at_once_and_their_email_once_confirmed(app, client, auth, make):
    _school, user = _subject(make)
    support = make.user(None, support=True, totp=True)
    db.session.commit()
    auth.login(support)
    req = _record(client, "rectification", user, by_email=True)
    _act(client, req, "verify", method="signed_in")
    assert "Enter the corrected name or email" in _act(client, req, "rectify").get_data(as_text=True)
    assert _act(client, req, "rectify", name="Right Name", email="right@example.org").status_code == 302
    db.session.expire_all()
    fixed = db.session.get(User, user.id)
    assert fixed.name == "Right Name" and fixed.email == "subject@example.org"
    [confirmation] = [m for m in sent_mail(app) if "right@example.org" in m["To"]]
    link = re.search(r"https?://[^/\s]+(/account/email/\S+)", confirmation.get_payload(decode=True).decode()).group(1)
    auth.logout()
    assert client.get(link).status_code == 200
    db.session.expire_all()
    assert db.session.get(User, user.id).email == "right@example.org"


def test_r50_erasing_a_user_deletes_the_account_and_keeps_audit_facts_under_a_placeholder(app, client, auth, make):
    school, user = _subject(make)
    user_id = user.id
    auth.login(user)
    auth.logout()
    support = make.user(None, support=True, totp=True)
    db.session.commit()
    sign_ins = select(func.count()).select_from(AuditEntry).where(AuditEntry.action.in_(["auth.login", "auth.logout"]))
    auth.login(support)
    facts_before = db.session.execute(sign_ins).scalar()
    req = _record(client, "erasure", user)
    _act(client, req, "verify", method="photo_id")
    assert _act(client, req, "erase").status_code == 302
    db.session.expire_all()
    assert db.session.get(User, user_id) is None
    assert db.session.execute(select(func.count()).select_from(Membership).where(Membership.user_id == user_id)).scalar() == 0
    # Audit facts stay (R9, R37): the same entries, the chain intact, but nothing leads back to the user.
    assert facts_before >= 3 and db.session.execute(sign_ins).scalar() == facts_before
    assert audit.verify().ok
    naming = select(func.count()).select_from(AuditEntry).where(
        (AuditEntry.actor_user_id == user_id) | (AuditEntry.actor == f"user:{user_id}")
        | ((AuditEntry.target_type == "users") & (AuditEntry.target_id == str(user_id))))
    assert db.session.execute(naming).scalar() == 0
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "dsr.user_erased")).scalar_one()
    assert entry.details["deleted"]["memberships"] == 1 and entry.details["audit_references"] >= 3
    assert "subject@example.org" not in json.dumps(entry.details)
    assert db.session.get(SubjectRequest, req.id).outcome == "erased"
    # The school's record that its terms were accepted (R9) stays, no longer naming anyone.
    assert db.session.execute(select(TermsAcceptance.school_id, TermsAcceptance.user_id)).all() == [(school.id, None)]
    auth.logout()
    assert client.post("/login", data={"email": "subject@example.org", "password": "correct horse battery staple"}
                       ).status_code == 401
    # The request itself can still be closed, as evidence of what was done.
    auth.login(support)
    assert _act(client, req, "complete").status_code == 302


def test_r51_a_restricted_user_is_kept_but_left_out_of_marketing_until_lifted(app, client, auth, make):
    _school, user = _subject(make)
    support = make.user(None, support=True, totp=True)
    db.session.commit()
    auth.login(support)
    req = _record(client, "restriction", user)
    _act(client, req, "verify", method="photo_id")
    _act(client, req, "restrict")
    assert 'data-testid="restricted"' in client.get(f"/admin/dsr_users/{req.id}/").get_data(as_text=True)
    assert marketing.send("News", "Body").sent == 0
    _act(client, req, "lift")
    assert marketing.send("News", "Body").sent == 1
    db.session.commit()
    assert db.session.get(User, user.id).active is True


def test_r47_school_users_cannot_reach_the_operators_user_requests(app, client, auth, make):
    school = make.school()
    admin = make.user(Role.school_admin, school)
    db.session.commit()
    auth.login(admin)
    assert client.get("/admin/dsr_users/").status_code == 404


def test_r53_support_refuse_a_users_request_only_with_written_reasons_and_the_letter_names_the_ico(app, client, auth, make):
    _school, user = _subject(make)
    support = make.user(None, support=True, totp=True)
    db.session.commit()
    auth.login(support)
    req = _record(client, "erasure", user)
    resp = _act(client, req, "refuse", reason="  ")
    assert resp.status_code == 400 and "Give the written reasons" in resp.get_data(as_text=True)
    assert client.get(f"/admin/dsr_users/{req.id}/refusal.txt").status_code == 404
    assert _act(client, req, "refuse", reason="Manifestly excessive: the fifth identical request this month.").status_code == 302
    letter = client.get(f"/admin/dsr_users/{req.id}/refusal.txt").get_data(as_text=True)
    assert "fifth identical request" in letter and "Information Commissioner" in letter
    assert db.session.get(SubjectRequest, req.id).status == RequestStatus.refused
    assert db.session.get(User, user.id).active is True  # nothing was erased
