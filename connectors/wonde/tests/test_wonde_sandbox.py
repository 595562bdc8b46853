"""The sandbox speaks Wonde's wire format over real HTTP, and can be driven over HTTP too."""
from __future__ import annotations

import base64

import pytest
import requests
from portal_wonde.sandbox import WondeSandbox


@pytest.fixture
def http(sandbox):
    """A requests session that sends the sandbox's token."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {sandbox.token}"
        yield session


def test_envelope_pagination_and_datetime_objects(sandbox, http, school):
    url = f"{sandbox.url}/schools/{sandbox.school_id()}/students"
    body = http.get(url, params={"per_page": 30, "include": "education_details"}, timeout=5).json()
    assert set(body) == {"data", "meta"}
    pagination = body["meta"]["pagination"]
    assert pagination["more"] is True and pagination["current_page"] == 1 and pagination["per_page"] == 30
    assert pagination["previous"] is None
    # The next link is absolute and keeps the query string.
    assert pagination["next"].startswith(url) and "include=education_details" in pagination["next"]
    assert body["meta"]["includes"] == ["education_details"]
    student = body["data"][0]
    assert set(student["updated_at"]) == {"date", "timezone_type", "timezone"}
    assert student["id"].startswith("A") and len(student["id"]) == 11 and len(student["upi"]) == 32
    assert isinstance(student["mis_id"], str)
    assert set(student["education_details"]) == {"data"}


def test_page_size_is_capped_per_endpoint(school):
    with WondeSandbox([school], max_per_page={"*": 200, "students": 25}) as sandbox, requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {sandbox.token}"
        base = f"{sandbox.url}/schools/{sandbox.school_id()}"
        assert http.get(f"{base}/students", params={"per_page": 500}, timeout=5).json()["meta"]["pagination"]["per_page"] == 25
        assert http.get(f"{base}/employees", params={"per_page": 500}, timeout=5).json()["meta"]["pagination"]["per_page"] == 200


def test_small_lists_without_per_page_have_no_pagination(sandbox, http):
    body = http.get(f"{sandbox.url}/schools/{sandbox.school_id()}/subjects", timeout=5).json()
    assert "meta" not in body and body["data"]


@pytest.mark.parametrize("header", ["bearer {t}", "Bearer {t}", "Basic {b}"])
def test_token_by_bearer_or_basic(sandbox, header):
    value = header.format(t=sandbox.token, b=base64.b64encode(f"{sandbox.token}:".encode()).decode())
    assert requests.get(sandbox.url, headers={"Authorization": value}, timeout=5).status_code == 200


def test_unknown_token_is_401_and_unapproved_school_is_403(sandbox, http):
    assert requests.get(sandbox.url, headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401
    sandbox.set_state(sandbox.school_id(), "pending")
    answer = http.get(f"{sandbox.url}/schools/{sandbox.school_id()}/students", timeout=5)
    assert answer.status_code == 403 and answer.json()["error"] == "forbidden"


def test_school_lists_and_filters(sandbox, http, school):
    assert [s["id"] for s in http.get(f"{sandbox.url}/schools", timeout=5).json()["data"]] == [sandbox.school_id()]
    assert http.get(f"{sandbox.url}/schools/pending", timeout=5).json()["data"] == []
    found = http.get(f"{sandbox.url}/schools/all", params={"urn": school.urn}, timeout=5).json()["data"]
    assert found[0]["urn"] == int(school.urn) and found[0]["la_code"] == "201"
    assert found[0]["region"]["domain"] == f"127.0.0.1:{sandbox.port}"
    assert http.get(f"{sandbox.url}/schools/all", params={"urn": "1"}, timeout=5).json()["data"] == []


def test_faults_mutations_and_request_log_over_http(sandbox, http, school):
    control = f"http://127.0.0.1:{sandbox.port}/__sandbox"
    assert requests.post(f"{control}/faults", json={"match": "/employees", "status": 503, "times": 1}, timeout=5).ok
    url = f"{sandbox.url}/schools/{sandbox.school_id()}/employees"
    assert [http.get(url, timeout=5).status_code for _ in range(2)] == [503, 200]
    changed = requests.post(f"{control}/schools/{sandbox.school_id()}/mutate", json={"deleted": 2}, timeout=5).json()
    assert changed["changed"]["deleted"] == 2
    deletions = http.get(f"{sandbox.url}/schools/{sandbox.school_id()}/deletions", params={"type": "student"}, timeout=5)
    assert [d["type"] for d in deletions.json()["data"]] == ["student", "student"]
    log = requests.get(f"{control}/requests", timeout=5).json()["data"]
    assert [r["status"] for r in log if r["path"].endswith("/employees")] == [503, 200]
    assert requests.post(f"{control}/schools/{sandbox.school_id()}/revoke", timeout=5).json()["state"] == "revoked"
    assert http.get(url, timeout=5).status_code == 403


def test_updated_after_filters_lists(sandbox, http, school):
    base = f"{sandbox.url}/schools/{sandbox.school_id()}"
    assert http.get(f"{base}/students", params={"updated_after": "2026-08-01 00:00:00"}, timeout=5).json()["data"] == []
    sandbox.mutate(updated=2)
    assert len(http.get(f"{base}/students", params={"updated_after": "2026-08-01"}, timeout=5).json()["data"]) == 2
    assert http.get(f"{base}/students", params={"updated_after": "yesterday"}, timeout=5).status_code == 422


def test_request_and_revoke_access(sandbox, http):
    school_id = sandbox.school_id()
    sandbox.set_state(school_id, "none")
    answer = http.post(f"{sandbox.url}/schools/{school_id}/request-access", json={"contacts": []}, timeout=5).json()
    assert answer == {"success": True, "state": "pending", "message": "Access requested"}
    answer = http.delete(f"{sandbox.url}/schools/{school_id}/revoke-access", timeout=5).json()
    assert answer["state"] == "revoked" and sandbox.states[school_id] == "revoked"


def test_nothing_listens_until_started(school):
    sandbox = WondeSandbox([school])
    assert sandbox._server is None
    with sandbox:
        assert requests.get(sandbox.url, headers={"Authorization": f"Bearer {sandbox.token}"}, timeout=5).ok
    with pytest.raises(requests.ConnectionError):
        requests.get(sandbox.url, timeout=5)


def test_state_changes_send_wonde_webhooks(school):
    import json
    import threading

    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response

    received = []

    def receiver(environ, start_response):
        received.append(json.loads(Request(environ).get_data()))
        return Response("{}", content_type="application/json")(environ, start_response)

    server = make_server("127.0.0.1", 0, receiver)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with WondeSandbox([school], state="pending", webhook_url=f"http://127.0.0.1:{server.server_port}/hook/s3cret") as sandbox:
            sandbox.set_state(sandbox.school_id(), "approved")
            requests.post(f"http://127.0.0.1:{sandbox.port}/__sandbox/schools/{sandbox.school_id()}/revoke", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert [event["payload_type"] for event in received] == ["schoolApproved", "accessRevoked"]
    approved = received[0]
    assert approved["school_token"] == sandbox.token and approved["school_urn"] == school.urn
    assert approved["school_la_code"] == "201" and approved["school_establishment_number"] == "4001"
    assert [sent["status"] for sent in sandbox.webhooks_sent] == [200, 200]
