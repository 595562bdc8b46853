"""A withdrawn field set (R31-grant, R42): an order clears exactly those columns on its date, rows kept, products told."""
from __future__ import annotations

import json
from datetime import date, timedelta

from sqlalchemy import select

from portal import permissions
from portal.api import authorisations
from portal.extensions import db
from portal.models import AuditEntry, Connection, DeletionOrder, Organisation, RetentionProof, Role
from portal.models.deletions import DeletionNotice
from portal.models.mis import MisAttendanceMark, MisDemographics, MisPupil
from portal.retention import orders
from portal.retention.calendar import london_date
from portal.retention.preview import preview
from portal.retention.sweep import run_sweep
from tests import api_support as s
from tests.conftest import Auth
from tests.test_retention import world, zero_window_app  # noqa: F401  (fixtures)

FEATURE = "attendance_reporting"  # reads pupils and attendance


def _school(world):
    conn = world.school()
    first = world.pupil(conn, year="1", extracted=date.today() - timedelta(days=1))
    second = world.pupil(conn, year="1", extracted=date.today() - timedelta(days=1))
    db.session.commit()
    return conn, [first.id, second.id]


def _withdraw(conn: Connection, *permissions_: str) -> list[DeletionOrder]:
    for permission in permissions_:
        permissions.withdraw(db.session.get(Connection, conn.id), permission)
    db.session.commit()
    return db.session.execute(select(DeletionOrder).order_by(DeletionOrder.id)).scalars().all()


def test_r31_a_withdrawn_field_set_schedules_an_order_for_exactly_those_columns(zero_window_app, world, make):
    conn, _ = _school(world)
    basic, demographics = _withdraw(conn, "student_basic:id,nickname,upn", "student_demographics:ethnicity,fsm")
    assert (basic.categories, basic.fields, basic.reason, basic.rule_id) == (
        ["student_basic"], ["upn"], "permission_withdrawn", orders.GRANT_RULE)
    assert basic.due_on == orders.category_deletion_date(basic.trigger_on) and basic.connection_id == conn.id
    assert (demographics.categories, demographics.fields) == (["student_demographics"], ["ethnicity", "fsm"])
    # A key column and a name the store does not have are never cleared; the audit names what was ignored.
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "retention.deletion_scheduled")
                               .order_by(AuditEntry.id)).scalars().first()
    assert entry.details["ignored_fields"] == ["id", "nickname"]
    # Nothing a store table has: tracked, but no order.
    assert _withdraw(conn, "student_basic:nickname")[-1].id == demographics.id
    # The school's Deletion page names the fields in plain words.
    client = zero_window_app.test_client()
    school = db.session.get(Organisation, conn.school_id)
    admin = make.user(Role.school_admin, school)
    db.session.commit()
    Auth(client).login(admin)
    page = client.get(f"/schools/{school.id}/retention").get_data(as_text=True)
    assert "Fields the provider no longer shares: UPN" in page


def test_r31_the_order_is_cancelled_when_the_provider_grants_the_fields_again(zero_window_app, world):
    conn, pupils = _school(world)
    [order] = _withdraw(conn, "student_basic:upn")
    assert permissions.restore(db.session.get(Connection, conn.id), "student_basic:upn") == 1
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(DeletionOrder, order.id).cancelled_at is not None
    run_sweep(as_of=order.due_on)
    assert all(db.session.get(MisPupil, p).upn for p in pupils), "a cancelled order clears nothing"


def test_r31_the_sweep_clears_exactly_those_columns_on_the_due_date_and_tells_the_products(zero_window_app, world):
    conn, pupils = _school(world)
    school = db.session.get(Organisation, conn.school_id)
    reader = s.product(FEATURE, name="Reader")
    authorisations.authorise_product(school, reader, None)
    db.session.commit()
    token = s.token_for(reader)
    client = zero_window_app.test_client()
    served = s.get(client, token, s.records_path(FEATURE, school.id, "student_basic", "pupils"), limit=100).json
    assert {r["id"] for r in served["records"]} == set(pupils)
    before = {p: (db.session.get(MisPupil, p).legal_surname, db.session.get(MisPupil, p).date_of_birth) for p in pupils}
    marks = db.session.scalar(select(db.func.count()).select_from(MisAttendanceMark))
    order, special = _withdraw(conn, "student_basic:upn", "student_demographics:ethnicity")

    # The dry run predicts it: both pupils' UPNs and both demographics rows, on the order's date.
    lines = [l for l in preview(order.trigger_on, (order.due_on - order.trigger_on).days, school_id=school.id) if l.fields]
    assert {(l.category, l.fields, l.count, l.due_on) for l in lines} == {
        ("student_basic", "UPN", 2, order.due_on), ("student_demographics", "ethnicity", 2, special.due_on)}

    run_sweep(as_of=order.due_on - timedelta(days=1))  # not due yet
    db.session.expire_all()
    assert all(db.session.get(MisPupil, p).upn for p in pupils)

    run_sweep(as_of=order.due_on)
    db.session.expire_all()
    for p in pupils:
        row = db.session.get(MisPupil, p)
        assert row is not None and row.upn is None, "the row stays, its UPN goes"
        assert (row.legal_surname, row.date_of_birth) == before[p], "other columns are left alone"
    demo = db.session.execute(select(MisDemographics).where(MisDemographics.connection_id == conn.id)).scalars().all()
    assert len(demo) == 2 and all(d.ethnicity is None and d.fsm is True for d in demo), "special category cleared too"
    assert db.session.scalar(select(db.func.count()).select_from(MisAttendanceMark)) == marks
    # Receipts and the orders done.
    for o in (order, special):
        assert db.session.get(DeletionOrder, o.id).completed_at is not None
        proof = db.session.execute(select(RetentionProof).where(RetentionProof.order_id == o.id)).scalar_one()
        assert proof.status == "done" and proof.records == 2 and proof.ids_sha256
    assert db.session.execute(select(RetentionProof.counts).where(RetentionProof.order_id == order.id)).scalar_one() == {
        "student_basic:upn": 2}
    # R42: the product that received the pupils is told to delete and refetch each of them (record scope).
    notices = db.session.execute(select(DeletionNotice).where(DeletionNotice.product_id == reader.id)).scalars().all()
    assert {(n.record_type, n.record_id, n.scope, n.reason) for n in notices} == {
        ("pupils", p, "record", "permission_withdrawn") for p in pupils}
    again = s.get(client, token, s.records_path(FEATURE, school.id, "student_basic", "pupils"), limit=100).json
    assert {r["id"]: r["fields"].get("upn") for r in again["records"]} == {p: None for p in pupils}
    # The audit holds ids and counts only.
    entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "store.fields_cleared")
                               .order_by(AuditEntry.id)).scalars().first()
    assert entry.details["columns"] == ["upn"] and entry.details["rows"] == 2


