"""Multi-valued aspects from every connector, over real sockets against the sandbox.

Each connector's ``to_aspects`` on what it read gives the entries the emulator stores, in
the vendor's shape (Salesforce Mailing/Other and Billing/Shipping, Contacts under an
Account as its contact persons; Exact visit address, ``crm/Addresses`` and Contacts;
KatanaPIM contact persons and attributes through the packaged YAML entry; Voyado custom
attributes and consent times; Voucherify address and metadata). The generator's overlaps
are real once keyed by ``domain.aspects.key_entries``: one address typed two ways in two
systems gets one key, one contact person held by two systems gets one key, one attribute
carries two values. A Salesforce write with address entries lands in Mailing/Other and
reads back as the same entries.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from custsync_pipeline.config import ConnectorConfig, load_sync_config
from custsync_pipeline.connectors import ConnectorError, WriteOp, build_connector
from custsync_pipeline.domain.aspects import ENTRY_COLUMNS, key_entries, orphans
from custsync_pipeline.domain.deltas import aspect_payload_hashes
from custsync_pipeline.sandbox import CREDENTIALS, Sandbox
from custsync_pipeline.sandbox.generator import EXACT_ADDRESS_TYPES
from custsync_pipeline_tests.sandbox_fixtures import module_sandbox

FAST = {"rate_per_s": None, "backoff_factor_s": 0.01, "backoff_jitter_s": 0.01}
CREDS = {
    "salesforce": {"access_token": "SALESFORCE_ACCESS_TOKEN"},
    "voucherify": {"app_id": "VOUCHERIFY_APP_ID", "app_token": "VOUCHERIFY_APP_TOKEN"},
    "voyado": {"api_key": "VOYADO_API_KEY"},
    "exact": {"access_token": "EXACT_ACCESS_TOKEN"},
}
OPTIONS = {
    "salesforce": {"objects": ["Contact", "Account"]},
    "voucherify": {},
    "voyado": {"read_mode": "listing"},
    "exact": {"division": 1, "resources": ["Accounts", "Contacts", "Addresses"]},
}


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    # 1,500 people: a handful of Salesforce Accounts with staff, KatanaPIM companies among them
    yield from module_sandbox(seed=7, people=1500, options={"exact": {"page_size": 60}})


def connector(sb: Sandbox, system: str, **options):
    cfg = ConnectorConfig(
        type=system,
        base_url=sb.urls[system],
        credentials=CREDS[system],
        options={**OPTIONS[system], "http": FAST, **options},
    )
    return build_connector(system, cfg, dict(CREDENTIALS))


def katana(sb: Sandbox):
    """The packaged KatanaPIM entry (generic REST, YAML only), pointed at this sandbox."""
    cfg = load_sync_config().connectors["katana"]
    options = {**cfg.options, "http": FAST}
    cfg = cfg.model_copy(update={"base_url": sb.urls["katana"], "options": options})
    return build_connector("katana", cfg, dict(CREDENTIALS))


@pytest.fixture(scope="module")
def entries(sb: Sandbox) -> dict[str, pd.DataFrame]:
    """Every connector's entries of a full read, keyed (``key_entries``)."""
    out = {}
    for system in ("salesforce", "exact", "voyado", "voucherify"):
        with connector(sb, system) as conn:
            out[system] = key_entries(conn.to_aspects(conn.read().records))
    with katana(sb) as conn:
        out["katana"] = key_entries(conn.to_aspects(conn.read().records))
    return out


def of(frame: pd.DataFrame, aspect: str) -> pd.DataFrame:
    return frame[frame["aspect"] == aspect]


def test_every_connector_gives_entry_columns_and_no_orphans(entries) -> None:
    for system, frame in entries.items():
        assert list(frame.columns) == list(ENTRY_COLUMNS), system
        assert len(frame) > 0, system
        assert (frame["connector"] == system).all()
        assert frame["entry_key"].notna().all(), system
        assert not orphans(frame).any(), system
        assert frame["seen_at"].notna().all(), system  # the record's change time


