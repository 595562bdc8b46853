"""The purpose check: matrix pairs, product authorisation, features of the product, credentials, errors and rate limits."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from portal.api import authorisations, credentials
from portal.api.products import ProductInvalid, register_product
from portal.extensions import db
from portal.models import ApiCredential, AuditEntry, FeatureGrant
from portal.models.base import utcnow
from tests import api_support as s

MATRIX = s.matrix()
FEATURES = [f["id"] for f in MATRIX["features"]]
CATEGORIES = [c["id"] for c in MATRIX["categories"]]


def _a_record_type(category: str) -> str:
    from portal import store

    return sorted(name for name, (_, cat) in store.api_record_types().items() if cat == category)[0]


def _refusals(code: str) -> list[AuditEntry]:
    return [e for e in db.session.execute(select(AuditEntry).where(AuditEntry.action == "api.read_refused")).scalars()
            if e.details.get("code") == code]


@pytest.mark.parametrize("feature", FEATURES)
def test_r11_each_matrix_pair_is_allowed_or_refused_as_the_json_says(app, client, make, feature):
    granted = next(f["categories"] for f in MATRIX["features"] if f["id"] == feature)
    p = s.product(feature)
    school, _ = s.connected_school(make, p)
    token = s.token_for(p)
    for category in CATEGORIES:
        resp = s.get(client, token, s.records_path(feature, school.id, category, _a_record_type(category)))
        if category in granted:
            assert resp.status_code == 200, (feature, category, resp.json)
            assert resp.json["category"] == category
        else:
            assert resp.status_code == 403, (feature, category)
            assert resp.json["error"]["code"] == "category_not_granted"
            assert resp.json["error"]["category"] == category
    refused = _refusals("category_not_granted")
    assert sorted(e.details["category"] for e in refused) == sorted(set(CATEGORIES) - set(granted))
    assert all(e.organisation_id == school.id and e.details["feature"] == feature for e in refused)


def test_r14_user_provisioning_never_reads_timetable_even_for_group_names(app, client, make):
    p = s.product("user_provisioning")
    school, _ = s.connected_school(make, p)
    token = s.token_for(p)
    for record_type in ("groups", "subjects", "memberships", "lessons"):
        resp = s.get(client, token, s.records_path("user_provisioning", school.id, "student_timetable", record_type))
        assert resp.status_code == 403
        assert resp.json["error"] == {"code": "category_not_granted", "category": "student_timetable",
                                      "feature": "user_provisioning",
                                      "message": "The feature user_provisioning is not granted the category student_timetable."}


def test_r3_a_product_sees_only_schools_that_authorise_it(app, client, make):
    a = s.product("attendance_reporting", name="Product A")
    b = s.product("attendance_reporting", name="Product B")
    school, _ = s.connected_school(make, a)
    other, _ = s.connected_school(make)
    token_a, token_b = s.token_for(a), s.token_for(b)
    path = s.records_path("attendance_reporting", school.id, "student_basic", "pupils")
    assert s.get(client, token_a, path).status_code == 200
    refused = s.get(client, token_b, path)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "school_not_authorised"
    assert len(_refusals("school_not_authorised")) == 1
    listed = s.get(client, token_a, "/features/attendance_reporting/schools").json
    assert [x["id"] for x in listed["schools"]] == [school.id]
    assert other.id not in [x["id"] for x in listed["schools"]]
    assert listed["categories"] == ["student_attendance_exclusions", "student_basic", "student_demographics"]
    assert s.get(client, token_b, "/features/attendance_reporting/schools").json["schools"] == []


def test_r4_revoking_the_product_takes_effect_on_the_next_request(app, client, make):
    p = s.product("pupil_tracking")
    school, _ = s.connected_school(make, p)
    token = s.token_for(p)
    path = s.records_path("pupil_tracking", school.id, "student_basic", "pupils")
    assert s.get(client, token, path).status_code == 200
    authorisations.revoke_product(school, p, None)
    db.session.commit()
    resp = s.get(client, token, path)
    assert resp.status_code == 403 and resp.json["error"]["code"] == "school_not_authorised"
    assert s.get(client, token, "/features/pupil_tracking/schools").json["schools"] == []
    # Authorising again gives access again; history keeps both rows.
    authorisations.authorise_product(school, p, None)
    db.session.commit()
    assert s.get(client, token, path).status_code == 200


def test_r12_a_credential_calls_only_as_its_products_features(app, client, make):
    p = s.product("attendance_reporting")
    school, _ = s.connected_school(make, p)
    token = s.token_for(p)
    resp = s.get(client, token, s.records_path("pupil_tracking", school.id, "student_basic", "pupils"))
    assert resp.status_code == 403
    assert resp.json["error"]["code"] == "feature_not_of_product"
    assert s.get(client, token, "/features/pupil_tracking/schools").status_code == 403
    assert len(_refusals("feature_not_of_product")) == 2


@pytest.mark.parametrize(
    "name, purpose, features, location, field",
    [
        ("X", "Analyse.", ["not_a_feature"], "UK", "features"),
        ("X", "  ", ["pupil_tracking"], "UK", "purpose"),
        ("X", "Analyse.", [], "UK", "features"),
        ("X", "Analyse.", ["pupil_tracking"], "IE", "processing_location"),
        ("", "Analyse.", ["pupil_tracking"], "UK", "name"),
    ],
)
def test_r12_registering_an_invalid_product_fails_and_creates_nothing(app, name, purpose, features, location, field):
    from portal.api.products import validation_problems
    from portal.models import Product

    assert field in validation_problems(name, purpose, features, location)
    with pytest.raises(ProductInvalid):
        register_product(name, purpose, features, location)
    db.session.rollback()
    assert db.session.execute(select(Product)).first() is None


def test_r12_revoked_expired_and_rotated_credentials(app, client, make):
    p = s.product("pupil_tracking")
    s.connected_school(make, p)
    credential, token = credentials.issue(p)
    db.session.commit()
    path = "/features/pupil_tracking/schools"
    assert s.get(client, token, path).status_code == 200
    stored = db.session.get(ApiCredential, credential.id)
    assert token not in (stored.token_hash, stored.prefix) and stored.token_hash == credentials.hash_token(token)

    new, new_token = credentials.rotate(stored, grace=timedelta(hours=1))
    db.session.commit()
    assert s.get(client, token, path).status_code == 200  # still inside the grace period
    assert s.get(client, new_token, path).status_code == 200
    stored.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    expired = s.get(client, token, path)
    assert expired.status_code == 401 and expired.json["error"]["code"] == "invalid_credential"

    credentials.revoke(new)
    db.session.commit()
    revoked = s.get(client, new_token, path)
    assert revoked.status_code == 401 and revoked.json["error"]["code"] == "invalid_credential"
    assert "WWW-Authenticate" in revoked.headers


def test_r15_a_grant_counts_from_its_effective_date_and_removal_is_immediate(app, client, make):
    p = s.product("user_provisioning")
    school, _ = s.connected_school(make, p)
    token = s.token_for(p)
    path = s.records_path("user_provisioning", school.id, "student_timetable", "groups")
    grant = FeatureGrant(feature_id="user_provisioning", category_id="student_timetable", matrix_version=2,
                         effective_from=date.today() + timedelta(days=1), reason="Class tagging (R14).")
    db.session.add(grant)
    db.session.commit()
    assert s.get(client, token, path).status_code == 403
    grant.effective_from = date.today()
    db.session.commit()
    assert s.get(client, token, path).status_code == 200
    db.session.delete(grant)
    db.session.commit()
    assert s.get(client, token, path).status_code == 403


def test_errors_are_json_with_stable_codes(app, client, make):
    p = s.product("pupil_tracking")
    school, _ = s.connected_school(make, p)
    token = s.token_for(p)
    base = s.records_path("pupil_tracking", school.id, "student_basic", "pupils")
    cases = [
        (s.get(client, None, base), 401, "unauthenticated"),
        (s.get(client, "mpa_not-a-real-token", base), 401, "invalid_credential"),
        (s.get(client, token, base, limit="0"), 400, "invalid_parameter"),
        (s.get(client, token, base, limit="abc"), 400, "invalid_parameter"),
        (s.get(client, token, base, updated_since="yesterday"), 400, "invalid_parameter"),
        (s.get(client, token, base, updated_since="2025-09-01T00:00:00"), 400, "invalid_parameter"),
        (s.get(client, token, base, cursor="tampered"), 400, "invalid_cursor"),
        (s.get(client, token, s.records_path("pupil_tracking", school.id, "student_basic", "staff")), 404, "unknown_record_type"),
        (s.get(client, token, s.records_path("pupil_tracking", school.id, "no_such", "pupils")), 404, "unknown_category"),
        (s.get(client, token, "/nowhere"), 404, "not_found"),
        (client.post(f"/api/v1{base}", headers={"Authorization": f"Bearer {token}"}), 405, "method_not_allowed"),
    ]
    for resp, status, code in cases:
        assert (resp.status_code, resp.json["error"]["code"]) == (status, code), resp.json
        assert resp.mimetype == "application/json"
        assert resp.json["error"]["message"]


def test_a_cursor_from_another_feed_is_refused(app, client, make):
    p = s.product("pupil_tracking")
    school, connection = s.connected_school(make, p)
    s.write(connection, s.pupils(3))
    token = s.token_for(p)
    first = s.get(client, token, s.records_path("pupil_tracking", school.id, "student_basic", "pupils"), limit=1).json
    other = s.get(client, token, s.records_path("pupil_tracking", school.id, "student_demographics", "demographics"),
                  cursor=first["next_cursor"])
    assert other.status_code == 400 and other.json["error"]["code"] == "invalid_cursor"


def test_rate_limits_apply_per_credential(make_app, make):
    app = make_app(RATELIMIT_ENABLED=True, API_RATE_LIMIT="2 per minute")
    with app.app_context():
        client = app.test_client()
        p = s.product("pupil_tracking")
        s.connected_school(make, p)
        first, second = s.token_for(p), s.token_for(p)
        path = "/features/pupil_tracking/schools"
        assert [s.get(client, first, path).status_code for _ in range(2)] == [200, 200]
        limited = s.get(client, first, path)
        assert limited.status_code == 429
        assert limited.json["error"]["code"] == "rate_limited"
        assert s.get(client, second, path).status_code == 200


def test_r67_every_api_endpoint_returning_pupil_data_names_its_lawful_route(app):
    from portal.api.inventory import PURPOSES, pupil_data_endpoints, returns_pupil_data

    tagged = pupil_data_endpoints(app)
    assert set(tagged.values()) <= PURPOSES
    assert tagged["api.records"] == "authorised_product"
    assert tagged["api.deletion_notices"] == "authorised_product"  # R42: ids the product received
    # The only API endpoints without pupil data: the document, the list of schools and acknowledgements (counts).
    api_endpoints = {r.endpoint for r in app.url_map.iter_rules() if r.rule.startswith("/api/")}
    assert api_endpoints - set(tagged) == {"api.openapi", "api.schools", "api.acknowledge_deletions"}
    with pytest.raises(ValueError):
        returns_pupil_data("marketing")


def test_credentials_can_be_issued_and_revoked_from_the_command_line(app, client, make):
    p = s.product("pupil_tracking", name="CLI Tracker")
    s.connected_school(make, p)
    db.session.commit()
    runner = app.test_cli_runner()
    issued = runner.invoke(args=["portal", "api", "issue", "--product", "cli tracker", "--days", "7"])
    assert issued.exit_code == 0, issued.output
    token = issued.output.strip().splitlines()[-1]
    assert s.get(client, token, "/features/pupil_tracking/schools").status_code == 200
    credential_id = db.session.execute(select(ApiCredential.id)).scalar_one()
    assert runner.invoke(args=["portal", "api", "revoke", str(credential_id)]).exit_code == 0
    assert s.get(client, token, "/features/pupil_tracking/schools").status_code == 401
    unknown = runner.invoke(args=["portal", "api", "issue", "--product", "Nope"])
    assert unknown.exit_code != 0 and "no product" in unknown.output
