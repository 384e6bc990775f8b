"""Round trips per object type and batch splitting, against the sandbox over real sockets.

Salesforce Account and Lead and Exact Contacts: incremental reads after edits,
deletes and inserts of that object, and writes read back through the
connector. Voyado, Exact, Icomm and the YAML-only Voucherify: what a write
sends is read back through the connector. Writes above the API's batch limit
(Voyado 4,000, Icomm 1,000, a REST ``write.batch_size``) are split, with one
result per record in the order sent.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from custsync_pipeline.connectors import WriteOp
from custsync_pipeline.sandbox import Sandbox
from custsync_pipeline_tests.sandbox_fixtures import module_sandbox
from custsync_pipeline_tests.test_connectors_generic import VOUCHERIFY_AS_REST, from_yaml
from custsync_pipeline_tests.test_connectors_systems import connector, source_ids


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    yield from module_sandbox(seed=23, people=300)


@pytest.fixture(autouse=True)
def _fresh(sb: Sandbox) -> None:
    sb.reset()


# system, connector options, the object type's store in the emulator
OBJECTS = [
    ("salesforce", {"objects": ["Account"]}, "Account"),
    ("salesforce", {"objects": ["Lead"]}, "Lead"),
    ("exact", {"resources": ["Contacts"]}, "Contacts"),
]
KEY = {"salesforce": "Id", "exact": "ID"}


@pytest.mark.parametrize("system,options,obj", OBJECTS, ids=lambda v: str(v))
def test_incremental_read_of_another_object_sees_edits_deletes_and_inserts(
    sb, system, options, obj
):
    sb.changes(system, add=6, seed=1, object_type=obj)  # enough records of every type
    conn = connector(sb, system, **options)
    full = conn.read()
    stored = {r[KEY[system]] for r in sb.records(system, obj)}
    assert source_ids(conn, full.records) == stored
    main_before = len(sb.records(system))
    changed = sb.changes(system, edit=2, delete=2, add=3, seed=4, object_type=obj)
    assert len(sb.records(system)) == main_before  # only that object changed
    assert {r[KEY[system]] for r in sb.records(system, obj)} == (
        stored - set(changed["deleted"]) | set(changed["added"])
    )
    inc = conn.read(since=full.watermark)
    got = source_ids(conn, inc.records)
    assert set(changed["edited"]) | set(changed["added"]) <= got
    assert not set(changed["deleted"]) & got
    assert set(changed["deleted"]) <= set(inc.deleted_ids)
    assert inc.watermark is not None and inc.watermark >= full.watermark
    canon = conn.to_canonical(inc.records).set_index("source_id")
    assert set(canon.loc[list(changed["added"]), "object_type"]) == {obj.rstrip("s")}
    # an edit is visible in the canonical values
    edited = {r[KEY[system]]: r for r in sb.records(system, obj)}[changed["edited"][0]]
    col, fld = {
        "Account": ("city", "BillingCity"),
        "Lead": ("city", "City"),
        "Contacts": ("phone", "Phone"),
    }[obj]
    assert canon.loc[changed["edited"][0], col] == edited[fld]


def test_sandbox_changes_on_an_unknown_object_is_refused(sb):
    with pytest.raises(ValueError, match="no object type 'Opportunity'"):
        sb.changes("salesforce", edit=1, object_type="Opportunity")


@pytest.mark.parametrize(
    "obj,golden",
    [
        (
            "Account",
            {"company_name": ["Fjäll Bygg AB", "Hav & Sten AB"], "city": ["Lund", "Ystad"]},
        ),
        (
            "Lead",
            {
                "first_name": ["Ines", "Tor"],
                "last_name": ["Berg", "Lund"],
                "company_name": ["Berg AB", None],
                "city": ["Lund", "Ystad"],
            },
        ),
    ],
)
def test_salesforce_write_account_and_lead_then_read_back(sb, obj, golden):
    sf = connector(sb, "salesforce", objects=[obj], write_object=obj)
    payloads = sf.from_canonical(pd.DataFrame(golden))
    existing = sb.records("salesforce", obj)[0]
    city = "BillingCity" if obj == "Account" else "City"
    ops = [WriteOp(f"G{obj}{i}", None, p) for i, p in enumerate(payloads)]
    ops.append(WriteOp(f"G{obj}U", existing["Id"], {city: "Kiruna"}))
    res = sf.write(ops)
    assert [r.ok for r in res] == [True, True, True], [r.error for r in res]
    canon = sf.to_canonical(sf.read().records).set_index("source_id")
    for i, r in enumerate(res[:2]):
        row = canon.loc[r.target_id]
        assert row["object_type"] == obj
        assert row["custsync_id"] == f"G{obj}{i}"
        assert row["city"] == golden["city"][i]
        if obj == "Account":
            assert row["company_name"] == golden["company_name"][i]
        else:
            assert row["last_name"] == golden["last_name"][i]
    assert canon.loc[existing["Id"], "city"] == "Kiruna"


def test_exact_contacts_write_then_read_back(sb):
    conn = connector(sb, "exact", resources=["Contacts"], write_resource="Contacts")
    existing = sb.records("exact", "Contacts")[0]
    ops = [
        WriteOp(
            "GEC1",
            None,
            {
                "Account": existing["Account"],
                "FirstName": "Tove",
                "LastName": "Ek",
                "Email": "tove@ek.se",
            },
        ),
        WriteOp("GEC2", existing["ID"], {"Phone": "+46701112233"}),
    ]
    res = conn.write(ops)
    assert [r.ok for r in res] == [True, True], [r.error for r in res]
    canon = conn.to_canonical(conn.read().records).set_index("source_id")
    assert canon.loc[res[0].target_id, "email"] == "tove@ek.se"
    assert canon.loc[res[0].target_id, "last_name"] == "Ek"
    assert canon.loc[res[0].target_id, "object_type"] == "Contact"
    assert canon.loc[existing["ID"], "phone"] == "+46701112233"


# --------------------------------------------------------------------------- read back


def test_voyado_writes_read_back_through_the_connector(sb):
    conn = connector(sb, "voyado")
    existing = sb.records("voyado")[0]
    payloads = conn.from_canonical(
        pd.DataFrame(
            {"first_name": ["Saga"], "last_name": ["Vik"], "email": ["saga.vik@example.se"]}
        )
    )
    res = conn.write(
        [WriteOp("GY1", None, payloads[0]), WriteOp("GY2", existing["id"], {"city": "Visby"})]
    )
    assert all(r.ok for r in res), [r.error for r in res]
    canon = conn.to_canonical(conn.read().records).set_index("source_id")
    assert canon.loc[res[0].target_id, "email"] == "saga.vik@example.se"
    assert canon.loc[res[0].target_id, "last_name"] == "Vik"
    assert canon.loc[existing["id"], "city"] == "Visby"


def test_exact_account_writes_read_back_through_the_connector(sb):
    conn = connector(sb, "exact")
    existing = sb.records("exact")[0]
    payload = conn.from_canonical(
        pd.DataFrame({"first_name": ["Ebba"], "last_name": ["Krantz"], "city": ["Lund"]})
    )[0]
    res = conn.write(
        [WriteOp("GE1", None, payload), WriteOp("GE2", existing["ID"], {"City": "Kiruna"})]
    )
    assert all(r.ok for r in res), [r.error for r in res]
    canon = conn.to_canonical(conn.read().records).set_index("source_id")
    assert canon.loc[res[0].target_id, "city"] == "Lund"
    assert canon.loc[existing["ID"], "city"] == "Kiruna"


def test_icomm_writes_read_back_through_the_connector(sb):
    conn = connector(sb, "icomm")
    payload = conn.from_canonical(
        pd.DataFrame(
            {
                "email": ["alva.norberg@example.se"],
                "first_name": ["Alva"],
                "store_code": ["SE01"],
                "web_user_id": ["u7654321"],
            }
        )
    )[0]
    res = conn.write([WriteOp("GI1", None, payload)])
    assert res[0].ok, res[0].error
    canon = conn.to_canonical(conn.read().records).set_index("source_id")
    row = canon.loc[res[0].target_id]
    assert row["email"] == "alva.norberg@example.se" and row["first_name"] == "Alva"
    assert row["icomm_user_id"] == "u7654321" and row["store_code"] == "SE01"


def test_yaml_voucherify_writes_read_back_through_the_connector(sb):
    conn = from_yaml(VOUCHERIFY_AS_REST, "vf_rest", url=sb.urls["voucherify"])
    existing = sb.records("voucherify")[0]
    payload = conn.from_canonical(pd.DataFrame({"email": ["ny@example.se"], "city": ["Lund"]}))[0]
    res = conn.write(
        [
            WriteOp("GR1", None, payload),
            WriteOp("GR2", existing["id"], {"address": {"city": "Visby"}}),
        ]
    )
    assert all(r.ok for r in res), [r.error for r in res]
    canon = conn.to_canonical(conn.read().records).set_index("source_id")
    assert canon.loc[res[0].target_id, "email"] == "ny@example.se"
    assert canon.loc[res[0].target_id, "voucherify_source_id"] == "GR1"
    assert canon.loc[res[0].target_id, "city"] == "Lund"
    assert canon.loc[existing["id"], "city"] == "Visby"


# --------------------------------------------------------------------------- batch limits


def test_voyado_splits_writes_at_4000_with_results_in_order(sb):
    conn = connector(sb, "voyado")
    n = 4001
    ops = [
        WriteOp(f"GB{i}", None, {"firstName": "Bo", "lastName": f"N{i}", "email": f"bo{i}@bulk.se"})
        for i in range(n)
    ]
    before = conn.http.counters.requests
    res = conn.write(ops)
    assert conn.http.counters.requests - before == 2  # 4,000 + 1
    assert [r.golden_id for r in res] == [op.golden_id for op in ops]
    assert all(r.ok for r in res)
    by_id = {r["id"]: r for r in sb.records("voyado")}
    assert [by_id[r.target_id]["email"] for r in res[3998:]] == [
        f"bo{i}@bulk.se" for i in (3998, 3999, 4000)
    ]
    # updates too: one unknown id in the second batch fails alone, in its place
    upd = [WriteOp(f"GB{i}", r.target_id, {"city": "Lund"}) for i, r in enumerate(res)]
    upd[4000] = WriteOp("GBX", "00000000-0000-0000-0000-000000000000", {"city": "Lund"})
    before = conn.http.counters.requests
    again = conn.write(upd)
    assert conn.http.counters.requests - before == 2
    assert [r.ok for r in again] == [True] * 4000 + [False]
    assert "ContactNotFound" in again[4000].error
    cities = {r["email"]: r["city"] for r in sb.records("voyado") if r["email"]}
    assert {cities[f"bo{i}@bulk.se"] for i in range(4000)} == {"Lund"}
    assert cities["bo4000@bulk.se"] != "Lund"  # its update was the failed one


def test_icomm_splits_writes_at_1000_with_results_in_order(sb):
    conn = connector(sb, "icomm")
    n = 1001
    ops = [
        WriteOp(
            f"GB{i}", None, {"Email": f"c{i}@bulk.se", "UserId": f"b{i:07d}", "StoreCode": "SE01"}
        )
        for i in range(n)
    ]
    ops[999] = WriteOp(
        "GBAD", None, {"Email": "not an email", "UserId": "bad", "StoreCode": "SE01"}
    )
    before = conn.http.counters.requests
    res = conn.write(ops)
    assert conn.http.counters.requests - before == 2  # 1,000 + 1
    assert [r.golden_id for r in res] == [op.golden_id for op in ops]
    assert [i for i, r in enumerate(res) if not r.ok] == [999]
    assert "InvalidEmail" in res[999].error
    assert res[1000].target_id == "b0001000|SE01" and res[0].target_id == "b0000000|SE01"
    stored = {f"{r['UserId']}|{r['StoreCode']}" for r in sb.records("icomm")}
    assert {r.target_id for r in res if r.ok} <= stored


# Icomm's batch upsert described in YAML: a list body, per-record results at the top level
ICOMM_BATCH_REST = """
type: rest
base_url: "{url}"
credentials: {{api_key: ICOMM_API_KEY}}
options:
    path: /api/v1/profiles/1/customers
    records_path: items
    id_field: [UserId, StoreCode]
    paging: {{type: offset, offset_param: offset, size_param: limit, page_size: 50}}
    auth: {{type: api_key, header: X-Api-Key}}
    mapping: {{Email: email, UserId: icomm_user_id, StoreCode: store_code}}
    write:
        path: /api/v1/profiles/1/contacts/upsert-batch
        method: POST
        body: list
        batch_size: 3
        results_path: ""
        result_id_field: UserId
        result_ok_field: Success
        result_error_field: Error
