"""The shared HTTP layer over real sockets: retries and their count, Retry-After, quota
fail-fast, connection refused, timeouts, credentials from env, secrets scrubbed.

A scripted server on 127.0.0.1 (ephemeral port) answers each request with the
next scripted response, so every status sequence is exact.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from custsync_pipeline.connectors.http import (
    ConnectorError,
    ConnectorUnavailableError,
    CredentialError,
    HttpClient,
    HttpSettings,
    QuotaExceededError,
    TokenBucket,
    require_env,
    scrub_url,
)
from custsync_pipeline.connectors.salesforce import _quota_check
from custsync_pipeline_tests.sandbox_fixtures import closed_port

SECRET = "s3cr3t-token-value-xyz"


class _Scripted(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        server: ScriptedServer = self.server  # type: ignore[assignment]
        server.seen.append((self.command, self.path, dict(self.headers)))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, headers, body, delay = (
            server.script.popleft() if server.script else (200, {}, {"ok": True}, 0)
        )
        if delay:
            threading.Event().wait(delay)
        # a str body with X-Raw is sent as is (a truncated, malformed page)
        payload = body.encode() if headers.get("X-Raw") else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Scripted)
        self.script: deque = deque()
        self.seen: list = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server():
    srv = ScriptedServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _client(url: str, **settings) -> HttpClient:
    base = dict(backoff_factor_s=0.01, backoff_jitter_s=0.01, backoff_max_s=0.05, max_retries=4)
    base.update(settings)
    return HttpClient(
        "testconn",
        url,
        headers={"Authorization": f"Bearer {SECRET}"},
        secrets=[SECRET],
        settings=HttpSettings(**base),
        fatal_check=_quota_check,
    )


def test_retries_429_and_5xx_then_succeeds_and_counts_retries(server):
    server.script.extend(
        [
            (429, {"Retry-After": "0"}, {"message": "slow down"}, 0),
            (503, {}, {"message": "unavailable"}, 0),
            (500, {}, {"message": "boom"}, 0),
            (200, {}, {"value": 42}, 0),
        ]
    )
    client = _client(server.url)
    assert client.get_json("/x") == {"value": 42}
    assert client.counters.retries == 3
    assert client.counters.requests == 1  # one logical request, three retries inside it
    assert len(server.seen) == 4


@pytest.mark.parametrize("hint", [formatdate(0, usegmt=True), "0"])
def test_past_or_zero_retry_after_is_no_hint_and_backs_off(server, hint):
    # 1970 or 0 parse to 0: no hint, so the first retry still waits factor (+ jitter)
    server.script.extend([(429, {"Retry-After": hint}, {}, 0), (200, {}, {"v": 1}, 0)])
    client = _client(server.url, backoff_factor_s=0.05, backoff_jitter_s=0.02)
    started = time.monotonic()
    assert client.get_json("/x") == {"v": 1}
    elapsed = time.monotonic() - started
    assert client.counters.retries == 1
    [wait] = client.counters.retry_counter.waits
    assert 0.05 <= wait <= 0.07
    assert elapsed >= 0.05


def test_retry_after_seconds_is_honoured_up_to_the_cap(server):
    # a hint of one hour, capped to 0.2 s by the setting: proves the header is read and capped
    server.script.extend([(429, {"Retry-After": "3600"}, {}, 0), (200, {}, {"v": 2}, 0)])
    client = _client(server.url, retry_after_max_s=0.2, backoff_factor_s=0.001)
    started = time.monotonic()
    assert client.get_json("/x") == {"v": 2}
    assert time.monotonic() - started >= 0.2
    assert client.counters.retries == 1
    assert client.counters.retry_counter.waits == [0.2]
    # below the cap the hint is taken as it is: 1 s, not the 1 ms backoff
    server.script.extend([(503, {"Retry-After": "1"}, {}, 0), (200, {}, {"v": 3}, 0)])
    client = _client(server.url, retry_after_max_s=60, backoff_factor_s=0.001)
    started = time.monotonic()
    assert client.get_json("/x") == {"v": 3}
    assert time.monotonic() - started >= 1.0
    assert client.counters.retry_counter.waits == [1.0]


def test_backoff_doubles_from_the_first_retry_with_jitter(server):
    server.script.extend([(503, {}, {}, 0)] * 4 + [(200, {}, {"v": 4}, 0)])
    client = _client(server.url, backoff_factor_s=0.02, backoff_jitter_s=0.01, backoff_max_s=10)
    assert client.get_json("/x") == {"v": 4}
    waits = client.counters.retry_counter.waits
    assert len(waits) == 4
    for n, wait in enumerate(waits, start=1):
        base = 0.02 * 2 ** (n - 1)  # 0.02, 0.04, 0.08, 0.16: the first retry waits too
        assert base <= wait <= base + 0.01, (n, wait)
    # jitter: the waits are not exactly the bare exponential
    assert any(w != 0.02 * 2 ** (n - 1) for n, w in enumerate(waits, start=1))


def test_backoff_is_capped_by_backoff_max(server):
    server.script.extend([(500, {}, {}, 0)] * 3 + [(200, {}, {}, 0)])
    client = _client(server.url, backoff_factor_s=0.05, backoff_jitter_s=0.0, backoff_max_s=0.08)
    client.get_json("/x")
    assert client.counters.retry_counter.waits == [0.05, 0.08, 0.08]


def test_retries_exhausted_is_transient_error_with_api_message(server):
    server.script.extend([(502, {}, {"message": "bad gateway"}, 0)] * 10)
    client = _client(server.url, max_retries=2)
    with pytest.raises(ConnectorError) as info:
        client.get_json("/x")
    err = info.value
    assert err.transient and err.status == 502
    assert "bad gateway" in str(err) and "testconn" in str(err)
    assert client.counters.retries == 2
    assert len(server.seen) == 3


def test_quota_exceeded_fails_fast_without_retry(server):
    body = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    server.script.append((403, {"Sforce-Limit-Info": "api-usage=15001/15000"}, body, 0))
    client = _client(server.url)
    with pytest.raises(QuotaExceededError) as info:
        client.get_json("/services/data/v60.0/query")
    assert not info.value.transient
    assert "REQUEST_LIMIT_EXCEEDED" in str(info.value)
    assert len(server.seen) == 1  # no retry
    assert client.counters.retries == 0


def test_client_error_is_not_retried_and_carries_message(server):
    body = [{"message": "unexpected token: FROMM", "errorCode": "MALFORMED_QUERY"}]
    server.script.append((400, {}, body, 0))
    client = _client(server.url)
    with pytest.raises(ConnectorError) as info:
        client.get_json("/q")
    assert "MALFORMED_QUERY: unexpected token: FROMM" in str(info.value)
    assert not info.value.transient
    assert len(server.seen) == 1


def test_read_timeout_is_retried(server):
    server.script.extend([(200, {}, {"late": True}, 0.5), (200, {}, {"v": 3}, 0)])
    client = _client(server.url, read_timeout_s=0.2)
    assert client.get_json("/x") == {"v": 3}
    assert client.counters.retries == 1


def test_connection_refused_names_connector_and_base_url():
    url = f"http://127.0.0.1:{closed_port()}"
    client = _client(url)
    with pytest.raises(ConnectorUnavailableError) as info:
        client.get_json("/anything")
    text = str(info.value)
    assert "testconn" in text and url in text and "cannot reach" in text
    assert SECRET not in text
    assert info.value.transient


def test_secret_never_in_error_text_even_when_the_api_echoes_it(server):
    server.script.append((401, {}, {"message": f"invalid token {SECRET}"}, 0))
    client = _client(server.url)
    with pytest.raises(ConnectorError) as info:
        client.get_json("/x", params={"access_token": SECRET, "page": 2})
    text = str(info.value) + repr(info.value)
    assert SECRET not in text
    assert "page=2" in text and "access_token=***" in text
    assert info.value.__cause__ is None


def test_require_env_names_the_variable_never_a_value():
    creds = {"access_token": "MY_TOKEN_VAR"}
    assert require_env("sf", creds, "access_token", {"MY_TOKEN_VAR": SECRET}) == SECRET
    with pytest.raises(CredentialError, match="MY_TOKEN_VAR"):
        require_env("sf", creds, "access_token", {})
    with pytest.raises(CredentialError, match=r"credentials\.app_id"):
        require_env("sf", creds, "app_id", {"MY_TOKEN_VAR": SECRET})


def test_scrub_url_masks_sensitive_query_values_and_userinfo():
    out = scrub_url("https://user:pw@api.example.com/v1/x?api_key=abc&limit=5&client_secret=zz")
    assert "pw" not in out and "abc" not in out and "zz" not in out
    assert "limit=5" in out and "api.example.com" in out


def test_token_bucket_reserves_tokens_beyond_the_burst(monkeypatch: pytest.MonkeyPatch):
    # a clock of its own: a loaded machine that pauses the test between two calls must
    # not refill the bucket behind its back
    import custsync_pipeline.connectors.http as http_module

    clock = [1000.0]
    monkeypatch.setattr(http_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(http_module.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    bucket = TokenBucket(rate=1000.0, burst=2)
    waits = [bucket.acquire() for _ in range(4)]
    assert waits[0] == 0 and waits[1] == 0  # the burst
    assert waits[2:] == pytest.approx([0.001, 0.001])  # then paced at the rate


def test_rate_limited_client_passes_every_request_through_the_bucket(server):
    client = _client(server.url, rate_per_s=500.0, burst=1)
    for _ in range(3):
        client.get_json("/x")
    assert client.bucket is not None and client.bucket.capacity == 1
    assert client.counters.requests == 3


def test_unknown_http_option_is_an_error():
    with pytest.raises(ValueError, match="retries_max"):
        HttpSettings.from_options({"http": {"retries_max": 3}}, None)


def test_malformed_json_page_is_fetched_again_and_counted(server):
    client = _client(server.url)
    server.script.extend(
        [(200, {"X-Raw": "1"}, '{"records": [{"Id": "trunc', 0), (200, {}, {"ok": 1}, 0)]
    )
    assert client.get_json("/page") == {"ok": 1}
    assert client.counters.retries == 1


def test_oauth2_client_credentials_fetches_caches_and_hides_the_token(server):
    import base64

    from custsync_pipeline.connectors.http import OAuth2ClientCredentials

    token = "tok-abcdef-123456"
    server.script.extend(
        [
            (200, {}, {"access_token": token, "token_type": "bearer", "expires_in": 3600}, 0),
            (200, {}, {"n": 1}, 0),
            (200, {}, {"n": 2}, 0),
            (401, {}, {"message": f"token {token} revoked"}, 0),
        ]
    )
    client = HttpClient("oauthconn", server.url, settings=HttpSettings(max_retries=0))
    client.session.auth = OAuth2ClientCredentials(
        "oauthconn",
        server.url + "/oauth/token",
        "my-client-id",
        "my-client-secret",
        on_token=client.add_secret,
    )
    assert client.get_json("/a") == {"n": 1}
    assert client.get_json("/b") == {"n": 2}
    paths = [p for _, p, _ in server.seen]
    assert paths == ["/oauth/token", "/a", "/b"]  # the token is fetched once and cached
    basic = base64.b64encode(b"my-client-id:my-client-secret").decode()
    assert server.seen[0][2]["Authorization"] == f"Basic {basic}"
    assert server.seen[1][2]["Authorization"] == f"Bearer {token}"
    with pytest.raises(ConnectorError) as info:
        client.get_json("/c")
    assert token not in str(info.value) and "401" in str(info.value)
    assert client.session.auth._token is None  # a 401 drops the cached token


def test_retries_wait_for_a_token_like_any_request(server):
    server.script.extend([(503, {}, {}, 0), (429, {"Retry-After": "0"}, {}, 0), (200, {}, {}, 0)])
    client = _client(server.url, rate_per_s=1000.0, burst=1)
    client.get_json("/x")
    assert client.counters.retries == 2
    assert client.bucket is not None and client.bucket.acquired == 3


def test_emails_are_masked_in_errors_and_urls(server):
    server.script.append(
        (400, {}, {"message": "INVALID_EMAIL_ADDRESS: jane.doe@example.com is not valid"}, 0)
    )
    client = _client(server.url)
    with pytest.raises(ConnectorError) as info:
        client.get_json("/contacts/id", params={"email": "jane.doe@example.com"})
    text = str(info.value)
    assert "jane.doe" not in text
    assert "j***@example.com" in text and "email=***" in text


def test_an_empty_page_that_claims_more_fails_instead_of_returning_a_part(server):
    from custsync_pipeline.config import ConnectorConfig
    from custsync_pipeline.connectors import build_connector

    cfg = ConnectorConfig(
        type="rest",
        base_url=server.url,
        options={
            "path": "/items",
            "records_path": "data",
            "updated_field": "updated_at",
            "paging": {"type": "page", "has_more_path": "has_more"},
            "http": {"max_retries": 0},
        },
    )
    conn = build_connector("shop", cfg, {})
    page1 = {"data": [{"id": "1", "updated_at": "2026-01-01T00:00:00Z"}], "has_more": True}
    server.script.extend([(200, {}, page1, 0), (200, {}, {"data": [], "has_more": True}, 0)])
    with pytest.raises(ConnectorError, match="claims more") as info:
        conn.read()
    assert info.value.transient  # no result, so no watermark: the next run re-reads
    server.script.extend([(200, {}, page1, 0), (200, {}, {"data": [], "has_more": False}, 0)])
    done = conn.read()
    assert list(done.records["id"]) == ["1"] and done.stats.pages == 2


def test_rest_cursor_paging_with_basic_auth(server):
    import base64

    from custsync_pipeline.config import ConnectorConfig
    from custsync_pipeline.connectors import build_connector

    cfg = ConnectorConfig(
        type="rest",
        base_url=server.url,
        credentials={"username": "SHOP_USER", "password": "SHOP_PASSWORD"},
        options={
            "path": "/v2/customers",
            "records_path": "items",
            "paging": {"type": "cursor", "cursor_param": "after", "cursor_path": "meta.next"},
            "auth": {"type": "basic"},
            "mapping": {"mail": "email"},
            "http": {"max_retries": 0},
        },
    )
    env = {"SHOP_USER": "shop", "SHOP_PASSWORD": "pw-secret-987"}
    conn = build_connector("shop", cfg, env)
    server.script.extend(
        [
            (200, {}, {"items": [{"id": "a", "mail": "x@y.se"}], "meta": {"next": "c2"}}, 0),
            (200, {}, {"items": [{"id": "b"}], "meta": {"next": None}}, 0),
        ]
    )
    result = conn.read()
    assert list(result.records["id"]) == ["a", "b"]
    assert "after=c2" in server.seen[1][1] and "after=" not in server.seen[0][1]
    basic = base64.b64encode(b"shop:pw-secret-987").decode()
    assert server.seen[0][2]["Authorization"] == f"Basic {basic}"
    server.script.append((403, {}, {"message": "denied for pw-secret-987"}, 0))
    with pytest.raises(ConnectorError) as info:
        conn.read()
    assert "pw-secret-987" not in str(info.value)


def test_a_next_link_to_another_host_is_refused(server):
    client = _client(server.url)
    with pytest.raises(ConnectorError, match="refusing to follow"):
        client.get_json("http://evil.example.com/steal?page=2")
    assert server.seen == []  # nothing was sent, so no credentials left
    assert client.get_json(server.url + "/ok") == {"ok": True}  # same host is fine