def test_salesforce_addresses_and_contact_persons(sb: Sandbox, entries) -> None:
    got = of(entries["salesforce"], "addresses")
    contacts = sb.records("salesforce", "Contact")
    other = [c for c in contacts if c.get("OtherStreet")]
    assert len(other) > 50
    by_key = got.set_index(["source_id", "local_id"])
    for c in other:
        row = by_key.loc[(c["Id"], "other")]
        assert (row["type"], row["street"], row["postal_code"], row["city"]) == (
            "other",
            c["OtherStreet"],
            c["OtherPostalCode"],
            c["OtherCity"],
        )
    mailing = [c for c in contacts if c.get("MailingStreet")]
    assert len(got[got["type"] == "mailing"]) == len(mailing)
    accounts = sb.records("salesforce", "Account")
    shipping = [a for a in accounts if a.get("ShippingStreet")]
    assert shipping and len(got[got["type"] == "shipping"]) == len(shipping)
    assert len(got[got["type"] == "billing"]) == len(accounts)
    for a in shipping:
        assert by_key.loc[(a["Id"], "shipping"), "street"] == a["ShippingStreet"]

    # every Contact under an Account is one of the Account's contact persons
    persons = of(entries["salesforce"], "contact_persons")
    staff = [c for c in contacts if c.get("AccountId")]
    assert len(staff) >= 6
    assert sorted(zip(persons["source_id"], persons["person_id"], strict=True)) == sorted(
        (c["AccountId"], c["Id"]) for c in staff
    )
    assert set(persons["source_id"]) <= {a["Id"] for a in accounts}
    assert persons["role"].notna().all()  # Title
    details = of(entries["salesforce"], "contact_person_contact_details")
    assert set(details["parent_key"]) <= set(persons["entry_key"])
    with_mail = sum(1 for c in staff if c.get("Email"))
    assert len(details[details["type"] == "email"]) == with_mail


def test_exact_addresses_and_contact_persons(sb: Sandbox, entries) -> None:
    got = of(entries["exact"], "addresses")
    accounts = sb.records("exact")
    extra = sb.records("exact", "Addresses")
    assert len(extra) > 100
    visiting = [a for a in accounts if a.get("AddressLine1")]
    assert len(got[got["local_id"] == "visiting"]) == len(visiting)
    rows = got.set_index("local_id")
    for addr in extra:
        row = rows.loc[addr["ID"]]
        assert row["source_id"] == addr["Account"]  # entries of the Account record
        assert row["type"] == EXACT_ADDRESS_TYPES[addr["Type"]]
        assert (row["street"], row["postal_code"]) == (addr["AddressLine1"], addr["Postcode"])
    persons = of(entries["exact"], "contact_persons")
    contacts = sb.records("exact", "Contacts")
    assert sorted(zip(persons["source_id"], persons["person_id"], strict=True)) == sorted(
        (c["Account"], c["ID"]) for c in contacts
    )
    assert persons["role"].notna().all()  # JobTitleDescription


def test_exact_without_addresses_resource_reads_no_address_rows(sb: Sandbox) -> None:
    with connector(sb, "exact", resources=["Accounts"]) as conn:
        raw = conn.read().records
    assert "Addresses" not in raw.columns
    got = conn.to_aspects(raw)
    assert set(of(got, "addresses")["type"]) == {"visiting"}
    assert len(raw) == len(sb.records("exact"))  # addresses never become records


def test_katana_contact_persons_and_attributes(sb: Sandbox, entries) -> None:
    stored = sb.records("katana")
    got = entries["katana"]
    persons = of(got, "contact_persons")
    expected = sorted(
        (r["id"], p["id"], p["first_name"], p["last_name"], p["role"])
        for r in stored
        for p in r.get("contact_persons") or []
    )
    assert len(expected) > 100
    assert (
        sorted(
            zip(
                persons["source_id"],
                persons["local_id"],
                persons["first_name"],
                persons["last_name"],
                persons["role"],
                strict=True,
            )
        )
        == expected
    )
    companies = {r["id"] for r in stored if r.get("kind") == "company"}
    assert companies and companies <= set(persons["source_id"])  # a firm's staff
    attrs = of(got, "customer_attributes")
    assert set(attrs["name"]) == {"segment", "preferred_language"}  # custsync_id excluded
    assert len(attrs[attrs["name"] == "segment"]) == len(stored)
    details = of(got, "contact_person_contact_details")
    assert set(details["type"]) == {"email", "phone"}
    assert set(details["parent_key"]) <= set(persons["entry_key"])


