"""A user's own account: name and email correction with confirmation from the new address (R49), marketing consent (R52)."""
from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select, update

from portal import alerts
from portal.account import marketing
from portal.extensions import db
from portal.models import AuditEntry, Connection, ConnectionState, EmailChangeToken, ErrorKind, JobRun, Role, RunStatus, User
from portal.models.base import utcnow
from tests.test_auth import sent_mail


def _actions(user_id: int) -> list[str]:
    return list(db.session.execute(select(AuditEntry.action).where(AuditEntry.target_type == "users",
                                                                   AuditEntry.target_id == str(user_id))
                                   .order_by(AuditEntry.id)).scalars())


def _to(app, address: str) -> list:
    return [m for m in sent_mail(app) if address in m["To"]]


def _link(message, pattern: str) -> str:
    body = message.get_payload(decode=True).decode()
    return re.search(r"https?://[^/\s]+(" + pattern + r"\S+)", body).group(1)


# ------------------------------------------------------------------ R49: correcting one's own details


def test_r49_a_new_email_applies_only_once_the_link_sent_to_it_is_followed(app, client, auth, make):
    user = make.user(Role.school_viewer, make.school(), email="old@example.org")
    db.session.commit()
    auth.login(user)
    resp = client.post("/account/details", data={"name": user.name, "email": "new@example.org"})
    assert resp.status_code == 302
    page = client.get("/account").get_data(as_text=True)
    assert "new@example.org" in page and "waiting for you to follow the link" in page
    [confirmation] = _to(app, "new@example.org")
    assert _to(app, "old@example.org"), "the old address is told a change was requested"
    link = _link(confirmation, "/account/email/")
    # Until the link is followed the old address is the account's: sign-in works with it only.
    db.session.expire_all()
    assert db.session.get(User, user.id).email == "old@example.org"
    auth.logout()
    assert client.post("/login", data={"email": "new@example.org", "password": "correct horse battery staple"}).status_code == 401
    assert auth.login(user).status_code == 302
    auth.logout()
    # Following the link (no sign-in needed: it proves the address) applies the change, once.
    assert client.get(link).status_code == 200
    db.session.expire_all()
    changed = db.session.get(User, user.id)
    assert changed.email == "new@example.org"
    assert client.get(link).status_code == 400
    assert auth.login(changed).status_code == 302
    assert [a for a in _actions(user.id) if a.startswith("account.")] == [
        "account.email_change_requested", "account.email_changed"]
    # Ids only in the audit trail, never the addresses.
    details = db.session.execute(select(AuditEntry.details).where(AuditEntry.action.like("account.email%"))).scalars()
    assert not any("example.org" in str(d) for d in details)


