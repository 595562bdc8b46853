"""Groupcall provider answers over real HTTP: withdrawn field scopes, "scope" errors, revocation confirmed, hosts (R61)."""
from __future__ import annotations

import pytest

from portal.connectors import ConnectorError
from portal_groupcall.client import GroupcallClient
from portal_groupcall.sandbox import DEFAULT_SCOPES


def _orders(kit):
    from portal.extensions import db
    from portal.models import DeletionOrder, PermissionWithdrawal

    db.session.expire_all()
    return (db.session.execute(db.select(DeletionOrder)).scalars().all(),
            db.session.execute(db.select(PermissionWithdrawal)).scalars().all())


def test_withdrawn_field_scopes_leave_stored_values_alone(kit):
    """Spec §3.3: fields of a withdrawn scope are left out, not null; the store keeps UPNs, dates of birth, roles."""
    assert kit.run("full").status.value == "succeeded"
    served = kit.served
    served.sandbox.set_scopes(served.estab, set(DEFAULT_SCOPES) - {"UPN", "StudentExtended", "StudentFunding",
                                                                    "StudentFamily", "StaffEmployment"})
    run = kit.run("full")
    assert run.status.value == "succeeded", (run.error_code, run.error_message)
    withheld = {(o["category"], tuple(o["fields"])) for o in run.stats["outcomes"] if o["code"] == "fields_withheld"}
    assert ("student_basic", ("upn",)) in withheld and ("staff_basic", ("roles",)) in withheld
    for category in ("student_basic", "student_demographics", "staff_basic"):
        assert run.stats["categories"][category]["updated"] == 0, category
    kit.assert_store_matches()
    assert kit.connection().state.value == "approved"
    orders, withdrawals = _orders(kit)
    tracked = {w.permission for w in withdrawals if w.restored_at is None}
    assert {"student_basic:upn", "staff_basic:roles"} <= tracked
    # R31: each withdrawn field set has its order, for exactly its columns; no order deletes a whole category.
    assert all(o.fields for o in orders) and all(o.reason == "permission_withdrawn" for o in orders)
    scheduled = {(tuple(o.categories), tuple(o.fields)) for o in orders}
    assert {(("student_basic",), ("upn",)), (("staff_basic",), ("roles",)),
            (("student_demographics",), ("fsm", "fsm_ever6", "pupil_premium"))} <= scheduled
    # The school grants the scopes again: the withdrawals close, their orders are cancelled, values read as before.
    served.sandbox.set_scopes(served.estab, DEFAULT_SCOPES)
    assert kit.run("full").status.value == "succeeded"
    orders, withdrawals = _orders(kit)
    assert all(w.restored_at is not None for w in withdrawals)
    assert all(o.cancelled_at is not None and o.completed_at is None for o in orders)
    kit.assert_store_matches()


def test_r31_a_withdrawn_field_scope_is_cleared_on_its_order_s_date_rows_kept(kit):
    """Over real HTTP: UPN scope withdrawn, the order clears every stored UPN on its date; pupils and their rest stay."""
    from sqlalchemy import func, select

    from portal.extensions import db
    from portal.models import MisPupil, RetentionProof
    from portal.retention.preview import preview
    from portal.retention.sweep import run_sweep

    assert kit.run("full").status.value == "succeeded"
    served = kit.served
    served.sandbox.set_scopes(served.estab, set(DEFAULT_SCOPES) - {"UPN"})
    assert kit.run("full").status.value == "succeeded"
    [order] = _orders(kit)[0]
    assert (order.categories, order.fields) == (["student_basic"], ["upn"])
    pupils = select(func.count()).select_from(MisPupil).where(MisPupil.deleted_at.is_(None))
    live = db.session.scalar(pupils)
    with_upn = db.session.scalar(pupils.where(MisPupil.upn.is_not(None)))
    assert with_upn > 0
    [line] = [l for l in preview(order.trigger_on, (order.due_on - order.trigger_on).days) if l.fields]
    assert (line.category, line.fields, line.count, line.due_on) == ("student_basic", "UPN", live, order.due_on)
    run_sweep(as_of=order.due_on)
    db.session.expire_all()
    assert db.session.scalar(pupils) == live, "the pupils stay"
    assert db.session.scalar(pupils.where(MisPupil.upn.is_not(None))) == 0
    assert db.session.scalar(pupils.where(MisPupil.date_of_birth.is_not(None))) > 0
    proof = db.session.execute(select(RetentionProof).where(RetentionProof.order_id == order.id)).scalar_one()
    assert proof.counts == {"student_basic:upn": live}


def test_a_scope_error_text_never_revokes(kit):
    """A 200 answer carrying "Scope not authorised" on one read, scopes still granted: a refusal, not a revocation."""
    assert kit.run("full").status.value == "succeeded"
    kit.served.sandbox.add_fault("scope_error_in_200", "/StudentExclusions", times=100_000)
    run = kit.run("full")
    assert run.status.value == "succeeded", (run.error_code, run.error_message)
    assert ("student_attendance_exclusions", "access_refused") in [(o["category"], o["code"]) for o in run.stats["outcomes"]]
    assert kit.connection().state.value == "approved" and _orders(kit) == ([], [])
    kit.assert_store_matches()


def test_r5_revocation_is_confirmed_by_gettoken_before_the_connection_is_revoked(kit):
    assert kit.run("full").status.value == "succeeded"
    sandbox = kit.served.sandbox
    sandbox.revoke(kit.served.estab)
    before = sandbox.count("/GetToken")
    run = kit.run("full")
    assert (run.error_kind.value, run.error_code) == ("school_action", "authorisation_lost")
    assert sandbox.count("/GetToken") - before >= 2, "GetToken refused the stored secret twice before anything changed"
    assert kit.connection().state.value == "revoked"


@pytest.mark.parametrize("base_url, insecure", [
    ("https://xporter.groupcall.example", False),
    ("http://10.0.0.5", True),  # plain http only to a loopback sandbox, whatever the setting says
    ("http://xporter.groupcall.com", True),
])
def test_r61_groupcall_hosts_come_from_an_allowlist(base_url, insecure):
    with pytest.raises(ConnectorError):
        GroupcallClient(base_url=base_url, relying_party="rp", estab="3281101", school_secret="s",
                        allow_insecure_http=insecure)
    allowed = GroupcallClient(base_url="https://xporter.groupcall.example", relying_party="rp", estab="3281101",
                              school_secret="s", allowed_hosts=["xporter.groupcall.example"])
    assert allowed.api_base.startswith("https://xporter.groupcall.example")
