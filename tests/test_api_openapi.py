"""The OpenAPI 3.1 document matches the implementation; schemathesis against a live server finds no 500s or schema violations."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from portal.connectors import DemographicsRecord, StaffRecord
from tests import api_support as s

ST = Path(sys.executable).with_name("st")


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule).removeprefix("/api/v1")


def test_the_document_describes_exactly_the_routes_the_api_serves(app, client):
    doc = client.get("/api/v1/openapi.json").json
    assert doc["openapi"] == "3.1.0"
    served = {_openapi_path(r.rule) for r in app.url_map.iter_rules() if r.endpoint.startswith("api.")} - {"/openapi.json"}
    assert set(doc["paths"]) == served
    feature_enum = doc["paths"]["/features/{feature_id}/schools"]["get"]["parameters"][0]["schema"]["enum"]
    assert feature_enum == sorted(f["id"] for f in s.matrix()["features"])
    demographics = doc["components"]["schemas"]["Record_demographics"]
    fields = demographics["properties"]["fields"]["oneOf"][0]["properties"]
    assert "ethnicity" in fields and "withheld" in demographics["properties"]


@pytest.fixture
def live_api(app, make):
    """A real HTTP server on 127.0.0.1 serving the app, with a credential for a product of every feature."""
    p = s.product(*[f["id"] for f in s.matrix()["features"]])
    school, connection = s.connected_school(make, p)
    s.write(connection, s.pupils(5))
    s.write(connection, [DemographicsRecord(external_id=f"p{i}", ethnicity="WBRI", eal=True) for i in range(5)])
    s.write(connection, [StaffRecord(external_id="s0", forename="Sam", roles=("teacher",))])
    s.write(connection, [s.tombstone("pupil", "student_basic", "p4")])
    token = s.token_for(p)
    server = make_server("127.0.0.1", 0, app, threaded=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{server.server_port}/api/v1", "token": token, "school_id": school.id}
    finally:
        server.shutdown()
        thread.join()


def test_schemathesis_finds_no_server_errors_and_no_schema_violations(live_api, tmp_path):
    # The seeded school's id is a documented example, so generated calls also reach real records.
    result = subprocess.run(
        [
            str(ST), "run", f"{live_api['url']}/openapi.json",
            "--url", live_api["url"],
            "-H", f"Authorization: Bearer {live_api['token']}",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                        "response_schema_conformance,negative_data_rejection,unsupported_method",
            "--max-examples", "20", "--seed", "1", "--workers", "1", "--no-color",
            "--generation-database", "none",
            "--report", "json", "--report-json-path", str(tmp_path / "report.json"),
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report