def test_voyado_attributes_and_consent_times(sb: Sandbox, entries) -> None:
    stored = {r["id"]: r for r in sb.records("voyado")}
    attrs = of(entries["voyado"], "customer_attributes")
    assert set(attrs["name"]) == {"segment", "favoriteCategory"}
    segs = attrs[attrs["name"] == "segment"].set_index("source_id")["value"]
    assert len(segs) == sum(1 for r in stored.values() if r.get("segment"))
    assert all(stored[sid]["segment"] == v for sid, v in segs.items())

    with connector(sb, "voyado") as conn:
        canon = conn.to_canonical(conn.read().records).set_index("source_id")
    for col, pref in (("email_consent_at", "acceptsEmail"), ("sms_consent_at", "acceptsSms")):
        known = canon[canon[col.removesuffix("_at")].notna()]
        assert len(known) > 20
        assert known[col].notna().all(), col  # a known consent has its time
        for sid, when in known[col].head(50).items():
            date = next(c["date"] for c in stored[sid]["consents"] if c["id"] == pref)
            assert when == pd.Timestamp(date)
        assert canon.loc[canon[col.removesuffix("_at")].isna(), col].isna().all()


def test_voucherify_address_and_metadata(sb: Sandbox, entries) -> None:
    stored = {r["id"]: r for r in sb.records("voucherify")}
    got = entries["voucherify"]
    addrs = of(got, "addresses").set_index("source_id")
    with_address = [r for r in stored.values() if (r.get("address") or {}).get("line_1")]
    assert len(addrs) == len(with_address)
    for r in with_address[:50]:
        assert addrs.loc[r["id"], "street"] == r["address"]["line_1"]
        assert addrs.loc[r["id"], "type"] == "mailing"
    attrs = of(got, "customer_attributes")
    assert {"segment", "language"} <= set(attrs["name"])
    assert "custsync_id" not in set(attrs["name"])


# ----------------------------------------------------------------------------- overlaps


def _person_keys(sb: Sandbox, frame: pd.DataFrame, system: str) -> pd.DataFrame:
    truth = sb.data.truth
    truth = truth[truth["system"] == system][["source_id", "person_id"]].astype(str)
    # "who": the true person (entries have a person_id column of their own)
    truth = truth.rename(columns={"person_id": "who"})
    return frame.astype({"source_id": str}).merge(truth, on="source_id")


def test_one_address_typed_two_ways_gets_one_key(sb: Sandbox, entries) -> None:
    sf = _person_keys(sb, of(entries["salesforce"], "addresses"), "salesforce")
    ex = _person_keys(sb, of(entries["exact"], "addresses"), "exact")
    both = sf.merge(ex, on=["who", "entry_key"], suffixes=("_sf", "_ex"))
    typed_apart = both[
        (both["street_sf"] != both["street_ex"])
        | (both["postal_code_sf"] != both["postal_code_ex"])
    ]
    assert len(typed_apart) > 20  # "Storgatan 12" / "STORGATAN 12", "112 34" / "11234"
    assert (typed_apart["type_sf"] == "mailing").all()
    vf = _person_keys(sb, of(entries["voucherify"], "addresses"), "voucherify")
    both = sf.merge(vf, on=["who", "entry_key"], suffixes=("_sf", "_vf"))
    assert (both["street_sf"] != both["street_vf"]).sum() > 20


def test_one_contact_person_held_by_two_systems(sb: Sandbox, entries) -> None:
    kt = of(entries["katana"], "contact_persons")
    ex = of(entries["exact"], "contact_persons")
    sf = of(entries["salesforce"], "contact_persons")
    # the same person, Exact's Contact of an Account and a contact person in KatanaPIM
    assert len(set(kt["entry_key"]) & set(ex["entry_key"])) > 20
    # a firm's staff: Contacts of its Salesforce Account and contact persons of the
    # KatanaPIM company that points at the Account
    companies = {
        r["id"]: r["crm_account_id"] for r in sb.records("katana") if r.get("kind") == "company"
    }
    shared = 0
    for kid, account in companies.items():
        k_keys = set(kt.loc[kt["source_id"] == kid, "entry_key"])
        s_keys = set(sf.loc[sf["source_id"] == account, "entry_key"])
        shared += len(k_keys & s_keys)
    assert shared >= len(companies)


def test_one_attribute_with_two_values(sb: Sandbox, entries) -> None:
    kt = _person_keys(sb, of(entries["katana"], "customer_attributes"), "katana")
    vy = _person_keys(sb, of(entries["voyado"], "customer_attributes"), "voyado")
    both = kt.merge(vy, on=["who", "entry_key"], suffixes=("_kt", "_vy"))
    assert (both["name_kt"] == "segment").all()  # one natural key: the name
    assert (both["value_kt"] != both["value_vy"]).sum() > 10
    assert (both["value_kt"] == both["value_vy"]).sum() > 0


