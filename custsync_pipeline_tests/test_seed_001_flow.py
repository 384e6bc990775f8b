"""Seed 001's example, end to end through the sandbox over real sockets: Exact Online gives
name and addresses, KatanaPIM enriches contact persons and attributes; Salesforce (a
target only) receives the addresses on its Accounts.

Also the review commands on the result: ``custsync explain`` names the connector of each
field and entry, ``custsync history`` lists the versions with personal data masked.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import requests
import yaml

from custsync_pipeline.cli import main as cli_main
from custsync_pipeline.domain.aspects import fold
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store import golden as golden_store
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import (
    SANDBOX_SECRETS,
    materialize_all,
    metadata_of,
    write_sync_config,
)

COMPANIES = [
    # (Exact Name, Exact main address, a second Exact address, Katana's name for it)
    ("Lind Bygg AB", ("Storgatan 12", "111 22", "Stockholm"), ("Hamnvägen 3", "41101", "Göteborg"), "Lind Bygg"),
    ("Ek & Berg HB", ("Kungsgatan 5", "211 45", "Malmö"), ("Industrivägen 9", "21616", "Malmö"), "EK & BERG"),
    ("Nord El AB", ("Sjögatan 1", "90325", "Umeå"), None, "Nordel"),
]  # fmt: skip


@pytest.fixture
def sandbox():
    with Sandbox(seed=5, people=60, base_port=0) as sb:
        _add_seed_001_companies(sb)
        yield sb


def _add_seed_001_companies(sb: Sandbox) -> None:
    """The seed-001 example written into the sandbox over its APIs: companies in Exact
    Online (Accounts with their Addresses) and the same companies in KatanaPIM (by
    customer number) with contact persons and attributes."""
    exact = f"{sb.urls['exact']}/api/v1/1/crm"
    ex_auth = {"Authorization": f"Bearer {SANDBOX_SECRETS['EXACT_ACCESS_TOKEN']}"}
    katana = f"{sb.urls['katana']}/api/v1/customers"
    kt_auth = {"X-Api-Key": SANDBOX_SECRETS["KATANA_API_KEY"]}
    for i, (name, main, second, katana_name) in enumerate(COMPANIES):
        code = f"9{i:03d}"
        resp = requests.post(
            f"{exact}/Accounts",
            json={"Code": code, "Name": name, "AddressLine1": main[0], "Postcode": main[1],
                  "City": main[2], "Country": "SE"},
            headers=ex_auth, timeout=10,
        )  # fmt: skip
        assert resp.status_code == 201, resp.text
        account = resp.json()["d"]["ID"]
        if second:
            resp = requests.post(
                f"{exact}/Addresses",
                json={"Account": account, "Type": 4, "AddressLine1": second[0],
                      "Postcode": second[1], "City": second[2], "Country": "SE"},
                headers=ex_auth, timeout=10,
            )  # fmt: skip
            assert resp.status_code == 201, resp.text
        resp = requests.post(
            katana,
            json={"kind": "company", "company_name": katana_name, "customer_number": code,
                  "attributes": {"segment": "b2b", "payment_terms": f"{30 + i} days"},
                  "contact_persons": [
                      {"first_name": "Åsa", "last_name": f"Lind{i}", "role": "buyer",
                       "email": f"asa{i}@company{i}.se", "phone": f"+4670123450{i}"},
                      {"first_name": "Bo", "last_name": f"Ek{i}", "role": "cfo"},
                  ]},
            headers=kt_auth, timeout=10,
        )  # fmt: skip
        assert resp.status_code == 201, resp.text


def _seed_001_config(path: Path, sandbox: Sandbox, db_url: str) -> Path:
    write_sync_config(path, sandbox.urls, db_url, enabled={"exact", "katana", "salesforce"})
    data = yaml.safe_load(path.read_text())
    conns = data["connectors"]
    conns["exact"].update(role="source", aspects=["name", "addresses"])
    # the ERP of seed 001 keeps companies as Accounts
    conns["exact"]["options"].update(resources=["Accounts", "Addresses"], account_kind="company")
    conns["katana"]["aspects"] = [
        "contact_persons",
        "contact_person_contact_details",
        "customer_attributes",
    ]
    # Salesforce takes part in identity (its Accounts carry the customer numbers and are
    # what Katana's companies point at) but gives nothing to the golden record
    conns["salesforce"].update(role="target", aspects=["name"])
    conns["salesforce"]["options"].update(objects=["Account"], write_object="Account")
    conns["salesforce"]["quality"] = {"min_rows": 0}  # it holds no Account yet
    data["flow"] = {
        "source": "exact",
        "enrichments": [
            {
                "connector": "katana",
                "aspects": [
                    "contact_persons",
                    "contact_person_contact_details",
                    "customer_attributes",
                ],
            }
        ],
    }
    data["publish"] = [
        {
            "connector": "salesforce",
            "fields": ["company_name"],
            "aspects": ["addresses"],
            "kinds": ["company"],
            "required_fields": ["company_name"],
        }
    ]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _keys(entries: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(entries["aspect"], entries["entry_key"], strict=True))


def test_exact_names_and_addresses_katana_contact_persons_salesforce_receives_addresses(
    dagster_env, tmp_path: Path, sandbox: Sandbox, capsys
) -> None:
    db_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    cfg = _seed_001_config(tmp_path / "sync.yaml", sandbox, db_url)
    dagster_env.setenv("CUSTSYNC_CONFIG", str(cfg))
    with dg.instance_for_test() as instance:
        first = materialize_all(instance)
    assert first.success
    assert metadata_of(first, "salesforce/published")["dead_lettered"] == 0

    engine = StateDB(db_url).engine
    idmap = pd.read_sql("select connector, source_id, golden_id from identity_map", engine)
    golden = core.load_golden_records(engine).set_index("golden_id")
    entries = golden_store.load_golden_entries(engine)
    sources = golden_store.load_entry_sources(engine)
    src_entries = golden_store.load_source_entries(engine)
    records = core.load_source_records(engine)

    # golden companies held by Exact and by a Katana record that has contact persons
    katana_cp = src_entries[
        (src_entries["connector"] == "katana") & (src_entries["aspect"] == "contact_persons")
    ]
    ours = records[
        (records["connector"] == "katana")
        & records["customer_number"].isin([f"9{i:03d}" for i in range(len(COMPANIES))])
    ]
    with_cp = idmap[
        (idmap["connector"] == "katana")
        & idmap["source_id"].isin(katana_cp["source_id"])
        & idmap["source_id"].isin(ours["source_id"])
    ]
    in_exact = idmap[idmap["connector"] == "exact"]
    both = sorted(set(with_cp["golden_id"]) & set(in_exact["golden_id"]))
    assert len(both) == len(COMPANIES), "each company is one golden record"

    checked = 0
    for gid in both:
        exact_ids = in_exact.loc[in_exact["golden_id"] == gid, "source_id"]
        katana_ids = with_cp.loc[with_cp["golden_id"] == gid, "source_id"]
        ex_rec = records[(records["connector"] == "exact") & records["source_id"].isin(exact_ids)]
        # the name is Exact's (Katana is not a step for the name aspect)
        names = set(ex_rec["company_name"].dropna()) | set(ex_rec["last_name"].dropna())
        row = golden.loc[gid]
        assert (row["company_name"] in names) or (row["last_name"] in names), gid
        mine = entries[entries["golden_id"] == gid]
        # addresses: exactly Exact's, held by Exact only
        ex_addr = src_entries[
            (src_entries["connector"] == "exact")
            & src_entries["source_id"].isin(exact_ids)
            & (src_entries["aspect"] == "addresses")
        ]
        g_addr = mine[mine["aspect"] == "addresses"]
        assert _keys(g_addr) == _keys(ex_addr), gid
        assert set(g_addr["providers"]) <= {"exact"}
        # contact persons and attributes: Katana's, each with its provenance
        kt = src_entries[
            (src_entries["connector"] == "katana")
            & src_entries["source_id"].isin(katana_ids)
            & src_entries["aspect"].isin(["contact_persons", "customer_attributes"])
        ]
        g_kt = mine[mine["aspect"].isin(["contact_persons", "customer_attributes"])]
        assert _keys(g_kt) == _keys(kt), gid
        assert (g_kt["providers"] == "katana").all()
        held = sources[sources["golden_id"] == gid]
        assert set(zip(held["aspect"], held["entry_key"], strict=True)) >= _keys(mine)
        assert held["seen_at"].notna().all()
        checked += 1
    assert checked == len(COMPANIES)

    # Salesforce received the addresses: each company now has a Salesforce Account (created
    # with the golden id as its external id) whose Billing/Shipping blocks hold its addresses
    sf = pd.DataFrame(sandbox.records("salesforce", "Account")).set_index("Custsync_Id__c")
    for gid in both:
        acct = sf.loc[gid]
        got = {
            (fold(pd.Series([acct[f"{p}Street"]])).iloc[0], str(acct[f"{p}PostalCode"]).replace(" ", ""))
            for p in ("Billing", "Shipping")
            if acct.get(f"{p}Street")
        }  # fmt: skip
        mine = entries[(entries["golden_id"] == gid) & (entries["aspect"] == "addresses")]
        want = set(zip(fold(mine["street"]), mine["postal_code"].str.replace(" ", ""), strict=True))
        assert got and got <= want, (gid, got, want)
        assert len(got) == min(len(want), 2)  # an Account holds two addresses at most
        assert acct["Name"] == golden.loc[gid, "company_name"]

    # a second run with no change sends nothing and changes no golden record
    with dg.instance_for_test() as instance:
        second = materialize_all(instance)
    assert metadata_of(second, "salesforce/outbound_deltas")["dagster/row_count"] == 0
    assert metadata_of(second, "golden_customers")["changed_records"] == 0

    # the review commands: which connector gave what, and the history, masked
    gid = both[0]
    assert cli_main(["explain", gid, "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "company_name: from exact:" in out
    assert "held by exact" in out and "held by katana" in out
    assert cli_main(["history", gid, "--db", db_url]) == 0
    hist = capsys.readouterr().out
    assert "version 1" in hist and "addresses[" in hist and "(from exact)" in hist
    street = entries[(entries["golden_id"] == gid) & (entries["aspect"] == "addresses")]
    for value in street["street"].dropna():
        assert value not in hist and value not in out  # personal data masked
