"""The Wonde client over real HTTP against the sandbox: paging, dates, retries and typed errors."""
from __future__ import annotations

import socket
import threading
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from portal_wonde.client import WondeClient, parse_wonde_date, parse_wonde_datetime

from portal.connectors import AccessRefused, BadResponse, ConnectorError, InvalidJson, ProviderUnavailable, RateLimited


@pytest.fixture
def client(sandbox, sleeps):
    """A client for the sandbox that records its waits instead of sleeping; jitter takes the maximum."""
    made = WondeClient(sandbox.url, sandbox.token, allow_insecure_http=True, sleep=sleeps.append,
                       jitter=lambda low, high: high, max_retries=3, backoff_base=0.5, backoff_cap=4.0)
    yield made
    made.close()


def students_url(sandbox):
    return f"{sandbox.url}/schools/{sandbox.school_id()}/students"


def test_pages_to_the_end_with_the_largest_page_size(sandbox, client, school):
    client.per_page = 40  # smaller than the school, to force several pages
    pages = list(client.pages(students_url(sandbox), endpoint="students", params={}))
    assert [p.number for p in pages] == [1, 2, 3]
    assert sum(len(p.items) for p in pages) == len(school.on_roll())
    assert pages[-1].next_url is None
    first, *rest = sandbox.requests("/students")
    assert first.param("per_page") == "40"
    # Following pages are Wonde's next links, verbatim (they carry per_page and page themselves).
    assert [r.param("page") for r in rest] == ["2", "3"]


def test_default_page_size_is_the_documented_maximum(sandbox, client):
    list(client.pages(students_url(sandbox), endpoint="students", params={}))
    assert sandbox.requests("/students")[0].param("per_page") == "200"


def test_page_without_pagination_meta_is_the_last(sandbox, client):
    # Documented Wonde behaviour: 50 rows or fewer and no per_page means no pagination object.
    pages = list(client.pages(f"{sandbox.url}/schools/{sandbox.school_id()}/subjects", endpoint="subjects", params=None))
    assert len(pages) == 1 and pages[0].next_url is None and pages[0].items


def test_includes_are_one_comma_separated_parameter(sandbox, client):
    page = next(client.pages(students_url(sandbox), endpoint="students",
                             params={"include": "education_details,extended_details"}))
    assert sandbox.requests("/students")[0].query["include"] == ["education_details,extended_details"]
    assert "upn" in page.items[0]["education_details"]["data"]
    assert "ethnicity" in page.items[0]["extended_details"]["data"]