"""


def test_rest_write_batch_size_splits_with_results_in_order(sb):
    conn = from_yaml(ICOMM_BATCH_REST, "icomm_rest", url=sb.urls["icomm"])
    ops = [
        WriteOp(f"GR{i}", None, {"Email": f"r{i}@rest.se", "UserId": f"r{i}", "StoreCode": "SE01"})
        for i in range(7)
    ]
    ops[4] = WriteOp("GRBAD", None, {"Email": "nope", "UserId": "rbad", "StoreCode": "SE01"})
    before = conn.http.counters.requests
    res = conn.write(ops)
    assert conn.http.counters.requests - before == 3  # 3 + 3 + 1
    assert [r.golden_id for r in res] == [op.golden_id for op in ops]
    assert [r.ok for r in res] == [True, True, True, True, False, True, True]
    assert "InvalidEmail" in res[4].error
    assert [r.target_id for r in res if r.ok] == ["r0", "r1", "r2", "r3", "r5", "r6"]
    canon = conn.to_canonical(conn.read().records)
    assert {"r0|SE01", "r6|SE01"} <= set(canon["source_id"])


def test_salesforce_compares_only_the_fields_its_object_takes_and_reads(sb):
    """A golden field the written object cannot hold (a Lead's or Account's e-mail consent,
    an opt-out flag the options do not read) is not compared: it would differ at every run
    and an update would go out again and again."""
    contact = connector(sb, "salesforce")
    assert contact.carries("email_consent") and contact.empty_reads_as == {"email_consent": "yes"}
    for obj in ("Lead", "Account"):
        other = connector(sb, "salesforce", objects=[obj], write_object=obj)
        assert not other.carries("email_consent") and other.empty_reads_as == {}
    assert not connector(sb, "salesforce", write_object="Account").carries("first_name")
    fields = [f for f in contact.fields["Contact"] if f != "HasOptedOutOfEmail"]
    unread = connector(sb, "salesforce", fields={"Contact": fields})
    assert not unread.carries("email_consent") and unread.empty_reads_as == {}
    assert unread.carries("last_name")
