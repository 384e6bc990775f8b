"""The YAML-only connectors: the generic REST connector (against sandbox emulators over real
sockets) and the file connector (CSV and JSON-lines exports in tmp_path).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import yaml

from custsync_pipeline.config import ConnectorConfig
from custsync_pipeline.connectors import ConnectorError, CredentialError, WriteOp, build_connector
from custsync_pipeline.sandbox import CREDENTIALS, Sandbox

FAST_HTTP = """
    http: {{backoff_factor_s: 0.01, backoff_jitter_s: 0.01, backoff_max_s: 0.05,
           retry_after_max_s: 0.05, max_retries: 8}}
"""

# Voucherify described in YAML only: two API-key headers, page paging with has_more,
# a dotted field mapping both ways, upsert by POST with the golden id as source_id.
VOUCHERIFY_AS_REST = (
    """
type: rest
base_url: "{url}"
credentials: {{app_id: VOUCHERIFY_APP_ID, app_token: VOUCHERIFY_APP_TOKEN}}
options:
    path: /v1/customers
    records_path: customers
    id_field: id
    updated_field: updated_at
    created_field: created_at
    params: {{order: created_at}}
    paging: {{type: page, page_param: page, size_param: limit, page_size: 7, has_more_path: has_more}}
    auth: {{type: api_key, headers: {{X-App-Id: app_id, X-App-Token: app_token}}}}
    incremental: {{param: "updated_at[after]", format: iso_z}}
    mapping:
        email: email
        phone: phone
        name: company_name
        address.city: city
        address.postal_code: postal_code
        address.country: country
        source_id: voucherify_source_id
        id: voucherify_id
        metadata.custsync_id: custsync_id
    static: {{kind: person, object_type: customer}}
    read_only: [voucherify_id, voucherify_source_id, custsync_id]
    write:
        path: /v1/customers
        method: POST
        body: single
        external_id_field: source_id
        target_id_field: id
        result_id_field: id
    delete: {{path: "/v1/customers/{{id}}"}}
"""
    + FAST_HTTP
)

# Salesforce's query API described in YAML: bearer auth and next-link paging
SALESFORCE_AS_REST = (
    """
type: rest
base_url: "{url}"
credentials: {{token: SALESFORCE_ACCESS_TOKEN}}
options:
    path: /services/data/v60.0/query
    params: {{q: "SELECT Id, FirstName, LastName, Email, Voyado_Id__c, LastModifiedDate FROM Contact"}}
    records_path: records
    id_field: Id
    updated_field: LastModifiedDate
    paging: {{type: next_link, next_path: nextRecordsUrl, size_param: null}}
    auth: {{type: bearer}}
    mapping: {{FirstName: first_name, LastName: last_name, Email: email, Voyado_Id__c: voyado_id, Id: salesforce_id}}
