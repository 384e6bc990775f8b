"""The generic REST connector, YAML only, against the KatanaPIM emulator over real sockets:
OAuth2 client credentials, ``Link``-header next links, and the ``epoch``, ``epoch_ms`` and
``iso`` formats of the incremental parameter."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests

from custsync_pipeline.connectors import ConnectorError
from custsync_pipeline.sandbox import CREDENTIALS, Sandbox
from custsync_pipeline_tests.test_connectors_generic import FAST_HTTP, from_yaml

KATANA_REST = (
    """
type: rest
base_url: "{url}"
credentials: {creds}
options:
    path: /api/v1/customers
    records_path: data
    id_field: id
    updated_field: updated_at
    paging: {{type: next_link, size_param: per_page, page_size: 7}}
    auth: {auth}
    incremental: {{param: updated_since, format: {fmt}}}
    mapping: {{id: katana_id, first_name: first_name, last_name: last_name, email: email}}
    delete: {{feed_path: /api/v1/customers/deleted, feed_since_param: since, feed_ids_path: data}}
"""
    + FAST_HTTP
)
OAUTH = "{type: oauth2_client_credentials, token_url: /oauth/token}"
OAUTH_CREDS = "{client_id: KATANA_CLIENT_ID, client_secret: KATANA_CLIENT_SECRET}"
API_KEY = "{type: api_key, header: X-Api-Key}"
API_KEY_CREDS = "{api_key: KATANA_API_KEY}"


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with pytest.MonkeyPatch.context() as mp:
        for name in CREDENTIALS:
            mp.delenv(name, raising=False)
        with Sandbox(seed=13, people=300, base_port=0, systems=["katana"]) as sandbox:
            yield sandbox


@pytest.fixture(autouse=True)
def _fresh(sb: Sandbox) -> None:
    sb.reset()


def katana(sb: Sandbox, fmt: str = "iso_z", oauth: bool = True, env: dict | None = None):
    return from_yaml(
        KATANA_REST,
        "katana_rest",
        env=env,
        url=sb.urls["katana"],
        fmt=fmt,
        auth=OAUTH if oauth else API_KEY,
        creds=OAUTH_CREDS if oauth else API_KEY_CREDS,
    )


def test_oauth2_client_credentials_fetches_one_token_and_reads_every_page(sb):
    conn = katana(sb)
    result = conn.read()
    stored = sb.records("katana")
    assert sorted(result.records["id"]) == sorted(r["id"] for r in stored)
    assert result.stats.pages == -(-len(stored) // 7)  # next links from the Link header
    # one token for the whole multi-page read: it is cached until shortly before expiry
    assert sb.emulators["katana"].stats["tokens_issued"] == 1
    # the API really wants the token: without any auth it refuses
    plain = requests.get(f"{sb.urls['katana']}/api/v1/customers", timeout=10)
    assert plain.status_code == 401


def test_oauth2_token_is_renewed_when_it_expires(monkeypatch):
    for name in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    # a 61 s token: renewed a minute early, so after one second every request fetches anew
    with Sandbox(
        seed=13, people=40, systems=["katana"], options={"katana": {"token_ttl": 61}}
    ) as sb:
        conn = katana(sb)
        conn.read()
        first = sb.emulators["katana"].stats["tokens_issued"]
        assert first >= 1
        time.sleep(1.1)
        conn.read()
        assert sb.emulators["katana"].stats["tokens_issued"] > first


def test_oauth2_wrong_client_secret_is_a_clear_error_without_the_secret(sb):
    secret = "definitely-wrong-client-secret"
    env = {**CREDENTIALS, "KATANA_CLIENT_SECRET": secret}
    conn = katana(sb, env=env)
    with pytest.raises(ConnectorError) as info:
        conn.read()
    text = str(info.value)
    assert "401" in text and "Client authentication failed" in text and "/oauth/token" in text
    assert secret not in text and not info.value.transient


def test_link_header_is_followed_when_the_body_has_no_next_path(sb):
    # the same API, read with the api key: pages follow Link: <...>; rel="next"
    conn = katana(sb, oauth=False)
    result = conn.read()
    assert len(result.records) == len(sb.records("katana"))
    assert result.stats.pages == -(-len(result.records) // 7)
    assert result.stats.requests == result.stats.pages


@pytest.mark.parametrize("fmt", ["epoch", "epoch_ms", "iso", "iso_z"])
def test_incremental_formats_are_understood_by_the_api(sb, fmt):
    conn = katana(sb, fmt=fmt)
    full = conn.read()
    changed = sb.changes("katana", edit=2, delete=1, add=3, seed=5)
    inc = conn.read(since=full.watermark)
    got = set(inc.records["id"])
    assert set(changed["edited"]) | set(changed["added"]) <= got
    assert len(got) < len(full.records) / 4  # the API filtered: a change pull, not a snapshot
    assert set(changed["deleted"]) <= set(inc.deleted_ids)
    assert inc.watermark > full.watermark
    # the formats differ in resolution: a pull from just after the newest change is empty
    # (epoch seconds round down, so the overlap is what brings records back)
    later = conn.read(since=inc.watermark + timedelta(minutes=20))
    assert len(later.records) == 0 and later.watermark is None
