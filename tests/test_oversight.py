"""R57 links, R58 support grants, R66 sub-processor register, R69 breach record, R22 freshness alerts."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from portal import mail
from portal.extensions import db
from portal.models import (
    AuditEntry,
    BreachStatus,
    JobRun,
    NoticeRecipient,
    Organisation,
    OrgKind,
    Role,
    SchoolLink,
    SupportGrant,
)
from portal.models.base import utcnow
from portal.oversight import breaches, freshness, grants, links, subprocessors
from portal.scope import Action, can
from tests import api_support as s

LONDON = ZoneInfo("Europe/London")


def _emails() -> list[str]:
    return [p.read_text() for p in sorted(mail.outbox_dir().glob("*.eml"))] if mail.outbox_dir().exists() else []


def _diocese(name: str = "Diocese of Example") -> Organisation:
    org = Organisation(kind=OrgKind.diocese, name=name)
    db.session.add(org)
    db.session.flush()
    return org


@pytest.fixture
def school_with_pupils(app, make):
    p = s.product("self_evaluation_early_results")
    school, connection = s.connected_school(make, p)
    s.write(connection, s.pupils(3, prefix="sp"))
    admin = make.user(Role.school_admin, school)
    db.session.commit()
    return school, admin


# ---------------------------------------------------------------- R57


def test_r57_diocese_sees_pupils_only_through_an_approved_link_the_school_can_end(school_with_pupils, make, client, auth):
    school, admin = school_with_pupils
    diocese = _diocese()
    officer = make.user(Role.diocese_officer, diocese)
    db.session.commit()
    auth.login(officer)
    assert client.get(f"/schools/{school.id}/pupils").status_code == 404
    assert not can(officer, Action.view_pupil_data, school)

    link = links.approve(school, diocese.id, "self_evaluation_early_results", "SLA-2025-01", admin)
    db.session.commit()
    page = client.get(f"/schools/{school.id}/pupils")
    assert page.status_code == 200
    assert "Pupil0" in page.data.decode()
    assert "Self-evaluation" in page.data.decode() or "self_evaluation" in page.data.decode()
    viewed = db.session.execute(select(AuditEntry).where(AuditEntry.action == "store.pupils_viewed")).scalars().all()
    assert [(e.organisation_id, e.details["viewer"], e.details["feature"], e.details["count"]) for e in viewed] == [
        (school.id, "link", "self_evaluation_early_results", 3)]
    # A link gives no management action.
    assert not can(officer, Action.manage, school) and not can(officer, Action.authorise, school)

    # The school sees the link on its data-use page and ends it there.
    auth.logout()
    auth.login(admin)
    data_use = client.get(f"/schools/{school.id}/data-use").data.decode()
    assert diocese.name in data_use and "SLA-2025-01" in data_use
    assert client.post(f"/schools/{school.id}/links/{link.id}/end").status_code == 302
    auth.logout()
    auth.login(officer)
    assert client.get(f"/schools/{school.id}/pupils").status_code == 404
    history = [e.action for e in db.session.execute(select(AuditEntry).where(
        AuditEntry.organisation_id == school.id)).scalars()]
    assert "link.approved" in history and "link.ended" in history


def test_r57_links_refuse_the_school_trust_features_without_pupil_data_and_no_agreement(app, make):
    trust = make.trust()
    school = make.school(trust=trust)
    admin = make.user(Role.school_admin, school)
    diocese = _diocese()
    with pytest.raises(links.LinkError, match="own trust"):
        links.approve(school, trust.id, "pupil_tracking", "SLA", admin)
    with pytest.raises(links.LinkError, match="feature"):
        links.approve(school, diocese.id, "user_provisioning", "SLA", admin)
    with pytest.raises(links.LinkError, match="service agreement"):
        links.approve(school, diocese.id, "pupil_tracking", "  ", admin)
    with pytest.raises(links.LinkError, match="local authority, diocese or trust"):
        links.approve(school, make.school().id, "pupil_tracking", "SLA", admin)
    assert db.session.execute(select(SchoolLink)).first() is None


def test_r57_school_viewer_cannot_approve_or_end_links(school_with_pupils, make, client, auth):
    school, admin = school_with_pupils
    viewer = make.user(Role.school_viewer, school)
    diocese = _diocese()
    link = links.approve(school, diocese.id, "pupil_tracking", "SLA", admin)
    db.session.commit()
    auth.login(viewer)
    assert client.get(f"/schools/{school.id}/links/new").status_code == 404
    assert client.post(f"/schools/{school.id}/links/{link.id}/end").status_code == 404
    db.session.refresh(link)
    assert link.ended_at is None


# ---------------------------------------------------------------- R58


def test_r58_support_grant_opens_pupil_data_for_its_hours_and_shows_in_history(school_with_pupils, make, client, auth):
    school, admin = school_with_pupils
    support = make.user(support=True)
    support.confidentiality_agreed_on = date(2025, 9, 1)
    db.session.commit()
    auth.login(support)
    assert client.get(f"/schools/{school.id}/pupils").status_code == 404

    item = grants.grant(school, support.email, 24, "TICKET-42", "Check a year group mismatch", admin)
    db.session.commit()
    page = client.get(f"/schools/{school.id}/pupils")
    assert page.status_code == 200 and "Pupil0" in page.data.decode()
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "support.access_granted")).scalar_one()
    assert entry.organisation_id == school.id and entry.details["ticket_ref"] == "TICKET-42"
    assert entry.details["hours"] == 24

    # 24 hours later the grant has lapsed.
    item.granted_at -= timedelta(hours=24)
    item.expires_at -= timedelta(hours=24)
    db.session.commit()
    assert client.get(f"/schools/{school.id}/pupils").status_code == 404
    assert not can(support, Action.view_pupil_data, school)


def test_r58_grant_refused_without_confidentiality_or_beyond_24_hours(app, make):
    school = make.school()
    admin = make.user(Role.school_admin, school)
    support = make.user(support=True)
    with pytest.raises(grants.GrantError, match="confidentiality"):
        grants.grant(school, support.email, 4, "T-1", "reason", admin)
    support.confidentiality_agreed_on = date(2025, 9, 1)
    with pytest.raises(grants.GrantError, match="between 1 and 24"):
        grants.grant(school, support.email, 25, "T-1", "reason", admin)
    with pytest.raises(grants.GrantError, match="ticket"):
        grants.grant(school, support.email, 4, " ", "reason", admin)
    not_support = make.user(Role.school_viewer, school)
    with pytest.raises(grants.GrantError, match="support staff"):
        grants.grant(school, not_support.email, 4, "T-1", "reason", admin)
    assert db.session.execute(select(SupportGrant)).first() is None


def test_r58_a_grant_ended_by_the_school_stops_access_at_once(school_with_pupils, make):
    school, admin = school_with_pupils
    support = make.user(support=True)
    support.confidentiality_agreed_on = date(2025, 9, 1)
    item = grants.grant(school, support.email, 8, "T-2", "reason", admin)
    db.session.commit()
    assert can(support, Action.view_pupil_data, school)
    other = make.school()
    assert not can(support, Action.view_pupil_data, other)
    grants.end(item, admin)
    db.session.commit()
    assert not can(support, Action.view_pupil_data, school)


# ---------------------------------------------------------------- R66


def test_r66_non_uk_sub_processor_needs_a_uk_mechanism(app):
    with pytest.raises(subprocessors.RegisterError, match="UK transfer mechanism"):
        subprocessors.add("CRM Inc", "Customer management", "US", "User names and emails", None)
    with pytest.raises(subprocessors.RegisterError, match="Privacy Shield"):
        subprocessors.add("CRM Inc", "Customer management", "US", "User names and emails", "privacy_shield")
    with pytest.raises(subprocessors.RegisterError, match="Pupil data stays in the UK"):
        subprocessors.add("Host IE", "Hosting", "IE", "Pupil data", "uk_adequacy", pupil_data=True)
    subprocessors.add("CRM Inc", "Customer management", "US", "User names and emails", "uk_us_data_bridge")
    subprocessors.add("UK Host", "Hosting", "gb", "All portal data", None, pupil_data=True)
    db.session.commit()
    register = {s.name: (s.location, s.data_types, s.mechanism.value) for s in subprocessors.register()}
    assert register == {"CRM Inc": ("US", "User names and emails", "uk_us_data_bridge"),
                        "UK Host": ("GB", "All portal data", "in_uk")}


def test_r66_schools_see_the_register_on_the_public_privacy_pages(app, client):
    subprocessors.add("Mail Co", "Sending email", "IE", "User email addresses", "uk_adequacy")
    db.session.commit()
    page = client.get("/privacy/sub-processors").data.decode()
    assert "Mail Co" in page and "IE" in page and "UK adequacy regulations" in page
    assert "/privacy/sub-processors" in client.get("/privacy").data.decode()


# ---------------------------------------------------------------- R69


def _aware(y, m, d, h, minute=0):
    return datetime(y, m, d, h, minute, tzinfo=LONDON)


def test_r69_deadline_is_72_real_hours_across_bank_holidays_and_clock_changes(app):
    b1 = breaches.open_breach(_aware(2025, 5, 2, 16), "Laptop lost")
    assert breaches.deadline(b1).astimezone(LONDON).replace(tzinfo=None) == datetime(2025, 5, 5, 16, 0)
    b2 = breaches.open_breach(_aware(2025, 3, 28, 10), "Misdirected email")
    local = breaches.deadline(b2).astimezone(LONDON)
    assert local.replace(tzinfo=None) == datetime(2025, 3, 31, 11, 0) and local.tzname() == "BST"
    with pytest.raises(breaches.BreachError):
        breaches.open_breach(_aware(2025, 3, 28, 10), "  ")
    with pytest.raises(breaches.BreachError):
        breaches.open_breach(utcnow() + timedelta(days=1), "Future")


def test_r69_leaked_credential_lists_every_school_the_product_read_since_issue(app, make, client):
    from portal.api import credentials

    p = s.product("attendance_reporting")
    other = s.product("attendance_reporting")
    read_a, conn_a = s.connected_school(make, p)
    read_b, conn_b = s.connected_school(make, p, other)
    unread, conn_c = s.connected_school(make, p)
    only_other, conn_d = s.connected_school(make, other)
    for conn in (conn_a, conn_b, conn_c, conn_d):
        s.write(conn, s.pupils(4, prefix=f"c{conn.id}-"))
    credential, token = credentials.issue(p)
    other_token = s.token_for(other)
    db.session.commit()
    for school in (read_a, read_b):
        assert s.get(client, token, s.records_path("attendance_reporting", school.id, "student_basic", "pupils")).status_code == 200
    assert s.get(client, other_token, s.records_path("attendance_reporting", only_other.id, "student_basic", "pupils")).status_code == 200

    breach = breaches.open_breach(utcnow(), "Token posted in a public repository", credential_id=credential.id, confirmed=True)
    db.session.commit()
    assert breach.product_id == p.id and breach.exposed_from == credential.created_at
    affected = breaches.affected(breach)
    assert {a.school_id for a in affected} == {read_a.id, read_b.id}
    assert all(a.categories == {"student_basic": 4} and a.pupils == 4 for a in affected)

    breaches.record_notice(breach, NoticeRecipient.school, school_id=read_a.id)
    breaches.record_notice(breach, NoticeRecipient.ico, reference="ICO-123")
    with pytest.raises(breaches.BreachError):
        breaches.record_notice(breach, NoticeRecipient.individuals)
    db.session.commit()
    assert {a.school_id: a.notified for a in breaches.affected(breach)} == {read_a.id: True, read_b.id: False}
    assert [n.recipient for n in breach.notices] == [NoticeRecipient.school, NoticeRecipient.ico]
    assert breach.status == BreachStatus.confirmed


# ---------------------------------------------------------------- R22


def _succeeded_on(connection, day: date, categories: list[str]) -> JobRun:
    at = datetime(day.year, day.month, day.day, 3, 0, tzinfo=LONDON).astimezone(timezone.utc)
    run = s.run_for(connection)
    run.created_at = run.started_at = run.finished_at = at
    run.stats = {"categories": {c: {"inserted": 1} for c in categories}}
    db.session.commit()
    return run


def test_r22_two_missed_days_alert_admins_and_support_once(app, make):
    p = s.product("attendance_reporting")
    school, connection = s.connected_school(make, p)
    make.user(Role.school_admin, school, email="head@r22.example")
    make.user(support=True, email="support@r22.example")
    cats = ["student_basic", "student_demographics", "student_attendance_exclusions"]
    _succeeded_on(connection, date(2025, 10, 5), cats)
    # Down all of 06: one missed day on 07, no alert.
    assert freshness.check(date(2025, 10, 7))["alerts"] == 0
    # Down 06 and 07: on 08 one alert per category, one message to the school and one to support.
    result = freshness.check(date(2025, 10, 8))
    assert result["alerts"] == 3 and result["messages"] == 2
    sent = _emails()
    assert len(sent) == 2
    assert any("head@r22.example" in m for m in sent) and any("support@r22.example" in m for m in sent)
    assert all("attendance" in m and "Pupil" not in m for m in sent)
    # The same gap never alerts twice.
    assert freshness.check(date(2025, 10, 9))["alerts"] == 0
    assert len(_emails()) == 2


# ---------------------------------------------------------------- R28


def test_r28_government_data_has_its_own_key_destroyed_after_the_dfe_agreement_ends(app):
    from portal import crypto
    from portal.models import DfeAgreement
    from portal.oversight import government_key

    assert government_key.status() == "absent"
    sealed = government_key.seal("DfE-Sentinel-KS2")
    assert sealed.startswith("gov1:") and "DfE-Sentinel" not in sealed
    with pytest.raises(ValueError):
        crypto.decrypt(sealed[len("gov1:"):])  # the instance keys cannot open it
    assert government_key.unseal(sealed) == "DfE-Sentinel-KS2"

    db.session.add(DfeAgreement(reference="DfE-1", ends_on=date(2025, 12, 19)))
    db.session.commit()
    assert government_key.destroy_if_agreement_ended(date(2025, 12, 19)) is False  # not before the end date has passed
    assert government_key.status() == "present"
    assert government_key.destroy_if_agreement_ended(date(2025, 12, 20)) is True
    assert government_key.status() == "destroyed"
    with pytest.raises(government_key.GovernmentKeyError, match="destroyed"):
        government_key.unseal(sealed)
    with pytest.raises(government_key.GovernmentKeyError):
        government_key.seal("new DfE data")  # never silently recreated
    assert db.session.execute(select(AuditEntry).where(AuditEntry.action == "government.key_destroyed")).scalar_one()


# ---------------------------------------------------------------- commands


def test_r69_breach_commands_open_show_and_record_notices_with_one_line_errors(app, make):
    school = make.school()
    db.session.commit()
    runner = app.test_cli_runner()
    opened = runner.invoke(args=["portal", "breaches", "open", "--aware", "2025-03-28T10:00", "--summary", "Lost laptop"])
    assert opened.exit_code == 0, opened.output
    assert "ICO deadline 2025-03-31 11:00 BST" in opened.output
    breach_id = opened.output.split()[0].lstrip("B")
    bad = runner.invoke(args=["portal", "breaches", "notice", breach_id, "--to", "school", "--school", "999999"])
    assert bad.exit_code != 0 and len(bad.output.strip().splitlines()) == 1 and "999999" in bad.output
    ok = runner.invoke(args=["portal", "breaches", "notice", breach_id, "--to", "school", "--school", school.urn])
    assert ok.exit_code == 0, ok.output
    shown = runner.invoke(args=["portal", "breaches", "show", breach_id])
    assert "notice to school" in shown.output
    missing = runner.invoke(args=["portal", "breaches", "show", "424242"])
    assert missing.exit_code != 0 and "no breach B424242" in missing.output


def test_r66_r58_register_and_confidentiality_commands(app, make):
    support = make.user(support=True, email="desk@operator.example")
    db.session.commit()
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["portal", "subprocessors", "add", "--name", "CRM", "--purpose", "CRM", "--location",
                                  "US", "--data-types", "User emails", "--mechanism", "privacy_shield"])
    assert refused.exit_code != 0 and "Privacy Shield" in refused.output
    added = runner.invoke(args=["portal", "subprocessors", "add", "--name", "CRM", "--purpose", "CRM", "--location",
                                "US", "--data-types", "User emails", "--mechanism", "uk_idta"])
    assert added.exit_code == 0, added.output
    assert "CRM\tUS\tuk_idta" in runner.invoke(args=["portal", "subprocessors", "list"]).output
    recorded = runner.invoke(args=["portal", "support", "confidentiality", "desk@operator.example", "--on", "2025-09-01"])
    assert recorded.exit_code == 0, recorded.output
    db.session.refresh(support)
    assert support.confidentiality_agreed_on == date(2025, 9, 1)
    assert runner.invoke(args=["portal", "support", "confidentiality", "nobody@x.example", "--on", "2025-09-01"]).exit_code != 0


def test_r22_a_connection_that_never_succeeded_alerts_two_days_after_approval(app, make):
    p = s.product("attendance_reporting")
    school, connection = s.connected_school(make, p)
    make.user(Role.school_admin, school, email="head2@r22.example")
    connection.state_changed_at = datetime(2025, 10, 5, 9, 0, tzinfo=LONDON)
    db.session.commit()
    assert freshness.check(date(2025, 10, 7))["alerts"] == 0
    result = app.test_cli_runner().invoke(args=["portal", "freshness", "check", "--today", "2025-10-08"])
    assert result.exit_code == 0 and result.output.startswith("3 new alert(s) for 1 school(s)"), result.output


def test_r57_an_la_officer_or_another_trust_gets_pupil_data_only_through_a_link(app, make):
    la = make.local_authority()
    other_trust = make.trust()
    school = make.school(la=la)  # subscribed directly: R56 gives the LA nothing
    admin = make.user(Role.school_admin, school)
    officer = make.user(Role.la_officer, la)
    trust_admin = make.user(Role.trust_admin, other_trust)
    db.session.commit()
    for user in (officer, trust_admin):
        assert not can(user, Action.view_pupil_data, school)
    links.approve(school, la.id, "pupil_tracking", "LA-SLA", admin)
    links.approve(school, other_trust.id, "estimates_targets_student_explorer", "MAT-SLA", admin)
    db.session.commit()
    for user in (officer, trust_admin):
        assert can(user, Action.view_pupil_data, school) and can(user, Action.view, school)
        assert not can(user, Action.view_users, school) and not can(user, Action.manage, school)
    from portal.scope import link_features

    assert link_features(officer, school) == ["pupil_tracking"]
    assert link_features(admin, school) is None


def test_r58_only_admins_reach_the_support_access_page_and_viewers_see_their_own_pupils(school_with_pupils, make, client, auth):
    school, admin = school_with_pupils
    viewer = make.user(Role.school_viewer, school)
    db.session.commit()
    auth.login(viewer)
    assert client.get(f"/schools/{school.id}/support-access").status_code == 404
    page = client.get(f"/schools/{school.id}/pupils")
    assert page.status_code == 200 and "Pupil0" in page.data.decode()
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "store.pupils_viewed")).scalar_one()
    assert entry.details["viewer"] == "school" and "Pupil0" not in str(entry.details)
