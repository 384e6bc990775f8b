"""Connector round trips against the sandbox emulators over real sockets (ephemeral ports).

Per connector: read all (equal to what the emulator stores), read
incrementally after the ``changes`` knob (edits, deletes, inserts), write a
batch and read it back; plus faults (20 % 429/5xx) giving exactly the
fault-free records, the daily quota failing fast, connection refused, and
secrets never in error text.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from custsync_pipeline.config import ConnectorConfig
from custsync_pipeline.connectors import (
    ConnectorError,
    ConnectorUnavailableError,
    CredentialError,
    QuotaExceededError,
    WriteOp,
    build_connector,
)
from custsync_pipeline.sandbox import CREDENTIALS, Sandbox
from custsync_pipeline_tests.sandbox_fixtures import closed_port

FAST_HTTP = {
    "backoff_factor_s": 0.01,
    "backoff_jitter_s": 0.01,
    "backoff_max_s": 0.05,
    "retry_after_max_s": 0.05,
    "max_retries": 8,
    "rate_per_s": None,
}

CONFIGS = {
    "salesforce": dict(
        type="salesforce",
        credentials={"access_token": "SALESFORCE_ACCESS_TOKEN"},
        options={"objects": ["Contact"], "http": FAST_HTTP},
    ),
    "voucherify": dict(
        type="voucherify",
        credentials={"app_id": "VOUCHERIFY_APP_ID", "app_token": "VOUCHERIFY_APP_TOKEN"},
        options={"http": FAST_HTTP, "source_id_patterns": {"web_user_id": r"^u\d{7}$"}},
    ),
}


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with pytest.MonkeyPatch.context() as mp:
        for name in CREDENTIALS:  # the emulators accept the documented defaults
            mp.delenv(name, raising=False)
        # small Salesforce pages so a read follows several nextRecordsUrl links
        with Sandbox(
            seed=11, people=400, base_port=0, options={"salesforce": {"page_size": 50}}
        ) as sandbox:
            yield sandbox


@pytest.fixture(autouse=True)
def _fresh(sb: Sandbox) -> None:
    sb.reset()


def connector(sb: Sandbox, system: str, **options):
    spec = dict(CONFIGS[system])
    spec["options"] = {**spec["options"], **options}
    cfg = ConnectorConfig(base_url=sb.urls[system], **spec)
    return build_connector(system, cfg, dict(CREDENTIALS))


def _ids(frame: pd.DataFrame, col: str) -> set[str]:
    return set(frame[col].astype(str)) if len(frame) else set()


# --------------------------------------------------------------------------- Salesforce


def test_salesforce_read_all_matches_the_org_and_maps_cross_references(sb):
    sf = connector(sb, "salesforce")
    result = sf.read()
    stored = sb.records("salesforce")
    assert _ids(result.records, "Id") == {r["Id"] for r in stored}
    assert len(result.records) == len(stored)
    assert result.stats.pages == -(-len(stored) // 50)
    assert result.watermark is not None
    canon = sf.to_canonical(result.records).set_index("source_id")
    with_ref = [r for r in stored if r.get("Voyado_Id__c") and r.get("Customer_Number__c")]
    assert with_ref, "the generator gives some contacts both references"
    for rec in with_ref[:20]:
        row = canon.loc[rec["Id"]]
        assert row["voyado_id"] == rec["Voyado_Id__c"]
        assert row["customer_number"] == rec["Customer_Number__c"]
        assert row["salesforce_id"] == rec["Id"]
    # values as received: normalization is another module's job
    some = next(r for r in stored if r.get("Email"))
    assert canon.loc[some["Id"], "email"] == some["Email"]
    assert set(canon["connector"]) == {"salesforce"}
    assert (canon["kind"] == "person").all()


def test_salesforce_incremental_sees_edits_inserts_and_deletes(sb):
    sf = connector(sb, "salesforce")
    full = sf.read()
    changed = sb.changes("salesforce", edit=4, delete=3, add=5, seed=1)
    inc = sf.read(since=full.watermark)
    got = _ids(inc.records, "Id")
    assert set(changed["edited"]) | set(changed["added"]) <= got
    assert not set(changed["deleted"]) & got
    assert set(changed["deleted"]) <= set(inc.deleted_ids)
    assert len(got) < len(full.records) / 4  # a change pull, not a snapshot
    assert inc.watermark is not None and inc.watermark > full.watermark


def test_salesforce_incremental_with_nothing_new_keeps_the_watermark(sb):
    sf = connector(sb, "salesforce", overlap_minutes=0)
    full = sf.read()
    again = sf.read(since=full.watermark)
    assert len(again.records) == 0
    assert again.watermark is None  # never advance on an empty pull


def test_salesforce_write_batch_then_read_back(sb):
    sf = connector(sb, "salesforce")
    existing = sb.records("salesforce")[:2]
    golden = pd.DataFrame(
        {
            "first_name": [f"Ny{i}" for i in range(203)],
            "last_name": [f"Kund{i}" for i in range(203)],
            "email": [f"ny{i}@example.se" for i in range(203)],
            "city": ["Lund"] * 203,
            "phone": [None] * 203,  # missing values are never sent
        }
    )
    payloads = sf.from_canonical(golden)
    assert "Phone" not in payloads[0] and payloads[0]["MailingCity"] == "Lund"
    ops = [
        WriteOp(golden_id=f"G{i:05d}", target_id=None, payload=p) for i, p in enumerate(payloads)
    ]
    ops += [
        WriteOp(golden_id="GUPD1", target_id=existing[0]["Id"], payload={"MailingCity": "Visby"}),
        WriteOp(golden_id="GUPD2", target_id=existing[1]["Id"], payload={"MailingCity": "Kiruna"}),
    ]
    before = sf.http.counters.requests
    results = sf.write(ops)
    assert [r.golden_id for r in results] == [op.golden_id for op in ops]
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    assert sf.http.counters.requests - before == 3  # 200 + 3 creates, 2 updates
    back = {r["Id"]: r for r in sb.records("salesforce")}
    created = {r["Custsync_Id__c"]: r for r in back.values() if r.get("Custsync_Id__c")}
    assert len(created) == 203
    assert created["G00007"]["LastName"] == "Kund7" and created["G00007"]["MailingCity"] == "Lund"
    assert results[7].target_id == created["G00007"]["Id"]
    assert back[existing[0]["Id"]]["MailingCity"] == "Visby"
    # the connector reads back what it wrote
    read_back = sf.to_canonical(sf.read().records).set_index("source_id")
    assert read_back.loc[created["G00007"]["Id"], "custsync_id"] == "G00007"
    # a replay is harmless: upsert by external id updates, creates nothing new
    again = sf.write(ops[:3])
    assert all(r.ok for r in again)
    assert len([r for r in sb.records("salesforce") if r.get("Custsync_Id__c")]) == 203


def test_salesforce_per_record_errors_carry_the_api_message(sb):
    sf = connector(sb, "salesforce")
    ops = [
        WriteOp("GOK", None, {"LastName": "Fine"}),
        WriteOp("GBAD", None, {"FirstName": "No last name"}),
        WriteOp("GMAIL", None, {"LastName": "X", "Email": "not-an-email"}),
        WriteOp("GGONE", "003Sb9999999999IAA", {"MailingCity": "Lund"}),
    ]
    res = sf.write(ops)
    assert [r.ok for r in res] == [True, False, False, False]
    assert "REQUIRED_FIELD_MISSING" in res[1].error and "LastName" in res[1].error
    assert "INVALID_EMAIL_ADDRESS" in res[2].error
    assert not res[1].transient


def test_salesforce_daily_quota_fails_fast(monkeypatch):
    for name in CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    with Sandbox(
        seed=3, people=50, systems=["salesforce"], options={"salesforce": {"daily_limit": 1}}
    ) as small:
        cfg = ConnectorConfig(base_url=small.urls["salesforce"], **CONFIGS["salesforce"])
        sf = build_connector("salesforce", cfg, dict(CREDENTIALS))
        sf.read()  # the one call of the day
        with pytest.raises(QuotaExceededError, match="REQUEST_LIMIT_EXCEEDED") as info:
            sf.read()
        assert not info.value.transient
        assert sf.http.counters.retries == 0
        with pytest.raises(QuotaExceededError):
            sf.write([WriteOp("G1", None, {"LastName": "X"})])


# --------------------------------------------------------------------------- Voucherify


def test_voucherify_read_all_pages_past_99_by_cursor(sb):
    stored = sb.records("voucherify")
    limit = 1  # 1 x 99 pages < customers: the reader must switch to starting_after
    assert len(stored) > limit * 99
    vf = connector(sb, "voucherify", page_limit=limit)
    result = vf.read()
    assert len(result.records) == len(stored)
    assert _ids(result.records, "id") == {r["id"] for r in stored}
    assert result.stats.pages > 99


def test_voucherify_mapping_of_ids_and_references(sb):
    vf = connector(sb, "voucherify")
    canon = vf.to_canonical(vf.read().records).set_index("source_id")
    stored = {r["id"]: r for r in sb.records("voucherify")}
    sf_ref = [r for r in stored.values() if (r.get("source_id") or "").startswith("003")]
    web_ref = [r for r in stored.values() if (r.get("source_id") or "").startswith("u")]
    assert sf_ref and web_ref
    row = canon.loc[sf_ref[0]["id"]]
    assert row["voucherify_id"] == sf_ref[0]["id"]
    assert row["voucherify_source_id"] == sf_ref[0]["source_id"]
    assert row["salesforce_id"] == sf_ref[0]["source_id"]
    row = canon.loc[web_ref[0]["id"]]
    assert row["web_user_id"] == web_ref[0]["source_id"] and pd.isna(row["salesforce_id"])
    named = next(r for r in stored.values() if r.get("name") and " " in r["name"])
    first, last = named["name"].split(None, 1)
    assert canon.loc[named["id"], "first_name"] == first
    assert canon.loc[named["id"], "last_name"] == last


def test_voucherify_write_creates_by_source_id_and_updates_by_id(sb):
    vf = connector(sb, "voucherify")
    existing = next(r for r in sb.records("voucherify") if r.get("source_id"))
    golden = pd.DataFrame(
        {"first_name": ["Alva", "Hugo"], "last_name": ["Norberg", "Falk"], "city": ["Lund", None]}
    )
    new_payloads = vf.from_canonical(golden)
    assert new_payloads[1] == {"name": "Hugo Falk"}  # no empty address sent
    ops = [
        WriteOp("GV1", None, new_payloads[0]),
        WriteOp("GV2", None, new_payloads[1]),
        # an existing record: by its id; its source_id must stay as it is
        WriteOp("GV3", existing["id"], {"address": {"city": "Visby"}}),
    ]
    res = vf.write(ops)
    assert all(r.ok for r in res), [r.error for r in res]
    assert res[2].target_id == existing["id"]
    back = {r["id"]: r for r in sb.records("voucherify")}
    made = back[res[0].target_id]
    assert made["source_id"] == "GV1" and made["metadata"]["custsync_id"] == "GV1"
    assert made["address"]["city"] == "Lund" and made["name"] == "Alva Norberg"
    assert back[existing["id"]]["source_id"] == existing["source_id"]
    assert back[existing["id"]]["address"]["city"] == "Visby"
    # replay: the same source_id upserts, no duplicate
    assert all(r.ok for r in vf.write(ops[:2]))
    assert sum(1 for r in sb.records("voucherify") if r.get("source_id") == "GV1") == 1
    # read back through the connector
    canon = vf.to_canonical(vf.read().records).set_index("source_id")
    assert canon.loc[res[0].target_id, "custsync_id"] == "GV1"


def test_voucherify_incremental_sees_edits_and_inserts(sb):
    vf = connector(sb, "voucherify")
    full = vf.read()
    changed = sb.changes("voucherify", edit=3, delete=2, add=4, seed=2)
    inc = vf.read(since=full.watermark)
    got = _ids(inc.records, "id")
    assert set(changed["edited"]) | set(changed["added"]) <= got
    assert not set(changed["deleted"]) & got
    assert inc.watermark > full.watermark


def test_voucherify_incremental_is_a_change_pull_not_a_snapshot(sb):
    vf = connector(sb, "voucherify")
    full = vf.read()
    sb.changes("voucherify", edit=3, add=4, seed=2)
    inc = vf.read(since=full.watermark)
    assert len(inc.records) < len(full.records) / 4


# --------------------------------------------------------------------------- faults & failures


@pytest.mark.parametrize("system,id_col", [("salesforce", "Id"), ("voucherify", "id")])
def test_twenty_percent_faults_give_exactly_the_fault_free_records(sb, system, id_col):
    opts = {} if system == "salesforce" else {"page_limit": 20}
    clean = connector(sb, system, **opts).read()
    sb.set_faults(system, rate_429=0.1, rate_5xx=0.1, retry_after=0, seed=5)
    noisy_conn = connector(sb, system, **opts)
    noisy = noisy_conn.read()
    sb.set_faults(system, rate_429=0, rate_5xx=0)
    assert noisy.stats.retries > 0
    key = [id_col]
    pd.testing.assert_frame_equal(
        noisy.records.sort_values(key).reset_index(drop=True),
        clean.records.sort_values(key).reset_index(drop=True),
    )


def test_malformed_page_is_fetched_again(sb):
    sb.set_faults("salesforce", malformed_pages=1)
    sf = connector(sb, "salesforce")
    result = sf.read()
    assert len(result.records) == len(sb.records("salesforce"))
    assert result.stats.retries >= 1


@pytest.mark.parametrize("system", ["salesforce", "voucherify"])
def test_connection_refused_is_a_clear_error(system):
    url = f"http://127.0.0.1:{closed_port()}"
    spec = dict(CONFIGS[system])
    cfg = ConnectorConfig(base_url=url, **spec)
    conn = build_connector(system, cfg, dict(CREDENTIALS))
    with pytest.raises(ConnectorUnavailableError) as info:
        conn.read()
    assert f"[{system}]" in str(info.value) and url in str(info.value)


def test_secrets_never_appear_in_errors(sb):
    secret = "wrong-but-secret-token-123"
    cfg = ConnectorConfig(base_url=sb.urls["salesforce"], **CONFIGS["salesforce"])
    sf = build_connector("salesforce", cfg, {"SALESFORCE_ACCESS_TOKEN": secret})
    with pytest.raises(ConnectorError) as info:
        sf.read()
    assert "INVALID_SESSION_ID" in str(info.value)
    assert secret not in str(info.value) and secret not in repr(info.value.args)
    vcfg = ConnectorConfig(base_url=sb.urls["voucherify"], **CONFIGS["voucherify"])
    vf = build_connector(
        "voucherify", vcfg, {"VOUCHERIFY_APP_ID": secret, "VOUCHERIFY_APP_TOKEN": secret}
    )
    res = vf.write([WriteOp("G1", None, {"name": "A B"})])
    assert not res[0].ok and "401" in res[0].error and secret not in res[0].error


def test_missing_env_var_is_named_and_unknown_type_lists_known():
    cfg = ConnectorConfig(base_url="http://127.0.0.1:1", **CONFIGS["voucherify"])
    with pytest.raises(CredentialError, match="VOUCHERIFY_APP_ID"):
        build_connector("voucherify", cfg, {})
    bad = ConnectorConfig(type="nosuch", base_url="http://x")
    with pytest.raises(ConnectorError, match="known types: .*salesforce.*voucherify"):
        build_connector("x", bad, {})


def test_salesforce_reads_contact_account_and_lead(sb):
    sf = connector(sb, "salesforce", objects=["Contact", "Account", "Lead"])
    result = sf.read()
    canon = sf.to_canonical(result.records).set_index("source_id")
    for obj in ("Contact", "Account", "Lead"):
        stored = sb.records("salesforce", obj)
        assert stored, obj
        got = set(canon.index[canon["object_type"] == obj])
        assert got == {r["Id"] for r in stored}, obj
    account = sb.records("salesforce", "Account")[0]
    assert canon.loc[account["Id"], "kind"] == "company"
    assert canon.loc[account["Id"], "company_name"] == account["Name"]
    lead = next(r for r in sb.records("salesforce", "Lead") if r.get("Company"))
    assert canon.loc[lead["Id"], "kind"] == "person"
    assert canon.loc[lead["Id"], "last_name"] == lead["LastName"]
    # web-to-lead's "[not provided]" is no company; a real one is kept
    assert lead["Company"] == "[not provided]"
    assert pd.isna(canon.loc[lead["Id"], "company_name"])
    raw = result.records.copy()
    raw.loc[raw["Id"] == lead["Id"], "Company"] = "Acme AB"
    again = sf.to_canonical(raw).set_index("source_id")
    assert again.loc[lead["Id"], "company_name"] == "Acme AB"


def test_salesforce_delete_ops_and_the_deleted_feed(sb):
    sf = connector(sb, "salesforce")
    full = sf.read()
    victims = [r["Id"] for r in sb.records("salesforce")[:2]]
    res = sf.write([WriteOp(f"GD{i}", v, {}, op="delete") for i, v in enumerate(victims)])
    assert all(r.ok for r in res)
    assert not set(victims) & {r["Id"] for r in sb.records("salesforce")}
    inc = sf.read(since=full.watermark)
    assert set(victims) <= set(inc.deleted_ids)
    # a replayed delete (ENTITY_IS_DELETED) is harmless
    again = sf.write([WriteOp("GD0", victims[0], {}, op="delete")])
    assert again[0].ok


def test_a_misspelt_option_is_named():
    spec = dict(CONFIGS["salesforce"])
    spec["options"] = {**spec["options"], "object": ["Lead"]}
    cfg = ConnectorConfig(base_url="http://127.0.0.1:1", **spec)
    with pytest.raises(
        ConnectorError, match=r"unknown option\(s\) options\.object; known: .*objects"
    ):
        build_connector("salesforce", cfg, dict(CREDENTIALS))
