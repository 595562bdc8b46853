"""Provider answers over real HTTP (Wonde sandbox): region (R64), transport (R61), refusals, absent fields."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from portal.connectors import ConnectorError
from portal.extensions import db
from portal.extract import run_extract
from portal.models import ConnectionState, DeletionOrder, ExtractWatermark, PermissionWithdrawal, RunStatus
from portal_wonde.client import WondeClient
from portal_wonde.connector import WondeConnector


def _data_requests(sandbox) -> list:
    return [r for r in sandbox.requests(f"/schools/{sandbox.school_id()}/") if r.method == "GET"]


def _no_orders(kit) -> bool:
    db.session.expire_all()
    return (db.session.execute(db.select(DeletionOrder)).first() is None
            and db.session.execute(db.select(PermissionWithdrawal)).first() is None)


@pytest.mark.parametrize("region", [
    {"code": "AUS", "domain": "api-ap-southeast-2.wonde.com"},
    {"code": "ZAF", "domain": "api-af-south-1.wonde.com"},
    {"code": "GBR", "domain": "api-ap-southeast-2.wonde.com"},  # a non-UK domain is refused whatever the code says
])
def test_r64_a_school_outside_the_uk_region_is_refused_before_any_data_request(wonde, region):
    sandbox = wonde.served.sandbox
    sandbox.regions[sandbox.school_id()] = region
    run = run_extract(wonde.connection_id, mode="full")
    assert run.status == RunStatus.failed and run.error_code == "region_not_uk"
    assert region["domain"] in run.error_message
    assert not _data_requests(sandbox), "no data was asked for"
    assert wonde.connection().state == ConnectionState.approved and _no_orders(wonde)
    # Refused at connect too, with the region named.
    connector = WondeConnector(wonde.served.settings)
    with pytest.raises(ConnectorError) as caught:
        connector.request_access(wonde.connection().school)
    assert caught.value.code == "region_not_uk" and region["domain"] in caught.value.message
    assert not sandbox.requests("/request-access")


def test_r61_the_token_never_goes_over_plain_http_to_a_public_region_domain(wonde):
    sandbox = wonde.served.sandbox
    # A UK school whose region points at the real UK domain while the portal talks plain HTTP to a sandbox.
    sandbox.regions[sandbox.school_id()] = {"code": "GBR", "domain": "api.wonde.com"}
    run = run_extract(wonde.connection_id, mode="full")
    assert run.status == RunStatus.failed and "Plain HTTP" in run.error_message
    assert not _data_requests(sandbox)
    assert wonde.connection().state != ConnectionState.revoked


@pytest.mark.parametrize("url", ["https://wonde.example.net/v1.0", "https://api.wonde.com.evil.example/v1.0"])
def test_r61_only_allowed_hosts_receive_the_token(url):
    with pytest.raises(ConnectorError, match="not an allowed Wonde host"):
        WondeClient(url, "t" * 40)
    host = url.split("/")[2]
    assert WondeClient(url, "t" * 40, allowed_hosts=[host]).host == host


def test_a_refusal_wonde_cannot_confirm_changes_nothing(wonde):
    """The permissions endpoint is missing (it is [SPEC] only): a 403 stays a refusal, never a withdrawal."""
    sandbox = wonde.served.sandbox
    assert run_extract(wonde.connection_id, mode="full").status == RunStatus.succeeded
    sandbox.permissions_endpoint = False
    sandbox.withhold(sandbox.school_id(), "exclusions")
    run = run_extract(wonde.connection_id, mode="full")
    assert run.status == RunStatus.succeeded
    assert [(o["category"], o["code"], o["confirmed"]) for o in run.stats["outcomes"]] == [
        ("student_attendance_exclusions", "access_refused", False)]
    assert wonde.connection().state == ConnectionState.approved and _no_orders(wonde)
    wonde.assert_store_matches()


def test_a_wrong_token_is_not_a_revocation(wonde):
    sandbox = wonde.served.sandbox
    assert run_extract(wonde.connection_id, mode="full").status == RunStatus.succeeded
    sandbox.token = "a-different-token"  # every request now answers 401
    run = run_extract(wonde.connection_id, mode="full")
    assert run.status == RunStatus.failed and run.error_code != "authorisation_lost"
    assert wonde.connection().state in (ConnectionState.approved, ConnectionState.failing) and _no_orders(wonde)
    wonde.assert_store_matches()


def test_fields_wonde_leaves_out_are_not_written_as_null(wonde):
    sandbox = wonde.served.sandbox
    assert run_extract(wonde.connection_id, mode="full").status == RunStatus.succeeded
    sandbox.withhold_fields(sandbox.school_id(), "upn", "date_of_birth", "ethnicity", "free_school_meals", "sen_status")
    run = run_extract(wonde.connection_id, mode="full")
    assert run.status == RunStatus.succeeded, run.error_message
    assert run.stats["categories"]["student_basic"]["updated"] == 0
    assert run.stats["categories"]["student_demographics"]["updated"] == 0
    wonde.assert_store_matches()  # every UPN, date of birth and census value is still the school's


def test_a_withdrawn_permission_is_deleted_on_its_order_s_date_with_a_proof(wonde):
    """The order for a withdrawn category goes through the normal sweep: exactly that data, a proof, the order done."""
    from portal.models import MisAssessmentResult, MisPupil, RetentionProof
    from portal.retention.sweep import run_sweep

    sandbox = wonde.served.sandbox
    assert run_extract(wonde.connection_id, mode="full").status == RunStatus.succeeded
    sandbox.withhold(sandbox.school_id(), "assessment")
    run = run_extract(wonde.connection_id, mode="full")
    assert ("student_assessment", "permission_missing", True) in [
        (o["category"], o["code"], o["confirmed"]) for o in run.stats["outcomes"]]
    order = db.session.execute(db.select(DeletionOrder)).scalar_one()
    assert (order.categories, order.reason, order.connection_id) == (["student_assessment"], "permission_withdrawn",
                                                                     wonde.connection_id)
    results = db.select(db.func.count()).select_from(MisAssessmentResult).where(
        MisAssessmentResult.connection_id == wonde.connection_id)
    pupils = db.select(db.func.count()).select_from(MisPupil).where(MisPupil.connection_id == wonde.connection_id)
    assert db.session.scalar(results) > 0
    live_pupils = db.session.scalar(pupils)
    run_sweep(as_of=order.trigger_on)  # not due yet: nothing goes
    assert db.session.scalar(results) > 0
    run_sweep(as_of=order.due_on)
    db.session.expire_all()
    assert db.session.scalar(results) == 0
    assert db.session.scalar(pupils) == live_pupils, "only the withdrawn category was deleted"
    assert db.session.get(DeletionOrder, order.id).completed_at is not None
    assert db.session.execute(db.select(RetentionProof).where(RetentionProof.order_id == order.id)).first()
    assert wonde.connection().state == ConnectionState.approved


def test_a_refused_category_keeps_its_watermark_so_the_next_run_asks_again(wonde):
    from portal.extract import plan

    sandbox = wonde.served.sandbox
    assert run_extract(wonde.connection_id, mode="full").status == RunStatus.succeeded
    before = {c: m.watermark for c, m in plan.watermarks(wonde.connection()).items()}
    wonde.mutate(datetime.now(timezone.utc).replace(microsecond=0), marks=3)
    sandbox.add_fault(match=f"/schools/{sandbox.school_id()}/exclusions", status=403, times=None)
    sandbox.clear_log()
    run = run_extract(wonde.connection_id, mode="incremental")
    assert run.status == RunStatus.succeeded
    window = {r.param("updated_after") for r in sandbox.requests() if r.path.endswith("/attendance/session")}
    after = {c: m.watermark for c, m in plan.watermarks(wonde.connection()).items()}
    # The marks were read, but the exclusions were not: the category's watermark does not move.
    assert after["student_attendance_exclusions"] == before["student_attendance_exclusions"]
    sandbox.clear_faults()
    sandbox.clear_log()
    again = run_extract(wonde.connection_id, mode="incremental")
    assert again.status == RunStatus.succeeded and not again.stats["outcomes"]
    # The next run asks for the exclusions from where the refused run had to (the same window), and the
    # watermark never goes back. (It moves on once the provider's clock has: these runs may share a second.)
    asked = {r.param("updated_after") for r in sandbox.requests() if r.path.endswith("/exclusions")}
    assert len(window) == 1 and asked == window
    assert plan.watermarks(wonde.connection())["student_attendance_exclusions"].watermark >= before[
        "student_attendance_exclusions"]
    wonde.assert_store_matches()


def test_a_category_the_school_does_not_grant_leaves_the_other_categories_incremental(wonde):
    sandbox = wonde.served.sandbox
    sandbox.withhold(sandbox.school_id(), "exclusions")
    assert run_extract(wonde.connection_id, mode="full").status == RunStatus.succeeded
    wonde.mutate(datetime.now(timezone.utc).replace(microsecond=0), updated=2)
    night = run_extract(wonde.connection_id)
    # The withheld category has no watermark (nothing of it was read), and that no longer makes every run full.
    assert (night.status, night.params["mode"]) == (RunStatus.succeeded, "incremental"), night.params.get("mode_reason")
    assert night.stats["since"]["student_attendance_exclusions"] is None
    assert night.stats["since"]["student_basic"] is not None
    assert [(o["category"], o["code"]) for o in night.stats["outcomes"]] == [
        ("student_attendance_exclusions", "permission_missing")]
    # Granted again: that category is read whole in the next incremental run, and has a watermark from then on.
    sandbox.grant(sandbox.school_id(), "exclusions")
    back = run_extract(wonde.connection_id)
    assert (back.status, back.params["mode"], back.stats["outcomes"]) == (RunStatus.succeeded, "incremental", [])
    wonde.assert_store_matches()
    marks = set(db.session.scalars(select(ExtractWatermark.category).where(
        ExtractWatermark.connection_id == wonde.connection_id)))
    assert "student_attendance_exclusions" in marks
    assert run_extract(wonde.connection_id).stats["since"]["student_attendance_exclusions"] is not None
