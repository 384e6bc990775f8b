"""Markets (issue 12 item 5; seed 004 "by store, market and language"), rules per market.

A customer's market comes from its store code, else its country; each market decides its
consents (which apply, their default), language, phone region and targets. Tested on the
domain functions per market, on the config (errors name the key), and over real sockets:
a Norwegian store's customer gets Norway's consents, phone region and targets.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import requests
import yaml

from custsync_pipeline.config import DEFAULT_CONFIG_PATH, ConfigError, load_sync_config
from custsync_pipeline.domain.markets import apply_market_rules, market_of, market_takes
from custsync_pipeline.domain.plan import ConsentRule, MarketPlan
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import materialize_all, metadata_of, run_against_sandbox

NORWAY = MarketPlan(
    name="NO",
    countries=("NO",),
    store_codes=("NO01", "OSL1"),
    language="nb",
    phone_region="NO",
    consents=(
        ConsentRule("email_consent", applies=True, default="no"),
        ConsentRule("sms_consent", applies=False),
    ),
    targets=("salesforce",),
)
SWEDEN = MarketPlan(
    name="SE",
    countries=("SE",),
    store_codes=("SE01",),
    language="sv",
    phone_region="SE",
    consents=(ConsentRule("email_consent", default="yes"),),
)
MARKETS = (NORWAY, SWEDEN)


def _golden() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "golden_id": ["oslo", "bergen", "stockholm", "swede_in_oslo", "nowhere"],
            # a store code decides before a country: a Swede who shops in Oslo is Norway's
            "store_code": ["OSL1", None, "SE01", "osl1 ", None],
            "country": [None, "NO", "SE", "SE", "FR"],
            "language": [None, "en", None, None, None],
            "email_consent": [None, "yes", None, "no", None],
            "sms_consent": ["yes", "yes", "yes", None, "yes"],
            "sms_consent_at": pd.to_datetime(["2026-01-01"] * 5, utc=True),
        }
    )


def test_market_from_store_code_then_country() -> None:
    got = market_of(_golden(), MARKETS)
    assert got.tolist()[:4] == ["NO", "NO", "SE", "NO"]
    assert pd.isna(got.iloc[4])
    assert market_of(_golden(), ()).isna().all()


def test_norway_rules_consents_and_language() -> None:
    out = apply_market_rules(_golden(), MARKETS).set_index("golden_id")
    # Norway: e-mail consent defaults to no where nobody set it, a given one stays
    assert out.loc["oslo", "email_consent"] == "no"
    assert out.loc["bergen", "email_consent"] == "yes"
    assert out.loc["swede_in_oslo", "email_consent"] == "no"
    # Norway does not use the SMS consent: never sent for its customers, nor its time
    assert out.loc[["oslo", "bergen", "swede_in_oslo"], "sms_consent"].isna().all()
    assert out.loc[["oslo", "bergen"], "sms_consent_at"].isna().all()
    # language: Norway's where the customer has none, the customer's own otherwise
    assert out.loc["oslo", "language"] == "nb"
    assert out.loc["bergen", "language"] == "en"


def test_sweden_rules_and_customers_of_no_market() -> None:
    out = apply_market_rules(_golden(), MARKETS).set_index("golden_id")
    assert out.loc["stockholm", "email_consent"] == "yes"  # Sweden's default
    assert out.loc["stockholm", "sms_consent"] == "yes"  # applies in Sweden
    assert out.loc["stockholm", "language"] == "sv"
    # a customer of no market is published as it is
    nowhere = out.loc["nowhere"]
    assert pd.isna(nowhere["email_consent"]) and nowhere["sms_consent"] == "yes"
    assert pd.isna(nowhere["language"])


def test_targets_per_market() -> None:
    out = apply_market_rules(_golden(), MARKETS)
    to_voyado = dict(zip(out["golden_id"], market_takes(out, MARKETS, "voyado"), strict=True))
    to_sf = dict(zip(out["golden_id"], market_takes(out, MARKETS, "salesforce"), strict=True))
    # Norway's customers go to Salesforce only; Sweden (no targets) and no market: everywhere
    assert to_voyado == {
        "oslo": False,
        "bergen": False,
        "stockholm": True,
        "swede_in_oslo": False,
        "nowhere": True,
    }
    assert all(to_sf.values())


# --------------------------------------------------------------------------- config


def _config(tmp_path: Path, edit) -> Path:  # noqa: ANN001 - a function of the dict
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    edit(data)
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_packaged_markets_give_phone_regions_to_every_lane() -> None:
    plan = load_sync_config().plan()
    assert [m.name for m in plan.markets] == ["SE", "NO", "DK", "FI", "NL", "DE", "GB"]
    norway = next(m for m in plan.markets if m.name == "NO")
    assert norway.phone_region == "NO" and norway.language == "nb"
    for conn in plan.connectors.values():
        assert conn.quality.market_regions["NO01"] == "NO"


def test_a_lane_region_wins_over_its_market(tmp_path: Path) -> None:
    def edit(d: dict) -> None:
        d["markets"]["NO"]["store_codes"] = ["NO01", "OSL1"]
        d["connectors"]["voyado"]["quality"] = {"market_regions": {"OSL1": "SE"}}

    plan = load_sync_config(_config(tmp_path, edit)).plan()
    assert plan.connectors["voyado"].quality.market_regions["OSL1"] == "SE"
    assert plan.connectors["salesforce"].quality.market_regions["OSL1"] == "NO"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["markets"]["NO"].update(targets=["exact"]),
            r"markets\.NO\.targets\[0\]: 'exact' is not a publish target",
        ),
        (
            lambda d: d["markets"]["NO"].update(phone_region="Norway"),
            r"markets\.NO\.phone_region: .*'Norway' is not an ISO 3166-1 alpha-2 code",
        ),
        (
            lambda d: d["markets"]["NO"].update(language="norsk"),
            r"markets\.NO\.language: .*'norsk' is not an ISO 639-1 code",
        ),
        (
            lambda d: d["markets"]["NO"].update(consents={"postal_consent": {"applies": False}}),
            r"markets\.NO\.consents: .*\['postal_consent'\] are not consents",
        ),
        (
            lambda d: d["markets"]["NO"].update(consents={"email_consent": {"default": "maybe"}}),
            r"markets\.NO\.consents\.email_consent\.default",
        ),
        (
            lambda d: d["markets"]["NO"].update(langauge="nb"),
            r"markets\.NO\.langauge: .*did you mean 'language'",
        ),
        (
            lambda d: d["markets"].update({False: {"countries": ["SE"]}}),
            r"markets: .*a bare NO is read by YAML as false",
        ),
        (
            lambda d: d["markets"]["NO"].update(countries=[False]),
            r"markets\.NO\.countries: .*a bare NO is read by YAML as false",
        ),
        (
            lambda d: d["publish"][0].update(key_field="mail"),
            r"publish\[0\]\.key_field: 'mail' is not a golden field",
        ),
    ],
    ids=[
        "unknown_target",
        "bad_region",
        "bad_language",
        "unknown_consent",
        "bad_default",
        "misspelt_key",
        "bare_no_market",
        "bare_no_country",
        "key_field",
    ],
)
def test_market_config_errors_name_the_key(tmp_path: Path, edit, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=message):
        load_sync_config(_config(tmp_path, edit))


# --------------------------------------------------------------------------- sockets


def test_a_norwegian_stores_customer_gets_norways_rules(dagster_env, tmp_path: Path) -> None:
    with Sandbox(seed=11, people=60, base_port=0, systems=["salesforce", "voyado"]) as sb:
        _, cfg = run_against_sandbox(
            dagster_env, tmp_path, sb.urls, enabled={"salesforce", "voyado"}
        )
        data = yaml.safe_load(cfg.read_text())
        data["markets"]["NO"] = {
            "countries": ["NO"],
            "store_codes": ["NO01", "OSL1"],  # OSL1 names no country: only the market tells
            "language": "nb",
            "phone_region": "NO",
            "consents": {"email_consent": {"default": "no"}, "sms_consent": {"applies": False}},
            "targets": ["salesforce"],
        }
        # Voyado's contacts give their names here (the packaged flow takes names from the CRM)
        data["connectors"]["voyado"]["aspects"].append("name")
        step = next(s for s in data["flow"]["enrichments"] if s["connector"] == "voyado")
        step["aspects"].append("name")
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        # a member signed up at the Oslo store: a national mobile number, no country
        r = requests.post(
            f"{sb.urls['voyado']}/api/v3/contacts",
            params={"storeExternalId": "OSL1"},
            json={
                "firstName": "Ingrid",
                "lastName": "Haugen",
                "email": "ingrid.haugen@example.no",
                "mobilePhone": "412 34 567",
                "preferences": {"acceptsSms": "Yes"},
            },
            headers={"apikey": "sandbox-voyado-key", "Content-Type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 201, r.text
        oslo_id = r.json()["id"]
        with dg.DagsterInstance.ephemeral() as instance:
            run = materialize_all(instance)
            assert run.success
            engine = StateDB(str(data["state_db_url"])).engine
            golden = core.load_golden_records(engine).set_index("golden_id")
            idm = core.load_outbox(engine, "salesforce")
            members = core.load_source_records(engine, ["voyado"]).set_index("source_id")
            assert members.loc[oslo_id, "phone"] == "+4741234567"  # Norway's phone region
            oslo = golden[golden["store_code"] == "OSL1"]
            assert len(oslo) == 1 and oslo["phone"].iloc[0] == "+4741234567"
            gid = oslo.index[0]

            # Norway's targets: Salesforce got the customer (with Norway's rules applied to
            # what it holds), Voyado gets no Norwegian customer it does not hold already
            created = idm[idm["golden_id"] == gid]
            assert (created["status"] == "acked").all() and len(created) == 1
            contact = next(c for c in sb.records("salesforce") if c.get("Custsync_Id__c") == gid)
            assert contact["Phone"] == "+4741234567" and contact["LastName"] == "Haugen"
            voyado_box = core.load_outbox(engine, "voyado")
            norwegian = set(golden.index[(golden["country"] == "NO")]) | {gid}
            assert not voyado_box["golden_id"].isin(norwegian).any()
            meta = metadata_of(run, "voyado/outbound_deltas")
            assert meta["held_back_market_not_served"] >= len(norwegian)
            assert (
                metadata_of(run, "salesforce/outbound_deltas")["held_back_market_not_served"] == 0
            )

            # Norway's consents, on what a target that took them would get
            from custsync_pipeline.config import load_sync_config as load

            plan = load(cfg).plan()
            ruled = apply_market_rules(golden.reset_index(), plan.markets).set_index("golden_id")
            assert ruled.loc[gid, "market"] == "NO"
            assert golden.loc[gid, "sms_consent"] == "yes"  # Voyado's fact, stored as is
            assert pd.isna(ruled.loc[gid, "sms_consent"])  # Norway does not use it
            assert ruled.loc[gid, "email_consent"] == "no"  # Norway's default
            assert ruled.loc[gid, "language"] == "nb"
            engine.dispose()