"""
    + FAST_HTTP
)


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with pytest.MonkeyPatch.context() as mp:
        for name in CREDENTIALS:
            mp.delenv(name, raising=False)
        with Sandbox(
            seed=5,
            people=300,
            base_port=0,
            systems=["salesforce", "voucherify", "exact", "icomm"],
            options={"salesforce": {"page_size": 40}},
        ) as sandbox:
            yield sandbox


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    if "sb" in request.fixturenames:
        request.getfixturevalue("sb").reset()


def from_yaml(text: str, name: str, env: dict[str, str] | None = None, **fmt: str):
    cfg = ConnectorConfig.model_validate(yaml.safe_load(text.format(**fmt)))
    return build_connector(name, cfg, dict(CREDENTIALS) if env is None else env)


# --------------------------------------------------------------------------- generic REST


def test_yaml_only_rest_connector_reads_every_page(sb):
    conn = from_yaml(VOUCHERIFY_AS_REST, "vf_rest", url=sb.urls["voucherify"])
    result = conn.read()
    stored = sb.records("voucherify")
    assert sorted(result.records["id"]) == sorted(r["id"] for r in stored)
    assert result.stats.pages == -(-len(stored) // 7)  # has_more=false on the last page ends it
    canon = conn.to_canonical(result.records).set_index("source_id")
    rec = next(r for r in stored if r.get("source_id") and r["address"]["city"])
    assert canon.loc[rec["id"], "voucherify_source_id"] == rec["source_id"]
    assert canon.loc[rec["id"], "city"] == rec["address"]["city"]
    assert canon.loc[rec["id"], "kind"] == "person"
    assert result.watermark == max(pd.to_datetime([r["updated_at"] for r in stored], utc=True))


def test_yaml_only_rest_connector_writes_and_reads_back(sb):
    conn = from_yaml(VOUCHERIFY_AS_REST, "vf_rest", url=sb.urls["voucherify"])
    golden = pd.DataFrame(
        {
            "email": ["new1@example.se", "new2@example.se"],
            "city": ["Lund", None],
            "voucherify_id": ["never-sent", None],
        }
    )
    payloads = conn.from_canonical(golden)
    assert payloads == [
        {"email": "new1@example.se", "address": {"city": "Lund"}},
        {"email": "new2@example.se"},
    ]
    existing = sb.records("voucherify")[0]
    ops = [
        WriteOp("GR1", None, payloads[0]),
        WriteOp("GR2", None, payloads[1]),
        WriteOp("GR3", existing["id"], {"address": {"city": "Visby"}}),
    ]
    res = conn.write(ops)
    assert [r.ok for r in res] == [True, True, True], [r.error for r in res]
    back = {r["id"]: r for r in sb.records("voucherify")}
    assert back[res[0].target_id]["source_id"] == "GR1"
    assert back[res[0].target_id]["address"]["city"] == "Lund"
    assert back[existing["id"]]["address"]["city"] == "Visby"
    deleted = conn.write([WriteOp("GR2", res[1].target_id, {}, op="delete")])
    assert deleted[0].ok and res[1].target_id not in {r["id"] for r in sb.records("voucherify")}


def test_yaml_rest_per_record_error_carries_the_api_message(sb):
    conn = from_yaml(VOUCHERIFY_AS_REST, "vf_rest", url=sb.urls["voucherify"])
    existing = next(r for r in sb.records("voucherify") if r.get("source_id"))
    # changing an existing source_id is refused by the API: the message comes through
    bad = WriteOp("GX", existing["id"], {"source_id": "something-else"})
    res = conn.write([bad, WriteOp("GY", None, {"email": "ok@example.se"})])
    assert not res[0].ok and "source_id cannot be changed" in res[0].error
    assert res[1].ok


def test_yaml_rest_next_link_paging_with_bearer(sb):
    conn = from_yaml(SALESFORCE_AS_REST, "sf_rest", url=sb.urls["salesforce"])
    result = conn.read()
    stored = sb.records("salesforce")
    assert sorted(result.records["Id"]) == sorted(r["Id"] for r in stored)
    assert result.stats.pages == -(-len(stored) // 40)
    canon = conn.to_canonical(result.records).set_index("source_id")
    ref = next(r for r in stored if r.get("Voyado_Id__c"))
    assert canon.loc[ref["Id"], "voyado_id"] == ref["Voyado_Id__c"]


def test_yaml_rest_faults_give_the_same_records_and_count_retries(sb):
    clean = from_yaml(VOUCHERIFY_AS_REST, "vf_rest", url=sb.urls["voucherify"]).read()
    sb.set_faults("voucherify", rate_429=0.1, rate_5xx=0.1, retry_after=0, seed=9)
    noisy = from_yaml(VOUCHERIFY_AS_REST, "vf_rest", url=sb.urls["voucherify"]).read()
    sb.set_faults("voucherify", rate_429=0, rate_5xx=0)
    assert noisy.stats.retries > 0
    pd.testing.assert_frame_equal(
        noisy.records.sort_values("id").reset_index(drop=True),
        clean.records.sort_values("id").reset_index(drop=True),
    )


def test_rest_config_errors_name_the_key():
    text = VOUCHERIFY_AS_REST.replace("type: page,", "type: pages,")
    with pytest.raises(ConnectorError, match=r"options\.paging\.type"):
        from_yaml(text, "vf_rest", url="http://127.0.0.1:1")
    text = VOUCHERIFY_AS_REST.replace("address.city: city", "address.city: town")
    with pytest.raises(ConnectorError, match="town"):
        from_yaml(text, "vf_rest", url="http://127.0.0.1:1")
    with pytest.raises(CredentialError, match="VOUCHERIFY_APP_TOKEN"):
        from_yaml(VOUCHERIFY_AS_REST, "vf_rest", {"VOUCHERIFY_APP_ID": "x"}, url="http://h")


# Icomm's listing in YAML: offset paging, a composite id, an updated-since parameter
ICOMM_AS_REST = (
    """
