"""Connections page, terms (R2), authorise (R1) and revoke (R4, R6) through the real forms."""
from __future__ import annotations

from sqlalchemy import func, select

from portal.extensions import db
from portal.models import (
    AccessRequest,
    AuditEntry,
    Connection,
    ConnectionState,
    JobRun,
    Role,
    RunStatus,
    TermsAcceptance,
)
from tests.school import helpers


def _admin(make):
    school = make.school()
    admin = make.user(Role.school_admin, school)
    db.session.commit()
    return school, admin


def _accept_terms(client, school):
    return client.post(f"/schools/{school.id}/terms", data={"version": "2025-09", "accept": "y"})


def test_connections_page_lists_connector_state(app, client, make, auth):
    school, admin = _admin(make)
    auth.login(admin)
    page = client.get(f"/schools/{school.id}/connections").get_data(as_text=True)
    assert "Fake MIS" in page
    assert 'data-state="not_connected"' in page
    assert "accept the current terms" in page


def test_r2_terms_form_without_tick_shows_error_and_stores_nothing(app, client, make, auth):
    school, admin = _admin(make)
    auth.login(admin)
    resp = client.post(f"/schools/{school.id}/terms", data={"version": "2025-09"})
    assert resp.status_code == 400
    assert "Tick the box to accept the terms." in resp.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(TermsAcceptance)) == 0


def test_r2_terms_for_an_old_version_are_refused(app, client, make, auth):
    school, admin = _admin(make)
    auth.login(admin)
    resp = client.post(f"/schools/{school.id}/terms", data={"version": "2024-01", "accept": "y"})
    assert resp.status_code == 400
    assert "no longer current" in resp.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(TermsAcceptance)) == 0


def test_r2_terms_acceptance_stores_version_user_and_time(app, client, make, auth):
    school, admin = _admin(make)
    auth.login(admin)
    assert _accept_terms(client, school).status_code == 302
    acc = db.session.execute(select(TermsAcceptance)).scalar_one()
    assert (acc.school_id, acc.version, acc.user_id) == (school.id, "2025-09", admin.id)
    assert acc.accepted_at is not None
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "terms.accepted")).scalar_one()
    assert entry.actor_user_id == admin.id and entry.details == {"version": "2025-09"}


def test_r2_authorise_without_terms_is_refused_and_creates_no_connection(app, client, make, auth):
    school, admin = _admin(make)
    auth.login(admin)
    resp = client.post(
        f"/schools/{school.id}/connections/fake/authorise",
        data={"contact_name": "Head", "contact_email": "head@school.example"},
    )
    assert resp.status_code == 400
    assert "Accept the current terms before you authorise a connection." in resp.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Connection)) == 0


def test_authorise_with_bad_email_shows_error_and_changes_nothing(app, client, make, auth):
    school, admin = _admin(make)
    auth.login(admin)
    _accept_terms(client, school)
    resp = client.post(
        f"/schools/{school.id}/connections/fake/authorise", data={"contact_name": "", "contact_email": "not-an-email"}
    )
    page = resp.get_data(as_text=True)
    assert resp.status_code == 400
    assert "There is a problem" in page
    assert "Enter the name of the person the provider should contact." in page
    assert "Enter an email address in the correct format" in page
    assert db.session.scalar(select(func.count()).select_from(Connection)) == 0
    assert db.session.scalar(select(func.count()).select_from(AccessRequest)) == 0


def test_r1_authorise_requests_access_and_shows_pending(app, client, make, auth):
    school, admin = _admin(make)
    auth.login(admin)
    _accept_terms(client, school)
    resp = client.post(
        f"/schools/{school.id}/connections/fake/authorise",
        data={"contact_name": "Head Teacher", "contact_email": "head@school.example"},
    )
    assert resp.status_code == 302
    conn = db.session.execute(select(Connection)).scalar_one()
    assert conn.state == ConnectionState.pending
    assert conn.state_changed_by_id == admin.id
    req = db.session.execute(select(AccessRequest)).scalar_one()
    assert (req.requested_by_id, req.contact_email, req.terms_version) == (admin.id, "head@school.example", "2025-09")
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "connection.requested")).scalar_one()
    assert entry.actor_user_id == admin.id
    assert entry.details["categories"] == ["student_basic", "staff_basic"]
    assert "head@school.example" not in str(entry.details)
    page = client.get(f"/schools/{school.id}/connections").get_data(as_text=True)
    assert "Pending approval" in page


def test_r1_la_officer_and_viewer_cannot_authorise(app, client, make, auth):
    from portal.models import SubscriptionRoute

    la = make.local_authority()
    school = make.school(la=la, route=SubscriptionRoute.local_authority)
    officer = make.user(Role.la_officer, la)
    db.session.commit()
    auth.login(officer)
    assert client.get(f"/schools/{school.id}/connections").status_code == 200
    assert client.get(f"/schools/{school.id}/terms").status_code == 404
    resp = client.post(
        f"/schools/{school.id}/connections/fake/authorise", data={"contact_name": "x", "contact_email": "x@y.example"}
    )
    assert resp.status_code == 404
    assert db.session.scalar(select(func.count()).select_from(Connection)) == 0