def test_r31_a_field_set_withdrawn_before_field_orders_existed_gets_its_order_from_its_own_day(zero_window_app, world):
    conn, _ = _school(world)
    connection = db.session.get(Connection, conn.id)
    withdrawal = permissions.withdraw(connection, "student_basic:upn", schedule=False)
    withdrawal.withdrawn_at = withdrawal.withdrawn_at - timedelta(days=40)
    db.session.commit()
    assert db.session.execute(select(DeletionOrder)).first() is None
    assert permissions.withdraw(connection, "student_basic:upn") is None  # the next run's confirmed answer
    db.session.commit()
    order = db.session.execute(select(DeletionOrder)).scalar_one()
    assert order.fields == ["upn"] and order.trigger_on == london_date(withdrawal.withdrawn_at) < date.today()
    assert order.due_on == orders.category_deletion_date(order.trigger_on)
    assert db.session.get(type(withdrawal), withdrawal.id).deletion_order_id == order.id
    assert permissions.withdraw(connection, "student_basic:upn") is None
    db.session.commit()
    assert len(db.session.execute(select(DeletionOrder)).all()) == 1, "no second order"


def test_r35_a_restored_backup_gets_its_cleared_fields_cleared_again_before_the_portal_serves(zero_window_app, world):
    from portal import audit
    from portal.models import LedgerState
    from portal.retention import ledger
    from tests.test_retention_ledger import backup, restore

    conn, pupils = _school(world)
    [order] = _withdraw(conn, "student_basic:upn")
    surnames = {p: db.session.get(MisPupil, p).legal_surname for p in pupils}
    taken_before_the_order_ran = backup()
    run_sweep(as_of=order.due_on)
    db.session.expire_all()
    assert all(db.session.get(MisPupil, p).upn is None for p in pupils)
    # The ledger lists the clear with its columns, keyed hashes only.
    path = ledger.ledger_path(db.session.get(LedgerState, 1).database_id)
    [line] = [json.loads(text) for text in path.read_text().splitlines()]
    assert (line["table"], line["columns"]) == ("mis_pupils", ["upn"])
    assert set(line["keys"]) == {ledger.record_key("mis_pupils", p) for p in pupils}

    restore(taken_before_the_order_ran)
    assert all(db.session.get(MisPupil, p).upn for p in pupils), "the backup brought the UPNs back"
    assert ledger.status()[0] == "behind"
    result = zero_window_app.test_cli_runner().invoke(args=["portal", "retention", "replay-ledger"])
    assert result.exit_code == 0, result.output
    assert "fields cleared again on 2 records (mis_pupils:upn)" in result.output
    db.session.expire_all()
    for p in pupils:
        row = db.session.get(MisPupil, p)
        assert row is not None and row.upn is None and row.legal_surname == surnames[p], "the rows stay, the UPNs go again"
    assert ledger.status()[0] == "ok"
    assert audit.verify().ok


def test_r35_a_ledger_line_naming_a_column_the_schema_no_longer_has_clears_the_columns_that_remain(zero_window_app, world):
    from portal.retention import ledger
    from tests.test_retention_ledger import backup, restore

    conn, pupils = _school(world)
    surnames = {p: db.session.get(MisPupil, p).legal_surname for p in pupils}
    taken = backup()
    # A line written before a migration dropped one of its columns (replay runs after the restore's upgrade).
    ledger.append({("mis_pupils", conn.school_id): pupils}, run_id=None, columns=["upn", "dropped_since"])
    db.session.commit()
    restore(taken)
    assert ledger.status()[0] == "behind"
    assert ledger.replay() == {"mis_pupils:upn": 2}
    db.session.expire_all()
    for p in pupils:
        row = db.session.get(MisPupil, p)
        assert row is not None and row.upn is None and row.legal_surname == surnames[p], "cleared, never deleted"
    assert ledger.status()[0] == "ok"