type: rest
base_url: "{url}"
credentials: {{api_key: ICOMM_API_KEY}}
options:
    path: /api/v1/profiles/1/customers
    records_path: items
    id_field: [UserId, StoreCode]
    updated_field: UpdatedAt
    paging: {{type: offset, offset_param: offset, size_param: limit, page_size: 50}}
    auth: {{type: api_key, header: X-Api-Key}}
    incremental: {{param: updatedSince, format: iso_z}}
    mapping: {{UserId: icomm_user_id, StoreCode: store_code, Email: email}}
"""
    + FAST_HTTP
)

# Exact Online in YAML: OData paging (d.__next) and an OData $filter for increments
EXACT_AS_REST = (
    """
type: rest
base_url: "{url}"
credentials: {{token: EXACT_ACCESS_TOKEN}}
options:
    path: /api/v1/1/crm/Accounts
    id_field: ID
    updated_field: Modified
    paging: {{type: odata, size_param: null}}
    auth: {{type: bearer}}
    incremental: {{format: odata_filter, filter_field: Modified}}
    mapping: {{ID: exact_id, Code: customer_number, Email: email}}
"""
    + FAST_HTTP
)


def test_yaml_rest_offset_paging_with_a_composite_id(sb):
    conn = from_yaml(ICOMM_AS_REST, "icomm_rest", url=sb.urls["icomm"])
    result = conn.read()
    stored = sb.records("icomm")
    assert len(result.records) == len(stored)
    assert result.stats.pages == -(-len(stored) // 50) + 1  # offset paging ends on an empty page
    canon = conn.to_canonical(result.records)
    assert set(canon["source_id"]) == {f"{r['UserId']}|{r['StoreCode']}" for r in stored}
    changed = sb.changes("icomm", edit=2, add=3, seed=4)
    inc = conn.read(since=result.watermark)
    got = set(conn.to_canonical(inc.records)["source_id"])
    assert set(changed["edited"] + changed["added"]) <= got and len(got) < 20


def test_yaml_rest_odata_paging_and_filter(sb):
    conn = from_yaml(EXACT_AS_REST, "exact_rest", url=sb.urls["exact"])
    result = conn.read()
    stored = sb.records("exact")
    assert sorted(result.records["ID"]) == sorted(r["ID"] for r in stored)
    assert result.stats.pages > 1  # followed d.__next
    changed = sb.changes("exact", edit=2, add=2, seed=6)
    # /Date(ms)/ values: the watermark and updated_at are parsed from them
    newest_ms = max(int(r["Modified"][6:-2]) for r in stored)
    assert result.watermark == pd.Timestamp(newest_ms, unit="ms", tz="UTC")
    canon = conn.to_canonical(result.records)
    assert canon["updated_at"].notna().all()
    inc = conn.read(since=result.watermark)
    assert set(changed["edited"] + changed["added"]) <= set(inc.records["ID"])
    assert len(inc.records) < len(stored) / 4


# --------------------------------------------------------------------------- file connector

CSV_EXPORT = """\
Id,FirstName,LastName,Email,Phone,Voyado_Id__c,Customer_Number__c,LastModifiedDate,IsDeleted
003A000000000001AAA,Anna,Berg,ANNA.BERG@Example.com , 070-123 45 67,vy-1,10001,2026-11-01T10:00:00Z,false
003A000000000002AAA,Null,Öberg,null@example.se,,,,2026-11-02T10:00:00Z,false
003A000000000003AAA,=cmd|' /C calc'!A0,Lund,x@y.se,,,007,2026-11-03T10:00:00Z,false
003A000000000004AAA,Gone,Person,gone@example.se,,,,2026-11-04T10:00:00Z,true
"""

FILE_CFG = """
type: file
options:
    path: "{path}"
    id_field: Id
    updated_field: LastModifiedDate
    deleted_field: IsDeleted
    overlap_minutes: 0
    mapping:
        FirstName: first_name
        LastName: last_name
        Email: email
        Phone: phone
        Voyado_Id__c: voyado_id
        Customer_Number__c: customer_number
        Id: salesforce_id
    static: {{kind: person, object_type: Contact}}