# ----------------------------------------------------------------------------- writes


ADDRESSES = [
    {"type": "mailing", "street": "Storgatan 12", "postal_code": "112 34", "city": "Stockholm",
     "country": "SE"},
    {"type": "visiting", "street": "Kungsvägen 3", "postal_code": "411 04", "city": "Göteborg",
     "country": "SE"},
]  # fmt: skip


def test_salesforce_write_lands_in_mailing_and_other_and_reads_back(sb: Sandbox) -> None:
    sb.reset()
    golden = pd.DataFrame(
        {
            "first_name": ["Ada"],
            "last_name": ["Lind"],
            "street": ["Old street 1"],  # the flat address gives way to the entries
            "city": ["Lund"],
            "addresses": [list(reversed(ADDRESSES))],  # mailing first, whatever the order
        }
    )
    with connector(sb, "salesforce", objects=["Contact"]) as conn:
        payload = conn.from_canonical(golden)[0]
        assert payload["MailingStreet"] == "Storgatan 12"
        assert payload["OtherCity"] == "Göteborg"
        assert "Old street 1" not in payload.values()
        [result] = conn.write([WriteOp("G-aspects-1", None, payload)])
        assert result.ok, result.error
        stored = next(c for c in sb.records("salesforce", "Contact") if c["Id"] == result.target_id)
        assert (stored["MailingStreet"], stored["MailingPostalCode"]) == ("Storgatan 12", "112 34")
        assert (stored["OtherStreet"], stored["OtherCity"]) == ("Kungsvägen 3", "Göteborg")
        raw = conn.read().records
        back = key_entries(conn.to_aspects(raw[raw["Id"] == result.target_id]))
    back = of(back, "addresses")
    sent = pd.DataFrame(ADDRESSES).assign(
        connector="salesforce", source_id=result.target_id, aspect="addresses"
    )
    sent["type"] = ["mailing", "other"]  # Salesforce's second block is "Other"
    assert sorted(back["entry_key"]) == sorted(key_entries(sent)["entry_key"])


def test_salesforce_other_address_never_repeats_the_mailing_one(sb: Sandbox) -> None:
    """Exact's visiting and postal address of one office are two entries of one place:
    the Contact's Mailing* holds it, Other* stays empty (or takes a third, other place),
    and the Contact read back compares equal to what custsync would write."""
    sb.reset()
    same_place = [
        {**ADDRESSES[0], "type": "mailing"},
        {**ADDRESSES[0], "type": "visiting", "street": "STORGATAN  12", "postal_code": "11234"},
    ]
    golden = pd.DataFrame({"last_name": ["Lind", "Berg"],
                           "addresses": [same_place, [*same_place, ADDRESSES[1]]]})  # fmt: skip
    with connector(sb, "salesforce", objects=["Contact"]) as conn:
        one, three = conn.from_canonical(golden)
        assert one["MailingStreet"] == "Storgatan 12"
        assert not any(k.startswith("Other") for k in one), one
        assert (three["OtherStreet"], three["OtherCity"]) == ("Kungsvägen 3", "Göteborg")
        results = conn.write([WriteOp("G-place-1", None, one), WriteOp("G-place-2", None, three)])
        assert all(r.ok for r in results), results
        raw = conn.read().records
        ids = [r.target_id for r in results]
        stored = {c["Id"]: c for c in sb.records("salesforce", "Contact") if c["Id"] in ids}
        assert not stored[ids[0]].get("OtherStreet")
        back = of(key_entries(conn.to_aspects(raw[raw["Id"] == ids[0]])), "addresses")
        assert len(back) == 1
        # what the target holds hashes as what custsync would write: no update next run
        held = pd.DataFrame({"source_id": ids[:1], "addresses": [back.to_dict("records")]})
        want = aspect_payload_hashes(golden.iloc[:1].assign(golden_id="G"), ["addresses"],
                                     conn.from_canonical)  # fmt: skip
        have = aspect_payload_hashes(held, ["addresses"], conn.from_canonical, key="source_id")
        assert want.iloc[0] == have.iloc[0]