def test_r49_an_expired_or_replaced_link_changes_nothing(app, client, auth, make):
    user = make.user(Role.school_viewer, make.school(), email="keep@example.org")
    db.session.commit()
    auth.login(user)
    client.post("/account/details", data={"name": user.name, "email": "first@example.org"})
    first = _link(_to(app, "first@example.org")[0], "/account/email/")
    client.post("/account/details", data={"name": user.name, "email": "second@example.org"})
    second = _link(_to(app, "second@example.org")[0], "/account/email/")
    assert client.get(first).status_code == 400  # replaced by the newer request
    db.session.execute(update(EmailChangeToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert client.get(second).status_code == 400
    db.session.expire_all()
    assert db.session.get(User, user.id).email == "keep@example.org"


def test_r49_a_name_is_corrected_at_once_and_bad_input_is_explained(app, client, auth, make):
    other = make.user(Role.school_viewer, make.school(), email="taken@example.org")
    user = make.user(Role.school_viewer, make.school())
    db.session.commit()
    auth.login(user)
    client.post("/account/details", data={"name": "  Corrected Name ", "email": user.email})
    db.session.expire_all()
    assert db.session.get(User, user.id).name == "Corrected Name"
    assert "account.name_changed" in _actions(user.id)
    taken = client.post("/account/details", data={"name": "Corrected Name", "email": "TAKEN@example.org"})
    assert taken.status_code == 400 and "Another account uses that email address." in taken.get_data(as_text=True)
    bad = client.post("/account/details", data={"name": "", "email": "not-an-address"})
    text = bad.get_data(as_text=True)
    assert bad.status_code == 400 and "Enter your name." in text and "Enter a valid email address." in text
    assert other.email == "taken@example.org" and _to(app, "taken@example.org") == []


def test_r49_there_is_no_edit_control_for_pupil_fields(app, client, auth, make):
    from portal.models import STORE_MODELS, MisPupil, SubjectRequest
    from portal.privacy import register

    school = make.school()
    admin = make.user(Role.school_admin, school)
    req = register.create(user=admin, request_type="rectification", received_on=utcnow().date(), channel="email",
                          requester_kind="parent_carer", subject_type="pupil", school=school, subject_external_id="p1")
    register.verify_identity(req, admin, "known_to_school")
    db.session.commit()
    pupil_models = [m for m in STORE_MODELS.values() if m is MisPupil or "pupil_id" in m.__table__.c]
    pupil_columns = {c.name for m in pupil_models for c in m.__table__.columns} - {"id", "category"}
    auth.login(admin)
    for path in (f"/schools/{school.id}/requests/{req.id}", f"/schools/{school.id}/requests/find", "/account"):
        page = client.get(path)
        assert page.status_code == 200
        posted = re.findall(r'<form method="post".*?</form>', page.get_data(as_text=True), re.S)
        names = {n for form in posted for n in re.findall(r'<(?:input|textarea|select)[^>]*\bname="([^"]+)"', form)}
        assert not names & pupil_columns, (path, names & pupil_columns)
    # No route changes a pupil, and the admin shows MIS tables read-only.
    for rule in app.url_map.iter_rules():
        if "pupil" in rule.rule:
            assert not (rule.methods or set()) & {"POST", "PUT", "PATCH", "DELETE"}, rule.rule
    store_models = set(STORE_MODELS.values())
    for view in app.extensions["admin"][0]._views:
        if getattr(view, "model", None) in store_models:
            assert not (view.can_edit or view.can_create), view
    assert SubjectRequest  # the request keeps "what is wrong" as text; the correction is made in the MIS


# ------------------------------------------------------------------ R52: marketing consent and the opt-out


def test_r52_marketing_is_off_by_default_and_opting_in_and_out_take_one_step_each(app, client, auth, make):
    user = make.user(Role.school_viewer, make.school())
    db.session.commit()
    assert user.marketing_opt_in is False
    auth.login(user)
    assert 'name="opt_in"' in client.get("/account").get_data(as_text=True)
    assert client.post("/account/marketing", data={"opt_in": "y"}).status_code == 302
    db.session.expire_all()
    assert db.session.get(User, user.id).marketing_opt_in is True
    assert client.post("/account/marketing", data={}).status_code == 302
    db.session.expire_all()
    assert db.session.get(User, user.id).marketing_opt_in is False
    assert _actions(user.id)[-2:] == ["account.marketing_opt_in", "account.marketing_opt_out"]


def test_r52_after_opting_out_the_user_is_left_out_of_the_next_send_while_service_messages_still_arrive(
        app, client, make):
    school = make.school()
    stays = make.user(Role.school_admin, school, email="stays@example.org")
    leaves = make.user(Role.school_admin, school, email="leaves@example.org")
    never = make.user(Role.school_viewer, school, email="never@example.org")
    for u in (stays, leaves):
        marketing.set_preference(u, True, via="account")
    db.session.commit()
    assert marketing.send("Spring news", "New features this term.").sent == 2
    db.session.commit()
    [news] = _to(app, "leaves@example.org")
    assert news["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert news["List-Unsubscribe"].strip("<>").endswith(_link(news, "/marketing/opt-out/"))
    assert _to(app, "never@example.org") == []
    # One click, no sign-in: the opt-out takes effect at once.
    page = client.get(_link(news, "/marketing/opt-out/"))
    assert page.status_code == 200 and "no more marketing emails" in page.get_data(as_text=True)
    result = marketing.send("Summer news", "More features.")
    db.session.commit()
    assert (result.sent, result.left_out) == (1, 2)
    assert [m["Subject"] for m in _to(app, "leaves@example.org")] == ["Spring news"]
    assert [m["Subject"] for m in _to(app, "stays@example.org")] == ["Spring news", "Summer news"]
    # Service messages still reach the user who opted out.
    connection = Connection(school_id=school.id, connector="fake", state=ConnectionState.approved)
    db.session.add(connection)
    db.session.flush()
    run = JobRun(job_id=f"extract:{connection.id}", kind="extract", scheduled_for=utcnow(), connection_id=connection.id,
                 status=RunStatus.failed, error_kind=ErrorKind.school_action, error_code="x", error_message="Access denied")
    db.session.add(run)
    db.session.commit()
    assert alerts.run_needs_school_action(run)
    assert alerts.breach_notice(school, "INC-7")
    assert alerts.terms_changed(school, "2027-01")
    subjects = [m["Subject"] for m in _to(app, "leaves@example.org")]
    assert any("extract" in s and "failed" in s for s in subjects)
    assert any("breach" in s for s in subjects) and any("terms have changed" in s for s in subjects)
    assert never.marketing_opt_in is False


def test_r52_the_one_click_post_works_and_no_later_send_overrides_it(app, client, make):
    user = make.user(Role.school_viewer, make.school())
    marketing.set_preference(user, True, via="account")
    db.session.commit()
    path = marketing.opt_out_link(user).split("//", 1)[1].split("/", 1)[1]
    assert client.post("/" + path, data={"List-Unsubscribe": "One-Click"}).status_code == 204
    for _ in range(2):
        assert marketing.send("News", "Body").sent == 0
        db.session.commit()
    db.session.expire_all()
    assert db.session.get(User, user.id).marketing_opt_in is False
    forged = client.get("/marketing/opt-out/" + marketing.opt_out_token(user)[:-2] + "xx")
    assert forged.status_code == 400
    assert [a for a in _actions(user.id) if a.startswith("account.marketing")] == [
        "account.marketing_opt_in", "account.marketing_opt_out"]


def test_r52_the_marketing_send_command_skips_users_who_did_not_opt_in(app, make):
    keen = make.user(Role.school_viewer, make.school(), email="keen@example.org")
    make.user(Role.school_viewer, make.school(), email="quiet@example.org")
    marketing.set_preference(keen, True, via="account")
    db.session.commit()
    result = app.test_cli_runner().invoke(args=["portal", "marketing", "send", "--subject", "Hello", "--body-file", "-"],
                                          input="A new product.\n")
    assert result.exit_code == 0, result.output
    assert "sent 1" in result.output
    assert len(_to(app, "keen@example.org")) == 1 and _to(app, "quiet@example.org") == []


def test_r49_the_email_change_form_cannot_be_used_to_send_mail_in_bulk(make_app, make):
    from tests.conftest import Auth

    app = make_app(RATELIMIT_ENABLED=True, EMAIL_CHANGE_RATE_LIMIT="2 per hour")
    with app.app_context():
        client = app.test_client()
        user = make.user(Role.school_viewer, make.school())
        db.session.commit()
        Auth(client).login(user)
        for n in range(2):
            assert client.post("/account/details", data={"name": user.name, "email": f"n{n}@example.org"}).status_code == 302
        resp = client.post("/account/details", data={"name": user.name, "email": "n2@example.org"})
        assert resp.status_code == 429 and "Traceback" not in resp.get_data(as_text=True)
        assert _to(app, "n2@example.org") == []


def test_r52_with_csrf_on_the_account_forms_need_a_token_and_the_one_click_opt_out_does_not(make_app, make):
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        client = app.test_client()
        user = make.user(Role.school_viewer, make.school())
        marketing.set_preference(user, True, via="account")
        db.session.commit()
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        client.post("/login", data={"email": user.email, "password": "correct horse battery staple", "csrf_token": token})
        assert client.post("/account/marketing", data={}).status_code == 400  # no token: refused
        db.session.expire_all()
        assert db.session.get(User, user.id).marketing_opt_in is True
        path = "/marketing/opt-out/" + marketing.opt_out_token(user)
        assert app.test_client().post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 204
        db.session.expire_all()
        assert db.session.get(User, user.id).marketing_opt_in is False
