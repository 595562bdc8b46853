"""The Example MIS API's own rules, over real HTTP against the sandbox: token, HTTPS, paging, deletions of memberships."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from portal_example.client import ExampleClient
from portal_example.connector import ExampleConnector

from portal.connectors import AccessRefused, ConnectorError, MembershipRecord, Tombstone


def test_plain_http_only_to_a_loopback_sandbox():
    with pytest.raises(ConnectorError, match="HTTPS"):
        ExampleClient("http://api.example-mis.invalid/api/v1", "t")
    with pytest.raises(ConnectorError, match="not an allowed host"):
        ExampleClient("https://elsewhere.invalid/api/v1", "t")
    ExampleClient("http://127.0.0.1:9/api/v1", "t", allow_insecure_http=True)


def test_a_wrong_token_is_refused_and_said_so_without_the_token(sandbox):
    client = ExampleClient(sandbox.url, "not-the-token", allow_insecure_http=True)
    with pytest.raises(AccessRefused) as refused:
        client.request("GET", "schools", endpoint="schools")
    assert refused.value.status == 401 and "not-the-token" not in refused.value.message


def test_pages_follow_the_cursor_to_the_end(sandbox, school):
    client = ExampleClient(sandbox.url, sandbox.token, allow_insecure_http=True, page_size=7)
    pages = list(client.pages(f"schools/{sandbox.school_id()}/pupils", endpoint="pupils", params={}))
    assert sum(len(items) for items, _ in pages) == len(school.on_roll())
    assert len(pages) == -(-len(school.on_roll()) // 7) and pages[-1][1] is None
    assert sandbox.count("/pupils") == len(pages)


def test_a_pupil_leaving_a_group_comes_back_as_a_membership_tombstone(sandbox, school, connector):
    """The MIS keeps no dates for memberships: the sandbox lists a removed one in its deletions feed."""
    connection = {"provider_school_id": sandbox.school_id()}
    watermark = datetime(2026, 1, 1, tzinfo=timezone.utc)
    leaver = school.on_roll()[0].key
    groups = {sandbox._id(school, g.key) for g in school.groups_of(leaver)}
    assert groups
    school.make_leaver(leaver, datetime(2026, 1, 5, 9, tzinfo=timezone.utc))
    records = [r for r in connector.extract(connection, ["student_timetable"], watermark, None)
               if isinstance(r, (MembershipRecord, Tombstone))]
    gone = {r.external_id for r in records if isinstance(r, Tombstone) and r.record_kind == "membership"}
    assert gone == {f"{group}:{sandbox._id(school, leaver)}" for group in groups}
    # The groups the pupil left are listed again with their remaining members, the leaver not among them.
    assert not [r for r in records if isinstance(r, MembershipRecord) and r.pupil_external_id == sandbox._id(school, leaver)]


def test_special_category_and_free_text_fields_are_not_read(sandbox, school, connector):
    """R76/R77: staff ethnicity and exclusion reasons and notes stay at the MIS."""
    connection = {"provider_school_id": sandbox.school_id()}
    records = list(connector.extract(connection, ["staff_basic", "student_attendance_exclusions"], None, None))
    values = [r.values() for r in records if hasattr(r, "values")]
    assert values and not any({"ethnicity", "reason", "note", "comment"} & set(v) for v in values)


def test_settings_are_typed_by_the_core():
    connector = ExampleConnector({"base_url": "http://127.0.0.1:9/api/v1", "token": "t", "allow_insecure_http": "true",
                                  "page_size": "50"})
    assert connector.client.page_size == 50
    with pytest.raises(ConnectorError, match="page_size"):
        ExampleConnector({"token": "t", "page_size": "many"})