"""


def test_csv_file_connector_reads_as_received_with_cross_references(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_text(CSV_EXPORT, encoding="utf-8")
    conn = from_yaml(FILE_CFG, "crm_export", {}, path=str(path))
    result = conn.read()
    assert list(result.records["Id"]) == [
        "003A000000000001AAA",
        "003A000000000002AAA",
        "003A000000000003AAA",
    ]
    assert result.deleted_ids == ["003A000000000004AAA"]
    canon = conn.to_canonical(result.records).set_index("source_id")
    anna = canon.loc["003A000000000001AAA"]
    assert anna["voyado_id"] == "vy-1" and anna["customer_number"] == "10001"
    assert anna["salesforce_id"] == "003A000000000001AAA"
    assert anna["email"] == "ANNA.BERG@Example.com "  # as received: normalizing is not ours
    assert canon.loc["003A000000000002AAA", "first_name"] == "Null"  # not a missing value
    assert canon.loc["003A000000000003AAA", "customer_number"] == "007"  # leading zeros kept
    assert pd.isna(canon.loc["003A000000000002AAA", "phone"])
    # the deleted row's change counts too: a delete is a change
    assert result.watermark == datetime(2026, 11, 4, 10, tzinfo=UTC)


def test_csv_file_connector_incremental_by_column_and_by_mtime(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_text(CSV_EXPORT, encoding="utf-8")
    conn = from_yaml(FILE_CFG, "crm_export", {}, path=str(path))
    inc = conn.read(since=datetime(2026, 11, 2, 12, tzinfo=UTC))
    assert list(inc.records["Id"]) == ["003A000000000003AAA"]
    # by modification time: a file older than the watermark is not read again
    by_mtime = from_yaml(
        FILE_CFG.replace("    updated_field: LastModifiedDate\n", ""),
        "crm_export",
        {},
        path=str(tmp_path / "*.csv"),
    )
    old = time.time() - 3600
    os.utime(path, (old, old))
    first = by_mtime.read()
    assert len(first.records) == 3
    nothing = by_mtime.read(since=first.watermark)
    assert nothing.records.empty and nothing.watermark is None
    (tmp_path / "later.csv").write_text(
        "Id,FirstName,LastName\n003A000000000009AAA,New,Row\n", encoding="utf-8"
    )
    later = by_mtime.read(since=first.watermark)
    assert list(later.records["Id"]) == ["003A000000000009AAA"]
    assert later.watermark > first.watermark


def test_csv_file_connector_write_upserts_and_reads_back(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_text(CSV_EXPORT, encoding="utf-8")
    conn = from_yaml(
        FILE_CFG + "    read_only: [salesforce_id]\n", "crm_export", {}, path=str(path)
    )
    payloads = conn.from_canonical(
        pd.DataFrame({"first_name": ["Ny", "Anna-Lena"], "email": ["ny@example.se", None]})
    )
    assert payloads == [{"FirstName": "Ny", "Email": "ny@example.se"}, {"FirstName": "Anna-Lena"}]
    res = conn.write(
        [
            WriteOp("G1", None, payloads[0]),
            WriteOp("G2", "003A000000000001AAA", payloads[1]),
            WriteOp("G3", "003A000000000002AAA", {}, op="delete"),
        ]
    )
    assert [r.ok for r in res] == [True, True, True]
    back = conn.read().records.set_index("Id")
    assert back.loc["G1", "FirstName"] == "Ny"
    assert back.loc["003A000000000001AAA", "FirstName"] == "Anna-Lena"
    assert back.loc["003A000000000001AAA", "Email"] == "ANNA.BERG@Example.com "  # untouched
    assert "003A000000000002AAA" not in back.index


def test_jsonl_file_connector_flattens_nested_fields(tmp_path):
    path = tmp_path / "shop.jsonl"
    rows = [
        {
            "user": {"id": "u0000001"},
            "store": "SE01",
            "mail": "a@b.se",
            "at": "2026-11-01T00:00:00Z",
        },
        {
            "user": {"id": "u0000002"},
            "store": "NO01",
            "mail": "c@d.no",
            "at": "2026-11-02T00:00:00Z",
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    cfg = """
type: file
options:
    path: "{path}"
    id_field: [user.id, store]
    updated_field: at
    mapping: {{user.id: icomm_user_id, store: store_code, mail: email}}
