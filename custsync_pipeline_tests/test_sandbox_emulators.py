"""Voyado, Exact Online, Icomm and KatanaPIM emulators over real sockets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
import requests

from custsync_pipeline.sandbox import CREDENTIALS, Sandbox
from custsync_pipeline.sandbox.generator import GEN_NOW
from custsync_pipeline_tests.sandbox_fixtures import admin, sandbox_fixture

VY = {"apikey": CREDENTIALS["VOYADO_API_KEY"], "Content-Type": "application/json"}
EX = {"Authorization": f"Bearer {CREDENTIALS['EXACT_ACCESS_TOKEN']}"}
IC = {"X-Api-Key": CREDENTIALS["ICOMM_API_KEY"]}
KT = {"X-Api-Key": CREDENTIALS["KATANA_API_KEY"]}


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch):
    yield from sandbox_fixture(monkeypatch)


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------- Voyado


def test_voyado_auth_and_content_type(sandbox: Sandbox):
    url = f"{sandbox.urls['voyado']}/api/v3/contacts"
    assert requests.get(url, headers={"apikey": "nope"}, timeout=10).status_code == 401
    no_ct = requests.post(
        url, data=b'{"email": "a@b.se"}', headers={"apikey": VY["apikey"]}, timeout=10
    )
    assert (
        no_ct.status_code == 500
    )  # the real API answers 500 without Content-Type: application/json


def test_voyado_create_find_patch_overwrites_and_consents(sandbox: Sandbox):
    url = f"{sandbox.urls['voyado']}/api/v3/contacts"
    created = requests.post(
        url,
        json={"email": "ada@x.se", "firstName": "Ada", "mobilePhone": "+46701234567",
              "preferences": {"acceptsEmail": "Yes"}},
        headers=VY, timeout=10,
    )  # fmt: skip
    assert created.status_code == 201
    cid = created.json()["id"]
    found = requests.get(f"{url}/id", params={"email": " ADA@x.se"}, headers=VY, timeout=10)
    assert found.status_code == 200 and found.json() == cid
    assert (
        requests.get(f"{url}/id", params={"email": "nobody@x.se"}, headers=VY, timeout=10).json()[
            "errorCode"
        ]
        == "ContactNotFound"
    )
    dup = requests.post(url, json={"email": "ada@x.se"}, headers=VY, timeout=10)
    assert dup.status_code == 409
    # an empty value overwrites; a set consent never returns to "Not set"
    patched = requests.patch(
        f"{url}/{cid}", json={"firstName": "", "mobilePhone": None, "preferences": {"acceptsEmail": "Not set"}},
        headers=VY, timeout=10,
    ).json()  # fmt: skip
    assert patched["firstName"] == "" and patched["mobilePhone"] is None
    assert patched["preferences"]["acceptsEmail"] == "Yes"
    flipped = requests.patch(
        f"{url}/{cid}", json={"preferences": {"acceptsEmail": "No"}}, headers=VY, timeout=10
    )
    assert flipped.json()["preferences"]["acceptsEmail"] == "No"
    # two contacts with one e-mail -> MultipleMatches
    other = sandbox.records("voyado")[0]["id"]
    requests.patch(f"{url}/{other}", json={"email": "ada@x.se"}, headers=VY, timeout=10)
    multi = requests.get(f"{url}/id", params={"email": "ada@x.se"}, headers=VY, timeout=10)
    assert multi.status_code == 409 and multi.json()["errorCode"] == "MultipleMatches"


def test_voyado_bulk_and_change_feed(sandbox: Sandbox):
    url = f"{sandbox.urls['voyado']}/api/v3/contacts"
    too_many = requests.post(
        f"{url}/bulk", json=[{"email": f"x{i}@x.se"} for i in range(4001)], headers=VY, timeout=30
    )
    assert too_many.status_code == 400
    start = iso(datetime.now(UTC) - timedelta(minutes=1))
    bulk = requests.post(
        f"{url}/bulk", json=[{"email": "b1@x.se"}, {"firstName": "no key"}], headers=VY, timeout=10
    ).json()
    assert [r["success"] for r in bulk["results"]] == [True, False]
    status = requests.get(
        f"{url}/bulk/status", params={"batchId": bulk["batchId"]}, headers=VY, timeout=10
    ).json()
    assert status["status"] == "Completed"
    done = admin(sandbox, "voyado", "changes", {"edit": 2, "delete": 3, "add": 1}).json()
    end = iso(datetime.now(UTC) + timedelta(minutes=1))

    def feed(kind: str) -> set[str]:
        r = requests.get(
            f"{url}/changes",
            params={"changeType": kind, "fromDate": start, "toDate": end},
            headers=VY,
            timeout=10,
        )
        assert r.status_code == 200
        return set(r.json())

    assert feed("Deleted") == set(done["deleted"])
    assert feed("Created") == {bulk["results"][0]["contactId"], *done["added"]}
    assert feed("Updated") >= set(done["edited"])
    listed = requests.get(url, params={"offset": 0, "count": 1000}, headers=VY, timeout=10).json()
    assert listed["totalCount"] == len(sandbox.records("voyado"))


# ----------------------------------------------------------------------------- Exact Online


def exact_all(sb: Sandbox, resource: str, **params) -> tuple[list[dict], int]:
    url = f"{sb.urls['exact']}/api/v1/1/crm/{resource}"
    body = requests.get(url, params=params, headers=EX, timeout=10).json()["d"]
    out, pages = list(body["results"]), 1
    while body.get("__next"):
        body = requests.get(body["__next"], headers=EX, timeout=10).json()["d"]
        out += body["results"]
        pages += 1
    return out, pages


def test_exact_odata_paging_filter_and_headers(sandbox: Sandbox):
    accounts, pages = exact_all(sandbox, "Accounts")
    stored = sandbox.records("exact")
    assert len(accounts) == len(stored) and pages == -(-len(stored) // 60)
    assert len({a["ID"] for a in accounts}) == len(accounts)
    assert accounts[0]["__metadata"]["type"] == "Exact.Web.Api.Models.Account"
    assert all(len(a["Code"]) == 18 for a in accounts)
    cutoff = datetime(2026, 1, 1, tzinfo=UTC)
    recent, _ = exact_all(
        sandbox,
        "Accounts",
        **{"$filter": "Modified ge datetime'2026-01-01T00:00:00'", "$select": "ID,Modified"},
    )
    expected = [a for a in stored if int(a["Modified"][6:-2]) >= cutoff.timestamp() * 1000]
    assert {a["ID"] for a in recent} == {a["ID"] for a in expected} and set(recent[0]) == {
        "__metadata",
        "ID",
        "Modified",
    }
    contacts, _ = exact_all(sandbox, "Contacts")
    assert len(contacts) > 0 and {c["Account"] for c in contacts} <= {a["ID"] for a in accounts}
    assert {c["ID"] for c in contacts} == {c["ID"] for c in sandbox.records("exact", "Contacts")}
    resp = requests.get(f"{sandbox.urls['exact']}/api/v1/1/crm/Accounts", headers=EX, timeout=10)
    assert int(resp.headers["X-RateLimit-Minutely-Remaining"]) >= 0
    assert int(resp.headers["X-RateLimit-Minutely-Reset"]) > datetime.now(UTC).timestamp() * 1000
    assert (
        requests.get(f"{sandbox.urls['exact']}/api/v1/1/crm/Accounts", timeout=10).status_code
        == 401
    )
    assert (
        requests.get(
            f"{sandbox.urls['exact']}/api/v1/999/crm/Accounts", headers=EX, timeout=10
        ).status_code
        == 403
    )
    bad = requests.get(
        f"{sandbox.urls['exact']}/api/v1/1/crm/Accounts",
        params={"$filter": "Modified >> x"},
        headers=EX,
        timeout=10,
    )
    assert bad.status_code == 400 and "value" in bad.json()["error"]["message"]


def test_exact_write_read_back_and_minutely_limit():
    with Sandbox(people=100, systems=["exact"], options={"exact": {"minutely_limit": 5}}) as sb:
        url = f"{sb.urls['exact']}/api/v1/1/crm/Accounts"
        created = requests.post(
            url,
            json={"Name": "Ada Lovelace", "Email": "ada@x.se"},
            headers={**EX, "Prefer": "return=representation"},
            timeout=10,
        )
        assert created.status_code == 201
        rec = created.json()["d"]
        assert len(rec["Code"]) == 18 and rec["Code"].strip().isdigit()
        put = requests.put(
            f"{url}(guid'{rec['ID']}')", json={"City": "Lund"}, headers=EX, timeout=10
        )
        assert put.status_code == 204
        back = requests.get(f"{url}(guid'{rec['ID']}')", headers=EX, timeout=10).json()["d"]
        assert back["City"] == "Lund" and back["Name"] == "Ada Lovelace"
        codes = [requests.get(url, headers=EX, timeout=10).status_code for _ in range(3)]
        assert codes[-1] == 429  # 6th call in the minute


# ----------------------------------------------------------------------------- Icomm


def test_icomm_paging_upsert_by_email_and_deletes(sandbox: Sandbox):
    base = f"{sandbox.urls['icomm']}/api/v1/profiles/1"
    seen, offset = [], 0
    while True:
        body = requests.get(
            f"{base}/customers", params={"offset": offset, "limit": 50}, headers=IC, timeout=10
        ).json()
        seen += body["items"]
        offset += 50
        if offset >= body["total"]:
            break
    assert sorted(f"{c['UserId']}|{c['StoreCode']}" for c in seen) == sorted(
        f"{c['UserId']}|{c['StoreCode']}" for c in sandbox.records("icomm")
    )
    assert (
        requests.get(f"{base}/customers", headers={"X-Api-Key": "x"}, timeout=10).status_code == 401
    )
    new = requests.post(f"{base}/contacts/upsert", json={"Email": "ada@x.se", "StoreCode": "SE01", "FirstName": "Ada",
                        "CustomFields": [{"Key": "Tier", "Value": "Gold"}]}, headers=IC, timeout=10)  # fmt: skip
    assert new.status_code == 201 and new.json() == {
        "UserId": "ada@x.se",
        "StoreCode": "SE01",
        "Created": True,
    }
    again = requests.post(f"{base}/contacts/upsert", json={"Email": " ADA@x.se ", "LastName": "L",
                          "CustomFields": [{"Key": "Lang", "Value": "sv"}]}, headers=IC, timeout=10)  # fmt: skip
    assert again.status_code == 200 and again.json()["Created"] is False
    one = requests.get(f"{base}/customers/SE01/{quote('ada@x.se')}", headers=IC, timeout=10).json()
    assert one["FirstName"] == "Ada" and one["LastName"] == "L"
    assert {c["Key"]: c["Value"] for c in one["CustomFields"]} == {"Tier": "Gold", "Lang": "sv"}
    batch = requests.post(
        f"{base}/contacts/upsert-batch",
        json=[{"Email": "b@x.se"}, {"Email": "not-an-email"}],
        headers=IC,
        timeout=10,
    ).json()
    assert [r["Success"] for r in batch] == [True, False]
    since = iso(datetime.now(UTC) - timedelta(minutes=1))
    assert (
        requests.delete(
            f"{base}/customers/SE01/{quote('ada@x.se')}", headers=IC, timeout=10
        ).status_code
        == 204
    )
    gone = requests.get(
        f"{base}/customers/deleted", params={"since": since}, headers=IC, timeout=10
    ).json()
    assert gone[0]["UserId"] == "ada@x.se" and gone[0]["StoreCode"] == "SE01"


# ----------------------------------------------------------------------------- KatanaPIM


def test_katana_next_link_paging_and_writes(sandbox: Sandbox):
    url = f"{sandbox.urls['katana']}/api/v1/customers"
    body = requests.get(url, params={"per_page": 20}, headers=KT, timeout=10).json()
    seen = list(body["data"])
    while body["links"]["next"]:
        body = requests.get(body["links"]["next"], headers=KT, timeout=10).json()
        seen += body["data"]
    assert sorted(c["id"] for c in seen) == sorted(c["id"] for c in sandbox.records("katana"))
    assert requests.get(url, headers={"X-Api-Key": "x"}, timeout=10).status_code == 401
    created = requests.post(
        url,
        json={"first_name": "Ada", "email": "ada@x.se", "attributes": {"segment": "vip"}},
        headers=KT,
        timeout=10,
    )
    assert created.status_code == 201
    kid = created.json()["id"]
    patched = requests.patch(
        f"{url}/{kid}", json={"attributes": {"tier": "gold"}}, headers=KT, timeout=10
    ).json()
    assert (
        patched["attributes"] == {"segment": "vip", "tier": "gold"}
        and patched["email"] == "ada@x.se"
    )
    newer = requests.get(
        url, params={"updated_since": f"{GEN_NOW}Z"}, headers=KT, timeout=10
    ).json()
    assert [c["id"] for c in newer["data"]] == [kid]
    since = iso(datetime.now(UTC) - timedelta(minutes=1))
    assert requests.delete(f"{url}/{kid}", headers=KT, timeout=10).status_code == 204
    assert (
        requests.get(f"{url}/deleted", params={"since": since}, headers=KT, timeout=10).json()[
            "data"
        ][0]["id"]
        == kid
    )


# ----------------------------------------------------------------------------- faults, every system

PROBES = {
    "salesforce": (
        "/services/data/v60.0/query?q=SELECT+Id+FROM+Contact",
        {"Authorization": f"Bearer {CREDENTIALS['SALESFORCE_ACCESS_TOKEN']}"},
    ),
    "voucherify": (
        "/v1/customers",
        {
            "X-App-Id": CREDENTIALS["VOUCHERIFY_APP_ID"],
            "X-App-Token": CREDENTIALS["VOUCHERIFY_APP_TOKEN"],
        },
    ),
    "voyado": ("/api/v3/contacts?count=5", VY),
    "exact": ("/api/v1/1/crm/Accounts", EX),
    "icomm": ("/api/v1/profiles/1/customers", IC),
    "katana": ("/api/v1/customers", KT),
    "shop": ("/api/v1/orders?limit=5", {"X-Shop-Key": CREDENTIALS["SHOP_API_KEY"]}),
}


def test_every_emulator_injects_429_and_503(sandbox: Sandbox):
    assert set(sandbox.urls) == set(PROBES)
    for system, (path, headers) in PROBES.items():
        url = sandbox.urls[system] + path
        assert requests.get(url, headers=headers, timeout=10).status_code == 200, system
        admin(sandbox, system, "faults", {"rate_429": 1.0, "retry_after": 3})
        limited = requests.get(url, headers=headers, timeout=10)
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "3", system
        assert limited.json(), system  # a vendor-shaped error body
        admin(sandbox, system, "faults", {"rate_429": 0.0, "rate_5xx": 1.0})
        assert requests.get(url, headers=headers, timeout=10).status_code == 503, system
        admin(sandbox, system, "faults", {"rate_5xx": 0.0})
        assert requests.get(url, headers=headers, timeout=10).status_code == 200, system


def test_changes_keep_truth_in_step(sandbox: Sandbox):
    for system in PROBES:
        before = {r["source_id"] for r in admin(sandbox, system, "truth").json()}
        done = admin(
            sandbox, system, "changes", {"edit": 1, "delete": 1, "add": 2, "seed": 3}
        ).json()
        after = {r["source_id"] for r in admin(sandbox, system, "truth").json()}
        assert set(done["added"]) <= after and len(done["added"]) == 2, system
        assert before <= after, system  # deleted records stay in the truth (they existed)


def test_voyado_rate_limit_knob():
    # max_rps=1: a second request within the same second is refused (two back-to-back calls)
    with Sandbox(people=30, systems=["voyado"], options={"voyado": {"max_rps": 1}}) as sb:
        url = f"{sb.urls['voyado']}/api/v3/contacts"
        with requests.Session() as s:
            first = s.get(url, params={"count": 1}, headers=VY, timeout=10)
            second = s.get(url, params={"count": 1}, headers=VY, timeout=10)
        assert first.status_code == 200
        assert second.status_code == 429 and second.headers["Retry-After"] == "1"


def test_voucherify_cursor_walk_equals_the_scanned_filter(sandbox) -> None:
    from custsync_pipeline_tests.sandbox_fixtures import VF_HEADERS

    url = f"{sandbox.urls['voucherify']}/v1/customers"
    first = requests.get(
        url, params={"limit": 100, "order": "created_at"}, headers=VF_HEADERS, timeout=10
    ).json()["customers"]
    cursor = first[len(first) // 2]["created_at"]
    fast = requests.get(
        url,
        params={"limit": 100, "order": "created_at", "starting_after": cursor},
        headers=VF_HEADERS,
        timeout=10,
    ).json()
    # a second, far-future filter makes the emulator scan every record instead
    scanned = requests.get(
        url,
        params={
            "limit": 100,
            "order": "created_at",
            "starting_after": cursor,
            "updated_at_before": "2999-01-01T00:00:00Z",
        },
        headers=VF_HEADERS,
        timeout=10,
    ).json()
    assert [c["id"] for c in fast["customers"]] == [c["id"] for c in scanned["customers"]]
    assert fast["total"] == scanned["total"] > 0
    assert all(c["created_at"] > cursor for c in fast["customers"])
