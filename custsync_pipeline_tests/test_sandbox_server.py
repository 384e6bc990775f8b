"""Salesforce and Voucherify emulators over real sockets (plain ``requests``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests

from custsync_pipeline.sandbox import Sandbox
from custsync_pipeline.sandbox.generator import GEN_NOW
from custsync_pipeline_tests.sandbox_fixtures import (
    SF_HEADERS,
    VF_HEADERS,
    admin,
    running_sandbox,
    sandbox_fixture,
)

V = "/services/data/v60.0"


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch):
    yield from sandbox_fixture(monkeypatch)


def soql(sb: Sandbox, q: str, **kw) -> requests.Response:
    return requests.get(
        f"{sb.urls['salesforce']}{V}/query", params={"q": q}, headers=SF_HEADERS, timeout=10, **kw
    )


def query_all(sb: Sandbox, q: str) -> tuple[list[dict], int]:
    resp = soql(sb, q)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    records, pages = list(body["records"]), 1
    while not body["done"]:
        body = requests.get(
            sb.urls["salesforce"] + body["nextRecordsUrl"], headers=SF_HEADERS, timeout=10
        ).json()
        records += body["records"]
        pages += 1
    return records, pages


# ----------------------------------------------------------------------------- Salesforce


def test_salesforce_query_pages_through_every_contact():
    with running_sandbox(options={"salesforce": {"page_size": 50}}) as sb:
        records, pages = query_all(sb, "SELECT Id, Email, LastModifiedDate FROM Contact")
        stored = sb.records("salesforce")
        assert pages == -(-len(stored) // 50) and pages > 1
        assert [r["Id"] for r in records] == [r["Id"] for r in stored]
        first = records[0]
        assert set(first) == {"attributes", "Id", "Email", "LastModifiedDate"}
        assert first["attributes"] == {
            "type": "Contact",
            "url": f"{V}/sobjects/Contact/{first['Id']}",
        }


def test_salesforce_where_last_modified_filters(sandbox):
    cutoff = "2026-01-01T00:00:00Z"
    records, _ = query_all(
        sandbox,
        f"SELECT Id, LastModifiedDate FROM Contact WHERE LastModifiedDate > {cutoff} ORDER BY LastModifiedDate",
    )
    expected = [
        r
        for r in sandbox.records("salesforce")
        if r["LastModifiedDate"] > "2026-01-01T00:00:00.000+0000"
    ]
    assert len(records) == len(expected) > 0
    stamps = [r["LastModifiedDate"] for r in records]
    assert stamps == sorted(stamps)


def test_salesforce_bad_soql_and_unknown_field(sandbox):
    bad = soql(sandbox, "SELEKT Id FROM Contact")
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "MALFORMED_QUERY"
    unknown = soql(sandbox, "SELECT Id, Nope__c FROM Contact")
    assert unknown.status_code == 400 and unknown.json()[0]["errorCode"] == "INVALID_FIELD"


def test_salesforce_auth_enforced_and_limit_header(sandbox):
    resp = requests.get(
        f"{sandbox.urls['salesforce']}{V}/query",
        params={"q": "SELECT Id FROM Contact"},
        headers={"Authorization": "Bearer wrong"},
        timeout=10,
    )
    assert resp.status_code == 401
    assert resp.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID", "fields": []}
    ]
    ok = soql(sandbox, "SELECT Id FROM Contact")
    assert ok.headers["Sforce-Limit-Info"].startswith("api-usage=")


def test_salesforce_daily_quota_answers_403():
    with running_sandbox(options={"salesforce": {"daily_limit": 2}}) as sb:
        assert soql(sb, "SELECT Id FROM Contact").status_code == 200
        assert soql(sb, "SELECT Id FROM Contact").status_code == 200
        third = soql(sb, "SELECT Id FROM Contact")
        assert third.status_code == 403 and third.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
        assert third.headers["Sforce-Limit-Info"] == "api-usage=3/2"


def test_salesforce_upsert_one_created_updated_and_ambiguous(sandbox):
    base = f"{sandbox.urls['salesforce']}{V}/sobjects/Contact/Custsync_Id__c"
    body = {"FirstName": "Ada", "LastName": "Lovelace", "Email": "ada@example.org"}
    created = requests.patch(f"{base}/G-1", json=body, headers=SF_HEADERS, timeout=10)
    assert created.status_code == 201 and created.json()["created"] is True
    new_id = created.json()["id"]
    updated = requests.patch(
        f"{base}/G-1", json={"Phone": "+46701234567"}, headers=SF_HEADERS, timeout=10
    )
    assert updated.status_code == 204
    rec = requests.get(
        f"{sandbox.urls['salesforce']}{V}/sobjects/Contact/{new_id}", headers=SF_HEADERS, timeout=10
    ).json()
    assert (
        rec["Phone"] == "+46701234567"
        and rec["LastName"] == "Lovelace"
        and rec["Custsync_Id__c"] == "G-1"
    )
    assert rec["LastModifiedDate"] > str(GEN_NOW)
    # stamp the same golden id on a second contact -> the ext id is ambiguous
    other = sandbox.records("salesforce")[0]["Id"]
    stamp = {
        "allOrNone": False,
        "records": [{"attributes": {"type": "Contact"}, "Id": other, "Custsync_Id__c": "G-1"}],
    }
    assert requests.patch(
        f"{sandbox.urls['salesforce']}{V}/composite/sobjects",
        json=stamp,
        headers=SF_HEADERS,
        timeout=10,
    ).json()[0]["success"]
    before = sandbox.records("salesforce")
    ambiguous = requests.patch(
        f"{base}/G-1", json={"LastName": "X"}, headers=SF_HEADERS, timeout=10
    )
    assert ambiguous.status_code == 300 and len(ambiguous.json()) == 2
    assert sandbox.records("salesforce") == before  # nothing written


def test_salesforce_composite_upsert_results_in_order(sandbox):
    url = f"{sandbox.urls['salesforce']}{V}/composite/sobjects/Contact/Custsync_Id__c"
    recs = [
        {
            "attributes": {"type": "Contact"},
            "Custsync_Id__c": "G-10",
            "LastName": "One",
            "Email": "one@x.se",
        },
        {
            "attributes": {"type": "Contact"},
            "Custsync_Id__c": "G-11",
            "LastName": "Two",
            "Email": "not-an-email",
        },
        {"attributes": {"type": "Contact"}, "Custsync_Id__c": "G-12", "LastName": "Three"},
    ]
    resp = requests.patch(
        url, json={"allOrNone": False, "records": recs}, headers=SF_HEADERS, timeout=10
    )
    assert resp.status_code == 200
    out = resp.json()
    assert [r["success"] for r in out] == [True, False, True]
    assert (
        out[0]["created"] is True and out[1]["errors"][0]["statusCode"] == "INVALID_EMAIL_ADDRESS"
    )
    again = requests.patch(
        url,
        json={"allOrNone": False, "records": [{**recs[0], "LastName": "Uno"}]},
        headers=SF_HEADERS,
        timeout=10,
    ).json()
    assert again[0] == {"id": out[0]["id"], "success": True, "errors": [], "created": False}
    stored = {
        r["Custsync_Id__c"]: r for r in sandbox.records("salesforce") if r.get("Custsync_Id__c")
    }
    assert stored["G-10"]["LastName"] == "Uno" and "G-11" not in stored and "G-12" in stored
    too_many = requests.patch(
        url, json={"allOrNone": False, "records": [recs[0]] * 201}, headers=SF_HEADERS, timeout=10
    )
    assert too_many.status_code == 400


def test_salesforce_all_or_none_rolls_back(sandbox):
    url = f"{sandbox.urls['salesforce']}{V}/composite/sobjects/Contact/Custsync_Id__c"
    recs = [
        {"attributes": {"type": "Contact"}, "Custsync_Id__c": "G-20", "LastName": "Fine"},
        {
            "attributes": {"type": "Contact"},
            "Custsync_Id__c": "G-21",
            "LastName": "Bad",
            "Email": "bad@",
        },
    ]
    out = requests.patch(
        url, json={"allOrNone": True, "records": recs}, headers=SF_HEADERS, timeout=10
    ).json()
    assert not any(r["success"] for r in out)
    assert out[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert not [
        r for r in sandbox.records("salesforce") if r.get("Custsync_Id__c") in ("G-20", "G-21")
    ]


def test_salesforce_deleted_feed_after_changes(sandbox):
    start = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    done = admin(sandbox, "salesforce", "changes", {"edit": 3, "delete": 2, "add": 4}).json()
    assert len(done["edited"]) == 3 and len(done["deleted"]) == 2 and len(done["added"]) == 4
    end = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    feed = requests.get(
        f"{sandbox.urls['salesforce']}{V}/sobjects/Contact/deleted/",
        params={"start": start, "end": end},
        headers=SF_HEADERS,
        timeout=10,
    ).json()
    assert sorted(r["id"] for r in feed["deletedRecords"]) == sorted(done["deleted"])
    changed, _ = query_all(sandbox, f"SELECT Id FROM Contact WHERE LastModifiedDate > {start}")
    assert sorted(r["Id"] for r in changed) == sorted(done["edited"] + done["added"])
    truth = admin(sandbox, "salesforce", "truth").json()
    assert set(done["added"]) <= {t["source_id"] for t in truth}


# ----------------------------------------------------------------------------- Voucherify


def vf_list(sb: Sandbox, **params) -> requests.Response:
    return requests.get(
        f"{sb.urls['voucherify']}/v1/customers", params=params, headers=VF_HEADERS, timeout=10
    )


def test_voucherify_pages_with_has_more(sandbox):
    seen, page = [], 1
    while True:
        body = vf_list(sandbox, limit=40, page=page, order="created_at").json()
        assert body["object"] == "list" and body["data_ref"] == "customers"
        assert isinstance(body["has_more"], bool)
        seen += body["customers"]
        if not body["has_more"]:
            break
        page += 1
    stored = sandbox.records("voucherify")
    assert body["total"] == len(stored) and page == -(-len(stored) // 40)
    assert sorted(c["id"] for c in seen) == sorted(c["id"] for c in stored)
    assert all(c["object"] == "customer" for c in seen)
    assert vf_list(sandbox, limit=101).status_code == 400
    assert vf_list(sandbox, limit=10, page=100).status_code == 400


def test_voucherify_auth_enforced_and_rate_headers(sandbox):
    resp = requests.get(
        f"{sandbox.urls['voucherify']}/v1/customers",
        headers={"X-App-Id": "x", "X-App-Token": "y"},
        timeout=10,
    )
    assert resp.status_code == 401 and set(resp.json()) == {
        "code",
        "key",
        "message",
        "details",
        "request_id",
    }
    ok = vf_list(sandbox, limit=1)
    assert int(ok.headers["X-Rate-Limit-Remaining"]) < int(ok.headers["X-Rate-Limit-Limit"])


def test_voucherify_upsert_by_source_id_and_read_back(sandbox):
    url = f"{sandbox.urls['voucherify']}/v1/customers"
    created = requests.post(
        url,
        json={"source_id": "G-100", "name": "Ada L", "email": "ada@x.se"},
        headers=VF_HEADERS,
        timeout=10,
    ).json()
    assert created["id"].startswith("cust_") and created["object"] == "customer"
    updated = requests.post(
        url, json={"source_id": "G-100", "phone": "+46701234567"}, headers=VF_HEADERS, timeout=10
    ).json()
    assert (
        updated["id"] == created["id"]
        and updated["name"] == "Ada L"
        and updated["phone"] == "+46701234567"
    )
    got = requests.get(f"{url}/G-100", headers=VF_HEADERS, timeout=10).json()
    assert got["id"] == created["id"]
    put = requests.put(
        f"{url}/{created['id']}", json={"address": {"city": "Lund"}}, headers=VF_HEADERS, timeout=10
    ).json()
    assert put["address"]["city"] == "Lund" and put["email"] == "ada@x.se"
    newest = vf_list(sandbox, limit=5, updated_at_after=f"{GEN_NOW}Z").json()
    assert [c["id"] for c in newest["customers"]] == [created["id"]]
    assert (
        requests.delete(f"{url}/{created['id']}", headers=VF_HEADERS, timeout=10).status_code == 204
    )
    assert requests.get(f"{url}/G-100", headers=VF_HEADERS, timeout=10).status_code == 404


def test_voucherify_source_id_is_immutable(sandbox):
    url = f"{sandbox.urls['voucherify']}/v1/customers"
    rec = next(r for r in sandbox.records("voucherify") if r["source_id"])
    resp = requests.post(
        url, json={"id": rec["id"], "source_id": "changed"}, headers=VF_HEADERS, timeout=10
    )
    assert resp.status_code == 400
    assert set(resp.json()) == {"code", "key", "message", "details", "request_id"}
    put = requests.put(
        f"{url}/{rec['id']}", json={"source_id": "changed"}, headers=VF_HEADERS, timeout=10
    )
    assert put.status_code == 400
    stored = next(r for r in sandbox.records("voucherify") if r["id"] == rec["id"])
    assert stored["source_id"] == rec["source_id"]
    # a customer without one gets it set once
    bare = next(r for r in sandbox.records("voucherify") if not r["source_id"])
    first = requests.post(
        url, json={"id": bare["id"], "source_id": "G-7"}, headers=VF_HEADERS, timeout=10
    )
    assert first.status_code == 200 and first.json()["source_id"] == "G-7"


# ----------------------------------------------------------------------------- admin and faults


def test_admin_records_truth_reset(sandbox):
    records = admin(sandbox, "voucherify", "records").json()
    truth = admin(sandbox, "voucherify", "truth").json()
    assert sorted(r["id"] for r in records) == sorted(t["source_id"] for t in truth)
    requests.delete(
        f"{sandbox.urls['voucherify']}/v1/customers/{records[0]['id']}",
        headers=VF_HEADERS,
        timeout=10,
    )
    assert len(admin(sandbox, "voucherify", "records").json()) == len(records) - 1
    admin(sandbox, "voucherify", "reset", {})
    assert len(admin(sandbox, "voucherify", "records").json()) == len(records)


def test_fault_injection_is_seeded_and_visible(sandbox):
    def run() -> list[int]:
        admin(
            sandbox,
            "salesforce",
            "faults",
            {"rate_429": 0.3, "rate_5xx": 0.2, "retry_after": 2, "seed": 5},
        )
        codes = [soql(sandbox, "SELECT Id FROM Contact LIMIT 1").status_code for _ in range(40)]
        admin(sandbox, "salesforce", "faults", {"rate_429": 0, "rate_5xx": 0})
        return codes

    first, second = run(), run()
    assert first == second  # same seed, same faults
    assert {200, 429, 503} <= set(first)
    limited = None
    admin(sandbox, "salesforce", "faults", {"rate_429": 1.0, "retry_after": 2})
    limited = soql(sandbox, "SELECT Id FROM Contact")
    admin(sandbox, "salesforce", "faults", {"rate_429": 0})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    stats = admin(sandbox, "salesforce", "stats").json()
    assert stats["429"] >= 1 and stats["5xx"] >= 1
    assert admin(sandbox, "salesforce", "faults", {"bogus": 1}).status_code == 400


def test_malformed_page_once(sandbox):
    admin(sandbox, "voucherify", "faults", {"malformed_pages": 1})
    broken = vf_list(sandbox, limit=5)
    assert broken.status_code == 200
    try:
        broken.json()
        raise AssertionError("expected a truncated body")
    except requests.exceptions.JSONDecodeError:
        pass
    assert vf_list(sandbox, limit=5).json()["object"] == "list"


def test_salesforce_leads_and_accounts_are_queryable(sandbox):
    leads, _ = query_all(sandbox, "SELECT Id, FirstName, LastName, Email, Company FROM Lead")
    stored = sandbox.records("salesforce", "Lead")
    assert len(leads) == len(stored) > 0 and leads[0]["attributes"]["type"] == "Lead"
    accounts, _ = query_all(sandbox, "SELECT Id, Name FROM Account")
    assert {a["Id"] for a in accounts} == {
        a["Id"] for a in sandbox.records("salesforce", "Account")
    }
    linked, _ = query_all(sandbox, "SELECT Id, AccountId FROM Contact WHERE AccountId != null")
    assert linked and {c["AccountId"] for c in linked} <= {a["Id"] for a in accounts}
    truth = admin(sandbox, "salesforce", "truth").json()
    assert {t["source_id"] for t in truth if t["object_type"] == "Lead"} == {
        r["Id"] for r in stored
    }
    assert admin(sandbox, "salesforce", "records?object=Lead").json() == stored


def test_voucherify_bulk_async_upserts(sandbox):
    base = sandbox.urls["voucherify"]
    existing = next(r for r in sandbox.records("voucherify") if r["source_id"])
    body = [
        {"source_id": existing["source_id"], "name": "Renamed"},
        {"source_id": "G-new", "email": "new@x.se"},
        {"name": "no source id"},
    ]
    resp = requests.post(
        f"{base}/v1/customers/bulk/async", json=body, headers=VF_HEADERS, timeout=10
    )
    assert resp.status_code == 202
    action = requests.get(
        f"{base}/v1/async-actions/{resp.json()['async_action_id']}", headers=VF_HEADERS, timeout=10
    ).json()
    assert action["status"] == "DONE"
    assert [(r["updated"], r["found"]) for r in action["result"]["results"]] == [
        (True, True),
        (True, False),
        (False, False),
    ]
    by_src = {r["source_id"]: r for r in sandbox.records("voucherify") if r["source_id"]}
    assert (
        by_src[existing["source_id"]]["name"] == "Renamed"
        and by_src["G-new"]["email"] == "new@x.se"
    )
    too_many = requests.post(
        f"{base}/v1/customers/bulk/async",
        json=[{"source_id": str(i)} for i in range(101)],
        headers=VF_HEADERS,
        timeout=10,
    )
    assert too_many.status_code == 400


def test_salesforce_in_like_query_all_and_updated(sandbox):
    stored = sandbox.records("salesforce")
    ids = [stored[0]["Id"], stored[1]["Id"]]
    got, _ = query_all(sandbox, f"SELECT Id FROM Contact WHERE Id IN ('{ids[0]}', '{ids[1]}')")
    assert sorted(r["Id"] for r in got) == sorted(ids)
    rest, _ = query_all(sandbox, f"SELECT Id FROM Contact WHERE Id NOT IN ('{ids[0]}')")
    assert len(rest) == len(stored) - 1
    domain = stored[0]["Email"].split("@")[1] if stored[0]["Email"] else "gmail.com"
    like, _ = query_all(sandbox, f"SELECT Id, Email FROM Contact WHERE Email LIKE '%@{domain}'")
    assert like and all(r["Email"].lower().endswith("@" + domain.lower()) for r in like)

    start = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    url = f"{sandbox.urls['salesforce']}{V}/sobjects/Contact/{ids[0]}"
    assert requests.delete(url, headers=SF_HEADERS, timeout=10).status_code == 204
    assert (
        requests.patch(
            f"{sandbox.urls['salesforce']}{V}/sobjects/Contact/{ids[1]}",
            json={"Title": "Dr"},
            headers=SF_HEADERS,
            timeout=10,
        ).status_code
        == 204
    )
    live, _ = query_all(sandbox, "SELECT Id FROM Contact")
    assert ids[0] not in {r["Id"] for r in live}
    body = requests.get(
        f"{sandbox.urls['salesforce']}{V}/queryAll",
        params={"q": "SELECT Id, IsDeleted FROM Contact WHERE IsDeleted = true"},
        headers=SF_HEADERS,
        timeout=10,
    ).json()
    assert [(r["Id"], r["IsDeleted"]) for r in body["records"]] == [(ids[0], True)]
    end = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    upd = requests.get(
        f"{sandbox.urls['salesforce']}{V}/sobjects/Contact/updated/",
        params={"start": start, "end": end},
        headers=SF_HEADERS,
        timeout=10,
    ).json()
    assert upd["ids"] == [ids[1]]