def test_r6_revoke_confirmation_names_features_and_deletion_date(app, client, make, auth):
    from datetime import date

    from dateutil.relativedelta import relativedelta

    from portal.api.authorisations import authorise_product
    from portal.models import Feature, Product

    school, admin = _admin(make)
    helpers.connection(school)
    product = Product(name="Attendance tracker", purpose="Attendance reporting")
    product.features.append(db.session.get(Feature, "attendance_reporting"))
    db.session.add(product)
    db.session.flush()
    authorise_product(school, product, admin)
    db.session.commit()
    auth.login(admin)
    page = client.get(f"/schools/{school.id}/connections/fake/revoke").get_data(as_text=True)
    assert db.session.get(Feature, "attendance_reporting").name in page
    assert "stays lawful" in page
    expected = date.today() + relativedelta(months=6)
    assert expected.strftime("%-d %B %Y") in page


def test_r4_revoke_without_confirmation_shows_errors_and_changes_nothing(app, client, make, auth):
    school, admin = _admin(make)
    conn = helpers.connection(school)
    db.session.commit()
    auth.login(admin)
    resp = client.post(f"/schools/{school.id}/connections/fake/revoke", data={})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 400
    assert "Choose what should happen to the data already held." in page
    assert "Tick the box to confirm you want to revoke the connection." in page
    db.session.refresh(conn)
    assert conn.state == ConnectionState.approved


def test_r4_revoke_stops_runs_at_once_and_records_who(app, client, make, auth):
    from portal import mail

    school, admin = _admin(make)
    conn = helpers.connection(school)
    queued = helpers.run(conn, RunStatus.queued)
    running = helpers.run(conn, RunStatus.running, ago=__import__("datetime").timedelta(minutes=5))
    done = helpers.run(conn, RunStatus.succeeded, ago=__import__("datetime").timedelta(days=1))
    db.session.commit()
    auth.login(admin)
    resp = client.post(f"/schools/{school.id}/connections/fake/revoke", data={"deletion": "keep", "confirm": "y"})
    assert resp.status_code == 302
    db.session.expire_all()
    assert conn.state == ConnectionState.revoked and conn.state_changed_by_id == admin.id
    assert not conn.can_extract
    assert db.session.get(JobRun, queued.id).status == RunStatus.cancelled
    assert db.session.get(JobRun, running.id).status == RunStatus.cancelled
    assert db.session.get(JobRun, done.id).status == RunStatus.succeeded
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "connection.revoked")).scalar_one()
    assert entry.actor_user_id == admin.id and entry.details["delete_now"] is False
    sent = list(mail.outbox_dir().glob("*.eml"))
    assert len(sent) == 1
    assert "revoked" in sent[0].read_text()


def test_r9_history_shows_authorise_revoke_reauthorise_in_order(app, client, make, auth):
    school, admin = _admin(make)
    auth.login(admin)
    _accept_terms(client, school)
    form = {"contact_name": "Head", "contact_email": "head@school.example"}
    client.post(f"/schools/{school.id}/connections/fake/authorise", data=form)
    client.post(f"/schools/{school.id}/connections/fake/revoke", data={"deletion": "keep", "confirm": "y"})
    client.post(f"/schools/{school.id}/connections/fake/authorise", data=form)
    page = client.get(f"/schools/{school.id}/history").get_data(as_text=True)
    first = page.index('data-action="connection.requested"')
    revoked = page.index('data-action="connection.revoked"')
    second = page.index('data-action="connection.requested"', first + 1)
    # Newest first: the re-authorisation, then the revocation, then the first authorisation.
    assert first < revoked < second
    assert admin.name in page


def test_r7_revoke_with_deletion_now_schedules_it_and_r32_reapproval_cancels_the_clock(app, client, make, auth):
    from portal import lifecycle
    from portal.models.retention import DeletionOrder

    school, admin = _admin(make)
    now_conn = helpers.connection(school)
    later_conn = helpers.connection(school, connector="other")
    db.session.commit()
    auth.login(admin)
    client.post(f"/schools/{school.id}/connections/fake/revoke", data={"deletion": "now", "confirm": "y"})
    order = db.session.execute(select(DeletionOrder).where(DeletionOrder.connection_id == now_conn.id)).scalar_one()
    assert order.rule_id == "R32-now" and order.requested_by_id == admin.id
    lifecycle.revoke(later_conn, admin, delete_now=False)
    later = db.session.execute(select(DeletionOrder).where(DeletionOrder.connection_id == later_conn.id)).scalar_one()
    assert later.rule_id == "R32" and later.cancelled_at is None
    later_conn.state = ConnectionState.pending  # re-requested; the provider approves again
    db.session.commit()
    lifecycle.mark_approved(later_conn, "provider")
    db.session.refresh(later)
    assert later.cancelled_at is not None
