"""The Groupcall client over real HTTP against the sandbox: tokens, the Idaas header, paging, errors inside HTTP 200, retries."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest
import requests

from portal.connectors import (
    AccessRefused,
    AuthorisationLost,
    BadResponse,
    ConnectorError,
    InvalidJson,
    ProviderUnavailable,
    RateLimited,
)
from portal_groupcall.client import (
    AuthorisationPaused,
    GroupcallClient,
    ProviderReportedError,
    TokenCache,
    parse_groupcall_datetime,
)
from portal_groupcall.sandbox import RELYING_PARTY, GroupcallSandbox


def make_client(sandbox, school, **overrides) -> GroupcallClient:
    options = {
        "base_url": sandbox.url,
        "relying_party": RELYING_PARTY,
        "estab": school.dfe_number,
        "school_secret": sandbox.schools[school.dfe_number].secret,
        "allow_insecure_http": True,
        "page_size": 10,
        "sleep": lambda seconds: None,
        "tokens": TokenCache(),
    }
    options.update(overrides)
    return GroupcallClient(**options)


def test_token_comes_from_gettoken_and_is_sent_as_idaas(sandbox, school):
    client = make_client(sandbox, school)
    client.fetch("SchoolInfo")
    assert sandbox.count("/api/oauth/GetToken", "POST") == 1
    data = [r for r in sandbox.requests() if r.path.startswith("/api/v1/")]
    token = client.token()
    assert data and all(r.authorization == f"Idaas {token}" for r in data)


def test_token_is_cached_per_school_across_clients(sandbox, school):
    tokens = TokenCache()
    make_client(sandbox, school, tokens=tokens).fetch("SchoolInfo")
    make_client(sandbox, school, tokens=tokens).fetch("SchoolInfo")
    assert sandbox.count("/api/oauth/GetToken") == 1


def test_token_close_to_expiry_is_refreshed(school):
    # A 30-minute token is replaced shortly before it expires (a tenth of its life), not an hour ahead.
    with GroupcallSandbox(token_lifetime=timedelta(minutes=30)) as box:
        box.load_synthetic(school.dfe_number, school)
        tokens = TokenCache()
        now = [datetime.now(timezone.utc)]
        make_client(box, school, tokens=tokens, clock=lambda: now[0]).fetch("SchoolInfo")
        now[0] += timedelta(minutes=20)
        make_client(box, school, tokens=tokens, clock=lambda: now[0]).fetch("SchoolInfo")
        assert box.count("/api/oauth/GetToken") == 1
        now[0] += timedelta(minutes=8)  # 2 minutes left: inside the refresh margin
        make_client(box, school, tokens=tokens, clock=lambda: now[0]).fetch("SchoolInfo")
        assert box.count("/api/oauth/GetToken") == 2


@pytest.mark.parametrize("lifetime", [timedelta(minutes=5), timedelta(hours=1)])
def test_short_lived_tokens_are_not_minted_before_every_request(school, lifetime):
    with GroupcallSandbox(token_lifetime=lifetime) as box:
        box.load_synthetic(school.dfe_number, school)
        client = make_client(box, school)
        pages = list(client.pages("Students"))
        assert len(pages) > 2
        assert box.count("/api/oauth/GetToken") == 1


def test_short_lived_tokens_set_over_the_sandbox_control_route(sandbox, school):
    requests.post(f"{sandbox.url}/__fake/token-lifetime", json={"seconds": 60}, timeout=5).raise_for_status()
    client = make_client(sandbox, school)
    list(client.pages("Students"))
    body = client.token_details()
    assert sandbox.count("/api/oauth/GetToken") == 1
    expires = parse_groupcall_datetime(body["Expires"])
    assert expires - datetime.now(timezone.utc) <= timedelta(seconds=60)


def test_a_401_mints_a_new_token_once_and_carries_on(sandbox, school):
    client = make_client(sandbox, school)
    client.fetch("SchoolInfo")
    sandbox.add_fault("http_401", "/SchoolInfo")
    body = client.fetch("SchoolInfo")
    assert body["SchoolInfo"][0]["Name"] == school.name
    assert sandbox.count("/api/oauth/GetToken") == 2


def test_a_second_401_is_a_refusal_not_a_revocation(sandbox, school):
    client = make_client(sandbox, school)
    sandbox.add_fault("http_401", "/SchoolInfo", times=5)
    with pytest.raises(AccessRefused) as caught:
        client.fetch("SchoolInfo")
    assert caught.value.kind == "school_action" and caught.value.status == 401
    assert sandbox.count("/SchoolInfo") == 2 and sandbox.count("/api/oauth/GetToken") == 2


def test_paging_stops_at_the_page_count_although_nextpage_points_past_the_end(sandbox, school):
    client = make_client(sandbox, school)
    pages = list(client.pages("Students"))
    expected = -(-len(school.on_roll()) // 10)
    assert [p.number for p in pages] == list(range(1, expected + 1))
    last = pages[-1].body["__pagination__"][0]
    assert last["NextPage"] == f"?page={expected + 1}&pageSize=10"  # the quirk is there...
    assert sandbox.count("/Students") == expected  # ...and was not followed
    ids = [row["Id"] for page in pages for row in page.rows("Students")]
    assert len(ids) == len(set(ids)) == len(school.on_roll())


def test_an_error_inside_http_200_is_an_error_not_data(sandbox, school):
    client = make_client(sandbox, school)
    sandbox.add_fault("error_in_200", "/Students")
    with pytest.raises(ProviderReportedError) as caught:
        list(client.pages("Students"))
    assert caught.value.kind == "provider_problem"
    assert "Something went wrong" not in caught.value.message  # provider text is not passed on


def test_a_refused_token_inside_http_200_is_a_lost_authorisation(sandbox, school):
    client = make_client(sandbox, school, school_secret="not-the-secret")
    with pytest.raises(AuthorisationLost):
        client.fetch("SchoolInfo")


def test_a_paused_authorisation_is_not_a_revocation(sandbox, school):
    sandbox.pause(school.dfe_number)
    with pytest.raises(AuthorisationPaused) as caught:
        make_client(sandbox, school).fetch("SchoolInfo")
    assert not isinstance(caught.value, AuthorisationLost)
    assert caught.value.kind == "school_action"


def test_server_errors_are_retried_with_growing_waits(sandbox, school):
    waits = []
    client = make_client(sandbox, school, sleep=waits.append, backoff=0.5)
    sandbox.add_fault("http_503", "/SchoolInfo", times=2)
    assert client.fetch("SchoolInfo")["SchoolInfo"]
    assert len(waits) == 2 and waits[1] > waits[0] >= 0.5


def test_server_errors_that_persist_end_as_provider_unavailable(sandbox, school):
    client = make_client(sandbox, school, retries=2)
    sandbox.add_fault("http_502", "/SchoolInfo", times=10)
    with pytest.raises(ProviderUnavailable) as caught:
        client.fetch("SchoolInfo")
    assert sandbox.count("/SchoolInfo") == 3
    assert caught.value.retryable and "Groupcall" in caught.value.message


def test_rate_limits_honour_retry_after_then_give_up(sandbox, school):
    waits = []
    client = make_client(sandbox, school, sleep=waits.append, retries=1)
    sandbox.add_fault("http_429", "/SchoolInfo", times=10)
    with pytest.raises(RateLimited):
        client.fetch("SchoolInfo")
    assert waits == [0.0]  # the sandbox's Retry-After: 0


def test_a_broken_connection_is_retried(sandbox, school):
    client = make_client(sandbox, school)
    sandbox.add_fault("drop", "/SchoolInfo")
    assert client.fetch("SchoolInfo")["SchoolInfo"]
    assert sandbox.count("/SchoolInfo") == 2


def test_malformed_json_once_is_asked_again(sandbox, school):
    client = make_client(sandbox, school)
    sandbox.add_fault("malformed_json", "/Students", times=1)
    pages = list(client.pages("Students"))
    assert sandbox.count("/Students") == len(pages) + 1
    clean = list(client.pages("Students"))
    assert [p.rows("Students") for p in pages] == [p.rows("Students") for p in clean]


def test_malformed_json_always_is_a_typed_error(sandbox, school):
    client = make_client(sandbox, school)
    sandbox.add_fault("malformed_json", "/Students", times=1000)
    with pytest.raises(InvalidJson) as caught:
        list(client.pages("Students"))
    assert isinstance(caught.value, BadResponse) and caught.value.code == "invalid_json"
    assert caught.value.endpoint == "Students" and caught.value.page == 1
    assert "twice running" in caught.value.message and "Groupcall support" in caught.value.message
    assert sandbox.count("/Students") == 2  # asked once again, not the whole retry budget


@pytest.mark.parametrize("status", ["http_429", "http_503"])
def test_retry_after_is_honoured_on_429_and_503(sandbox, school, status):
    waits = []
    client = make_client(sandbox, school, sleep=waits.append, backoff=0.5)
    sandbox.add_fault(status, "/SchoolInfo", times=2, retry_after="7")
    assert client.fetch("SchoolInfo")["SchoolInfo"]
    assert waits == [7.0, 7.0]


def test_retry_after_as_an_http_date_is_honoured(sandbox, school):
    import email.utils

    waits = []
    client = make_client(sandbox, school, sleep=waits.append)
    when = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    requests.post(f"{sandbox.url}/__fake/faults", json={"kind": "http_503", "path": "/SchoolInfo", "retry_after": when},
                  timeout=5).raise_for_status()
    assert client.fetch("SchoolInfo")["SchoolInfo"]
    assert len(waits) == 1 and 25 <= waits[0] <= 30


def test_r61_plain_http_is_refused_outside_tests(sandbox, school):
    with pytest.raises(ConnectorError, match="https"):
        make_client(sandbox, school, allow_insecure_http=False)


def test_credentials_never_reach_the_logs(sandbox, school, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client(sandbox, school)
    sandbox.add_fault("http_503", "/SchoolInfo")
    client.fetch("SchoolInfo")
    secret, token = sandbox.schools[school.dfe_number].secret, client.token()
    text = caplog.text + repr(client)
    assert secret not in text and token not in text


def test_groupcall_datetimes_with_seven_fractional_digits_parse():
    parsed = parse_groupcall_datetime("2018-06-24T18:55:26.1852229Z")
    assert (parsed.year, parsed.microsecond, parsed.utcoffset()) == (2018, 185222, timedelta(0))
    assert parse_groupcall_datetime("0001-01-01T00:00:00") is None