"""
    conn = from_yaml(cfg, "shop", {}, path=str(path))
    canon = conn.to_canonical(conn.read().records)
    assert list(canon["source_id"]) == ["u0000001|SE01", "u0000002|NO01"]
    assert list(canon["icomm_user_id"]) == ["u0000001", "u0000002"]
    assert list(canon["store_code"]) == ["SE01", "NO01"]
    assert canon["updated_at"].iloc[1] - canon["updated_at"].iloc[0] == timedelta(days=1)


def test_file_connector_missing_file_is_a_clear_error(tmp_path):
    conn = from_yaml(FILE_CFG, "crm_export", {}, path=str(tmp_path / "nope.csv"))
    with pytest.raises(ConnectorError, match="no file matches"):
        conn.read()


def _export_rows(n: int) -> str:
    """A clean CSV export (Arrow's path): times spread over four days, some missing or
    garbled (kept by every incremental read), some rows flagged deleted."""
    lines = ["Id,FirstName,LastName,Email,LastModifiedDate,IsDeleted"]
    for i in range(n):
        when = f"2026-11-0{1 + i % 4}T{i % 24:02d}:00:00Z"
        when = "" if i % 11 == 0 else ("soon" if i % 13 == 0 else when)
        lines.append(f"ID{i:04d},Förnamn{i},Efternamn,p{i}@example.se,{when},{i % 7 == 0}")
    return "\n".join(lines) + "\n"


def test_csv_incremental_read_leaves_out_old_rows_before_making_them_objects(tmp_path):
    from custsync_pipeline.connectors import file_rows
    from custsync_pipeline.domain.received import LINE_COLUMN

    path = tmp_path / "contacts.csv"
    path.write_text(_export_rows(400), encoding="utf-8")
    conn = from_yaml(FILE_CFG, "crm_export", {}, path=str(path))
    since = datetime(2026, 11, 3, 6, tzinfo=UTC)
    fast = conn.read(since=since)
    # the same read with the whole file made into objects first (the careful reader)
    real = file_rows._arrow_csv
    seen: list[int] = []

    def whole(text, delimiter, source, keep=None):
        frame = real(text, delimiter, source)
        seen.append(len(frame))
        return frame

    file_rows._arrow_csv = whole
    try:
        slow = conn.read(since=since)
    finally:
        file_rows._arrow_csv = real
    assert seen == [400]
    pd.testing.assert_frame_equal(fast.records, slow.records)
    assert fast.records.attrs == {}  # the file's row count stays the reader's
    assert fast.deleted_ids == slow.deleted_ids and fast.watermark == slow.watermark
    assert 0 < len(fast.records) < 300 and fast.deleted_ids
    # the rows kept keep their line numbers in the file; missing and garbled times stay
    kept = fast.records.set_index("Id")[LINE_COLUMN]
    assert kept["ID0011"] == 13 and kept["ID0013"] == 15 and "ID0004" not in kept.index
    # every row older than the watermark: no record, the file's columns kept
    then = ",2026-11-01T00:00:00Z,"
    old = _export_rows(400).replace(",,", then).replace(",soon,", then)
    path.write_text(old, encoding="utf-8")
    none = conn.read(since=datetime(2026, 12, 1, tzinfo=UTC))
    assert none.records.empty and "Email" in none.records.columns and none.watermark is None


def test_csv_keep_filter_reaches_only_arrows_path():
    from custsync_pipeline.connectors.file_rows import read_csv_text
    from custsync_pipeline.domain.received import LINE_COLUMN

    text = "Id,When\nA,1\nB,2\nC,3\n"
    odd = ("When", lambda cells: (cells.astype(int) % 2 == 1).to_numpy())
    assert list(read_csv_text(text, keep=odd)["Id"]) == ["A", "C"]
    assert list(read_csv_text(text, keep=odd)[LINE_COLUMN]) == [2, 4]
    # a file the careful reader takes (a row over two lines) comes whole: a hint only
    careful = 'Id,When\nA,1\n"B\nb",2\nC,3\n'
    assert list(read_csv_text(careful, keep=odd)["Id"]) == ["A", "B\nb", "C"]
    # a byte that did not decode sends the file to the careful reader, which names it
    bad = read_csv_text("Id,When\nA,1\nB\udcff,2\n")
    assert bad["Id"].tolist()[0] == "A" and bad.iloc[1].notna().any()


@pytest.mark.parametrize(
    "text",
    [
        'Id,"Full, name"\nA,"Berg, Anna"\nB,Åsa\n',  # a quoted header and cell
        'Id,Name\nA,Anna\nB,"Ö ""Ölund"""',  # quotes on the last line, no newline at the end
        "Id,Name\r\nA,Anna\r\nB,Bo\r\n",  # CRLF
        'Id,Name\nA,Ann"a\nB,"b"c\n',  # "b"c: the careful reader's, which names the row
    ],
)
def test_csv_fast_reader_agrees_with_the_careful_one(text):
    from custsync_pipeline.connectors.file_rows import _arrow_csv, read_csv_text

    fast, careful = read_csv_text(text), read_csv_text(text, arrow=False)
    pd.testing.assert_frame_equal(fast, careful)
    assert (_arrow_csv(text, ",", "") is None) == ('"b"c' in text)