def test_salesforce_account_write_billing_and_shipping(sb: Sandbox) -> None:
    sb.reset()
    addresses = [
        {**ADDRESSES[0], "type": "shipping"},
        {**ADDRESSES[1], "type": "billing"},
    ]
    golden = pd.DataFrame({"company_name": ["Lind AB"], "addresses": [addresses]})
    with connector(sb, "salesforce", objects=["Account"]) as conn:
        payload = conn.from_canonical(golden)[0]
        [result] = conn.write([WriteOp("G-aspects-2", None, payload)])
        assert result.ok, result.error
        raw = conn.read().records
        back = of(conn.to_aspects(raw[raw["Id"] == result.target_id]), "addresses")
    assert sorted(zip(back["type"], back["street"], strict=True)) == [
        ("billing", "Kungsvägen 3"),
        ("shipping", "Storgatan 12"),
    ]


def test_from_canonical_without_aspect_columns_is_unchanged(sb: Sandbox) -> None:
    golden = pd.DataFrame({"first_name": ["Ada"], "last_name": ["Lind"], "street": ["A 1"]})
    with_empty = golden.assign(addresses=[None], customer_attributes=[None])
    for system in ("salesforce", "voucherify", "voyado"):
        with connector(sb, system) as conn:
            assert conn.from_canonical(golden) == conn.from_canonical(with_empty), system


def test_voucherify_and_voyado_take_address_and_attributes(sb: Sandbox) -> None:
    golden = pd.DataFrame(
        {
            "email": ["ada.lind@example.com"],
            "addresses": [ADDRESSES[1:] + ADDRESSES[:1]],
            "customer_attributes": [[{"name": "segment", "value": "vip"}]],
        }
    )
    with connector(sb, "voucherify") as conn:
        body = conn.from_canonical(golden)[0]
    assert body["address"] == {
        "line_1": "Storgatan 12",
        "city": "Stockholm",
        "postal_code": "112 34",
        "country": "SE",
    }
    assert body["metadata"] == {"segment": "vip"}
    with connector(sb, "voyado") as conn:
        body = conn.from_canonical(golden)[0]
    assert (body["street"], body["zipCode"], body["countryCode"]) == (
        "Storgatan 12",
        "112 34",
        "SE",
    )


# ----------------------------------------------------------------------------- YAML options


def test_rest_aspects_option_names_a_bad_column(sb: Sandbox) -> None:
    cfg = load_sync_config().connectors["katana"]
    bad = [{"aspect": "addresses", "fields": {"zip": "zip_code"}}]
    cfg = cfg.model_copy(update={"options": {**cfg.options, "aspects": bad}})
    with pytest.raises(ConnectorError, match=r"aspects\[0\].*zip_code"):
        build_connector("katana", cfg, dict(CREDENTIALS))


def test_file_connector_maps_flattened_columns(tmp_path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "id,name,address2_street,address2_zip,attr_color,attr_size,updated\n"
        "1,Ada,Storgatan 12,112 34,red,,2024-05-01T10:00:00Z\n"
        "2,Bo,,,blue,M,2024-05-02T10:00:00Z\n",
        encoding="utf-8",
    )
    cfg = ConnectorConfig(
        type="file",
        options={
            "path": str(path),
            "updated_field": "updated",
            "mapping": {"name": "first_name"},
            "aspects": [
                {
                    "aspect": "addresses",
                    "fields": {"address2_street": "street", "address2_zip": "postal_code"},
                    "static": {"type": "shipping"},
                },
                {"aspect": "customer_attributes", "prefix": "attr_"},
            ],
        },
    )
    with build_connector("crm_export", cfg, {}) as conn:
        got = conn.to_aspects(conn.read().records)
    addr = of(got, "addresses")
    assert addr[["source_id", "type", "local_id", "street"]].values.tolist() == [
        ["1", "shipping", "shipping", "Storgatan 12"]
    ]
    attrs = of(got, "customer_attributes")
    assert sorted(zip(attrs["source_id"], attrs["name"], attrs["value"], strict=True)) == [
        ("1", "color", "red"),
        ("2", "color", "blue"),
        ("2", "size", "M"),
    ]
    assert (got["seen_at"].dt.day.isin([1, 2])).all()