@pytest.mark.parametrize(("value", "expected"), [
    ({"date": "2015-10-29 14:53:44.000000", "timezone_type": 3, "timezone": "UTC"},
     datetime(2015, 10, 29, 14, 53, 44, tzinfo=timezone.utc)),
    ({"date": "2024-07-01 09:00:00.000000", "timezone_type": 3, "timezone": "Europe/London"},
     datetime(2024, 7, 1, 8, 0, tzinfo=timezone.utc)),
    ({"date": "2024-07-01 09:00:00.000000", "timezone_type": 1, "timezone": "+02:00"},
     datetime(2024, 7, 1, 7, 0, tzinfo=timezone.utc)),
    ("2016-06-24 00:00:00", datetime(2016, 6, 24, tzinfo=timezone.utc)),
    ("2016-06-24", datetime(2016, 6, 24, tzinfo=timezone.utc)),
    ({"data": {"date": "2020-01-02 03:04:05.000000", "timezone_type": 3, "timezone": "UTC"}},
     datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
])
def test_wonde_datetimes_become_timezone_aware(value, expected):
    parsed = parse_wonde_datetime(value)
    assert parsed.tzinfo is not None and parsed == expected


def test_dates_keep_their_own_calendar_day():
    # Midnight in London during summer time is 23:00 UTC the day before; the date must not shift.
    value = {"date": "2011-06-11 00:00:00.000000", "timezone_type": 3, "timezone": "Europe/London"}
    assert parse_wonde_date(value) == date(2011, 6, 11)
    assert parse_wonde_datetime(value).tzinfo == ZoneInfo("Europe/London")
    assert parse_wonde_date(None) is None and parse_wonde_date("") is None


def test_429_waits_as_long_as_retry_after_says(sandbox, client, sleeps):
    sandbox.add_fault(match="/students", status=429, retry_after="7", times=2)
    pages = list(client.pages(students_url(sandbox), endpoint="students", params={}))
    assert pages and sleeps == [7.0, 7.0]
    assert [r.status for r in sandbox.requests("/students")] == [429, 429, 200]


def test_retry_after_is_capped(sandbox, client, sleeps):
    client.retry_after_cap = 30.0
    sandbox.add_fault(match="/students", status=429, retry_after="3600", times=1)
    list(client.pages(students_url(sandbox), endpoint="students", params={}))
    assert sleeps == [30.0]


def test_429_for_ever_is_rate_limited(sandbox, client):
    sandbox.add_fault(match="/students", status=429, retry_after="1", times=None)
    with pytest.raises(RateLimited) as caught:
        list(client.pages(students_url(sandbox), endpoint="students", params={}))
    assert caught.value.kind == "temporary" and caught.value.retry_after == 1.0
    assert len(sandbox.requests("/students")) == 4


def test_5xx_burst_is_retried_with_capped_exponential_backoff(sandbox, client, sleeps):
    sandbox.add_fault(match="/students", status=503, times=3)
    pages = list(client.pages(students_url(sandbox), endpoint="students", params={}))
    assert pages[0].items
    # Full jitter up to base * 2**attempt, capped at 4 s (the test's jitter picks the maximum).
    assert sleeps == [0.5, 1.0, 2.0]
    assert client.retries == 3


def test_backoff_never_exceeds_the_cap(sandbox, sleeps):
    made = WondeClient(sandbox.url, sandbox.token, allow_insecure_http=True, sleep=sleeps.append,
                       jitter=lambda low, high: high, max_retries=6, backoff_base=1.0, backoff_cap=5.0)
    sandbox.add_fault(match="/students", status=500, times=6)
    list(made.pages(students_url(sandbox), endpoint="students", params={}))
    made.close()
    assert sleeps == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_5xx_for_ever_is_provider_unavailable(sandbox, client):
    sandbox.add_fault(match="/students", status=500, times=None)
    with pytest.raises(ProviderUnavailable) as caught:
        list(client.pages(students_url(sandbox), endpoint="students", params={}))
    assert caught.value.kind == "temporary" and "students" in caught.value.message
    assert len(sandbox.requests("/students")) == 4  # first try + 3 retries


def test_connection_refused_is_retried_then_provider_unavailable(sleeps):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    made = WondeClient(f"http://127.0.0.1:{port}", "t", allow_insecure_http=True, sleep=sleeps.append, max_retries=2)
    with pytest.raises(ProviderUnavailable):
        made.ping()
    made.close()
    assert len(sleeps) == 2


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_refusals_raised_at_once(sandbox, client, sleeps, status):
    sandbox.add_fault(match="/students", status=status, skip=1, times=None)
    pages = client.pages(students_url(sandbox), endpoint="students", params={})
    client.per_page = 30
    next(pages)
    with pytest.raises(AccessRefused) as caught:
        next(pages)
    assert caught.value.kind == "school_action" and caught.value.page == 2
    assert sleeps == [] and len(sandbox.requests("/students")) == 2


def test_wrong_token_is_refused_not_a_revocation(sandbox, sleeps):
    made = WondeClient(sandbox.url, "not-the-token", allow_insecure_http=True, sleep=sleeps.append)
    with pytest.raises(AccessRefused):
        made.ping()
    made.close()
    assert sandbox.requests()[0].status == 401


def test_invalid_json_always_is_a_typed_error_naming_endpoint_and_page(sandbox, client):
    client.per_page = 30
    sandbox.add_fault(match="/students", body="invalid_json", skip=1, times=None)
    pages = client.pages(students_url(sandbox), endpoint="students", params={})
    assert next(pages).items
    with pytest.raises(InvalidJson) as caught:
        next(pages)
    assert caught.value.code == "invalid_json" and isinstance(caught.value, BadResponse)
    assert "invalid JSON for students (page 2), twice running" in caught.value.message
    assert caught.value.endpoint == "students" and caught.value.page == 2 and caught.value.kind == "provider_problem"
    # Asked once again, not more: a broken page is not worth the whole retry budget.
    assert len(sandbox.requests("/students")) == 3


def test_invalid_json_once_is_asked_again(sandbox, client, sleeps):
    sandbox.add_fault(match="/students", body="invalid_json", times=1)
    pages = list(client.pages(students_url(sandbox), endpoint="students", params={}))
    assert pages[0].items and len(sleeps) == 1
    assert len(sandbox.requests("/students")) == len(pages) + 1


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured_on_429_and_503(sandbox, client, sleeps, status):
    sandbox.add_fault(match="/students", status=status, retry_after="3", times=2)
    pages = list(client.pages(students_url(sandbox), endpoint="students", params={}))
    assert pages[0].items
    assert sleeps == [3.0, 3.0]  # the provider's word, not the backoff (0.5, 1.0)


def test_retry_after_as_an_http_date_is_honoured_on_503(sandbox, client, sleeps):
    import email.utils

    when = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    sandbox.add_fault(match="/students", status=503, retry_after=when, times=1)
    list(client.pages(students_url(sandbox), endpoint="students", params={}))
    assert len(sleeps) == 1 and 25 <= sleeps[0] <= 30


def test_unexpected_shape_names_endpoint_and_page(sandbox, client):
    sandbox.add_fault(match="/students", body="bad_shape")
    with pytest.raises(BadResponse, match=r"students \(page 1\)"):
        list(client.pages(students_url(sandbox), endpoint="students", params={}))


def test_errors_never_carry_the_token(sandbox, client):
    sandbox.add_fault(match="/students", status=403)
    with pytest.raises(AccessRefused) as caught:
        list(client.pages(students_url(sandbox), endpoint="students", params={}))
    assert sandbox.token not in str(caught.value)


def test_every_request_has_connect_and_read_timeouts(sandbox):
    made = WondeClient(sandbox.url, sandbox.token, allow_insecure_http=True, connect_timeout=2, read_timeout=9)
    assert made.timeout == (2, 9)
    made.close()


@pytest.mark.parametrize("url", ["http://api.wonde.com/v1.0", "http://10.0.0.5/v1.0", "ftp://127.0.0.1/v1.0"])
def test_plain_http_is_refused_outside_a_local_sandbox(url):
    with pytest.raises(ConnectorError, match="HTTPS"):
        WondeClient(url, "t", allow_insecure_http=url.startswith("http://10"))


def test_plain_http_to_loopback_needs_the_test_setting():
    with pytest.raises(ConnectorError, match="HTTPS"):
        WondeClient("http://127.0.0.1:9/v1.0", "t")
    assert WondeClient("http://127.0.0.1:9", "t", allow_insecure_http=True).base_url == "http://127.0.0.1:9/v1.0"


def test_next_link_to_another_host_is_not_followed(sandbox, client):
    client.per_page = 30
    pages = client.pages(students_url(sandbox), endpoint="students", params={})
    client.host = "elsewhere.example"
    with pytest.raises(BadResponse, match="another host"):
        next(pages)


def test_updated_after_filter_format():
    from portal_wonde.client import format_filter_datetime

    london = datetime(2026, 7, 1, 10, 30, tzinfo=ZoneInfo("Europe/London"))
    assert format_filter_datetime(london) == "2026-07-01 09:30:00"
    assert format_filter_datetime(london + timedelta(days=200)) == "2027-01-17 10:30:00"


def test_read_timeout_is_retried_then_provider_unavailable(sandbox, sleeps):
    made = WondeClient(sandbox.url, sandbox.token, allow_insecure_http=True, sleep=sleeps.append, max_retries=1,
                       read_timeout=0.2)
    sandbox.add_fault(match="/students", delay=0.6, times=None)
    with pytest.raises(ProviderUnavailable, match="ReadTimeout"):
        list(made.pages(students_url(sandbox), endpoint="students", params={}))
    made.close()
    assert len(sandbox.requests("/students")) == 2 and len(sleeps) == 1


# -- kept-alive connections


def test_a_client_sends_its_requests_over_one_kept_alive_connection(sandbox, client):
    for _ in range(3):
        client.school(sandbox.school_id())
    assert sandbox.count() == 3 and len({r.peer for r in sandbox.requests()}) == 1


def test_a_kept_alive_connection_the_server_closed_is_replaced_without_a_retry(sandbox, client, sleeps):
    client.school(sandbox.school_id())
    sandbox.stop()  # closes every connection; served again on the same port
    sandbox.start()
    assert client.school(sandbox.school_id())["id"] == sandbox.school_id()
    assert client.retries == 0 and sleeps == []
    first, second = sandbox.requests()
    assert first.peer != second.peer


def _read_request(conn: socket.socket) -> bytes:
    seen = b""
    while b"\r\n\r\n" not in seen:
        chunk = conn.recv(4096)
        if not chunk:
            break
        seen += chunk
    return seen


def test_a_kept_alive_connection_dropped_as_a_request_goes_out_is_asked_again_on_a_new_one(sleeps):
    """The server reads the second request on the kept-alive connection and hangs up without answering."""
    body = b'{"data": {"id": "S1"}}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    served: list[str] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(2)

    def serve() -> None:
        first, _ = listener.accept()
        with first:
            _read_request(first)
            first.sendall(answer)
            served.append("answered")
            served.append("hung up" if _read_request(first) else "no second request")
        second, _ = listener.accept()
        with second:
            _read_request(second)
            second.sendall(answer)
            served.append("answered")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    made = WondeClient(f"http://127.0.0.1:{listener.getsockname()[1]}", "t" * 40, allow_insecure_http=True,
                       sleep=sleeps.append, max_retries=2)
    try:
        for _ in range(2):
            assert made.get_object(made.url("schools/S1"), endpoint="school") == {"id": "S1"}
    finally:
        made.close()
        thread.join(5)
        listener.close()
    assert served == ["answered", "hung up", "answered"]
    assert made.retries == 1 and len(sleeps) == 1 and made.requests_made == 3