def test_generator_aspects_are_deterministic_by_seed() -> None:
    from custsync_pipeline.sandbox.generator import generate

    a, b = generate(seed=5, people=600), generate(seed=5, people=600)
    for key in a.frames:
        pd.testing.assert_frame_equal(a.frames[key], b.frames[key])
    pd.testing.assert_frame_equal(a.extras["exact.Address"], b.extras["exact.Address"])
    c = generate(seed=6, people=600)
    assert not a.extras["exact.Address"].equals(c.extras["exact.Address"])
    # fresh copies: a consumer editing a nested list does not change the next rendering
    first = a.records("katana")
    next(r for r in first if r["contact_persons"])["contact_persons"].clear()
    assert a.records("katana") == b.records("katana")


def test_katana_contact_persons_sent_without_ids(sb: Sandbox) -> None:
    """A contact person written without an id gets one from the PIM; a list item without an
    id is known by its position, so its nested contact details still find their parent."""
    import requests

    sb.reset()
    resp = requests.post(
        f"{sb.urls['katana']}/api/v1/customers",
        json={
            "kind": "company",
            "company_name": "Lind Bygg",
            "contact_persons": [
                {"first_name": "Åsa", "last_name": "Lind", "email": "asa@lindbygg.se"},
                {"first_name": "Bo", "last_name": "Ek", "role": "cfo"},
            ],
        },
        headers={"X-Api-Key": CREDENTIALS["KATANA_API_KEY"]},
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    rec = resp.json()
    assert [p["id"] for p in rec["contact_persons"]] == [f"cp{rec['id']}-1", f"cp{rec['id']}-2"]
    with katana(sb) as conn:
        raw = conn.read().records
    # the same list as another client would send it, ids left out
    raw = raw[raw["id"] == rec["id"]].copy()
    raw["contact_persons"] = [
        [{k: v for k, v in p.items() if k != "id"} for p in rec["contact_persons"]]
    ]
    got = key_entries(conn.to_aspects(raw))
    persons = of(got, "contact_persons")
    assert sorted(persons["local_id"]) == ["0", "1"]
    details = of(got, "contact_person_contact_details")
    assert list(details["value"]) == ["asa@lindbygg.se"]
    assert not orphans(got).any()
    sb.reset()


def test_nested_lists_stored_as_json_text_give_the_same_entries(sb: Sandbox) -> None:
    """Between Dagster steps a raw frame's nested lists are JSON text (Parquet holds no
    ragged lists of objects): the entries must not change."""
    import json

    for make, column_name in (
        (lambda: katana(sb), "contact_persons"),
        (lambda: connector(sb, "voyado"), "consents"),
        (lambda: connector(sb, "exact"), "Addresses"),
    ):
        with make() as conn:
            raw = conn.read().records
        as_text = raw.copy()
        as_text[column_name] = [
            json.dumps(v) if isinstance(v, list) else v for v in raw[column_name]
        ]
        direct, stored = conn.to_aspects(raw), conn.to_aspects(as_text)
        assert len(direct) > 0
        pd.testing.assert_frame_equal(direct, stored)
        if column_name == "consents":
            pd.testing.assert_frame_equal(conn.to_canonical(raw), conn.to_canonical(as_text))


def test_voucherify_write_lands_in_address_and_metadata_and_reads_back(sb: Sandbox) -> None:
    sb.reset()
    golden = pd.DataFrame(
        {
            "first_name": ["Ada"],
            "last_name": ["Lind"],
            "email": ["ada.lind@example.com"],
            "addresses": [[ADDRESSES[1], ADDRESSES[0]]],
            "customer_attributes": [[{"name": "segment", "value": "vip"}]],
        }
    )
    with connector(sb, "voucherify") as conn:
        [result] = conn.write([WriteOp("G-aspects-3", None, conn.from_canonical(golden)[0])])
        assert result.ok, result.error
        raw = conn.read().records
        back = key_entries(conn.to_aspects(raw[raw["id"] == result.target_id]))
    stored = next(r for r in sb.records("voucherify") if r["id"] == result.target_id)
    assert stored["address"]["line_1"] == "Storgatan 12"
    assert stored["metadata"]["segment"] == "vip"
    sent = pd.DataFrame([ADDRESSES[0]]).assign(
        connector="voucherify", source_id=result.target_id, aspect="addresses"
    )
    assert list(of(back, "addresses")["entry_key"]) == list(key_entries(sent)["entry_key"])
    attrs = of(back, "customer_attributes")
    assert list(zip(attrs["name"], attrs["value"], strict=True)) == [("segment", "vip")]
    sb.reset()
