"""Salesforce <-> Voyado in both directions (issue 12 items 3 and 4), over real sockets.

The packaged config with Salesforce and Voyado enabled: a tier change on a Voyado contact
and a points change on its point account reach the Salesforce Contact's loyalty fields
(and custsync never writes loyalty to Voyado); a CRM-owned profile change (a Contact's last
name) reaches the Voyado contact; a Lead converted into an existing Contact follows its
``ConvertedContactId`` into that Contact's golden record.
"""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest
import requests
import sqlalchemy as sa

from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import materialize_all, metadata_of, run_against_sandbox
from custsync_pipeline_tests.sandbox_fixtures import SF_HEADERS

VY_HEADERS = {"apikey": "sandbox-voyado-key", "Content-Type": "application/json"}
SF = "/services/data/v60.0"


def _idmap(engine) -> pd.DataFrame:  # noqa: ANN001 - an Engine
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select connector, source_id, golden_id from identity_map"))
        return pd.DataFrame(rows.fetchall(), columns=["connector", "source_id", "golden_id"])


def _pairs(engine, sb: Sandbox) -> pd.DataFrame:  # noqa: ANN001
    """Golden records with exactly one Salesforce Contact and one Voyado contact."""
    idm = _idmap(engine)
    contacts = {r["Id"] for r in sb.records("salesforce")}
    sf = idm[(idm["connector"] == "salesforce") & idm["source_id"].isin(contacts)]
    vy = idm[idm["connector"] == "voyado"]
    sf = sf[~sf["golden_id"].duplicated(keep=False)]
    vy = vy[~vy["golden_id"].duplicated(keep=False)]
    return sf.merge(vy, on="golden_id", suffixes=("_sf", "_vy"))


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory):
    """A sandbox after one whole-graph run of Salesforce and Voyado (both ways), shared by
    the module's tests (each runs again on top of what the ones before it left)."""
    from custsync_pipeline_tests.e2e import SANDBOX_SECRETS

    tmp_path = tmp_path_factory.mktemp("both_ways")
    with (
        pytest.MonkeyPatch.context() as env,
        Sandbox(seed=11, people=60, base_port=0, systems=["salesforce", "voyado"]) as sb,
    ):
        for k, v in SANDBOX_SECRETS.items():
            env.setenv(k, v)
        (tmp_path / "dagster_home").mkdir()
        env.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
        db_url, _ = run_against_sandbox(env, tmp_path, sb.urls, enabled={"salesforce", "voyado"})
        with dg.DagsterInstance.ephemeral() as instance:
            first = materialize_all(instance)
            assert first.success
            assert metadata_of(first, "voyado/published")["dead_lettered"] == 0
            engine = StateDB(db_url).engine
            try:
                yield sb, instance, engine, first
            finally:
                engine.dispose()


def test_loyalty_reaches_salesforce_and_profile_reaches_voyado(synced) -> None:
    sb, instance, engine, first = synced
    vy_url = sb.urls["voyado"]
    # the first run already carried every balance and status to the Contacts
    contacts = pd.DataFrame(sb.records("salesforce")).set_index("Id")
    pairs = _pairs(engine, sb)
    assert len(pairs) >= 3
    first_pair = pairs.iloc[0]
    acc = requests.get(
        f"{vy_url}/api/v3/point-accounts",
        params={"contactId": first_pair["source_id_vy"]},
        headers=VY_HEADERS,
        timeout=10,
    ).json()["items"]
    assert contacts.loc[first_pair["source_id_sf"], "Loyalty_Points__c"] == acc[0]["balance"]
    assert contacts.loc[first_pair["source_id_sf"], "Membership_Status__c"] == "member"

    tiered, pointed, renamed = (pairs.iloc[i] for i in range(3))
    # a tier change on one contact, a points change (a point transaction) on another: the
    # second does not touch the contact, only the point account
    r = requests.patch(
        f"{vy_url}/api/v3/contacts/{tiered['source_id_vy']}",
        json={"loyalty": {"tier": "Platinum"}},
        headers=VY_HEADERS,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    before = contacts.loc[pointed["source_id_sf"], "Loyalty_Points__c"]
    r = requests.post(
        f"{vy_url}/api/v3/point-transactions",
        json=[{"contactId": pointed["source_id_vy"], "amount": 250, "source": "POS"}],
        headers=VY_HEADERS,
        timeout=10,
    )
    assert r.json()["results"][0]["success"], r.text
    # and a CRM-owned profile change: a Contact's last name
    _edit_contact(sb, renamed["source_id_sf"], {"LastName": "Nordmann-Lie"})
    voyado_before = {c["id"]: c for c in sb.records("voyado")}

    second = materialize_all(instance)
    assert second.success
    after = pd.DataFrame(sb.records("salesforce")).set_index("Id")
    assert after.loc[tiered["source_id_sf"], "Loyalty_Tier__c"] == "Platinum"
    assert after.loc[pointed["source_id_sf"], "Loyalty_Points__c"] == before + 250
    voyado_after = {c["id"]: c for c in sb.records("voyado")}
    assert voyado_after[renamed["source_id_vy"]]["lastName"] == "Nordmann-Lie"

    # loyalty is Voyado's: never written back to it (no payload carries it, no point
    # transaction but ours, every tier as Voyado holds it)
    sent = core.load_outbox(engine, "voyado")
    for payload in sent["payload"].dropna():
        assert not {"loyalty", "pointAccount", "contactType", "preferences"} & set(
            json.loads(payload)
        )
    assert len(sb.emulators["voyado"].point_transactions) == 1
    for cid, rec in voyado_before.items():
        assert voyado_after[cid]["loyalty"] == rec["loyalty"] or cid == tiered["source_id_vy"]
    assert voyado_after[tiered["source_id_vy"]]["loyalty"]["tier"] == "Platinum"

    # a third run on unchanged sources sends nothing either way
    third = materialize_all(instance)
    assert third.success
    for target in ("salesforce", "voyado"):
        assert metadata_of(third, f"{target}/outbound_deltas")["dagster/row_count"] == 0, target


def _set_consent(sb: Sandbox, pair: pd.Series, value: str) -> None:
    r = requests.patch(
        f"{sb.urls['voyado']}/api/v3/contacts/{pair['source_id_vy']}",
        json={"preferences": {"acceptsEmail": value}},
        headers=VY_HEADERS,
        timeout=10,
    )
    assert r.status_code == 200, r.text


def _said(sb: Sandbox, pairs: pd.DataFrame) -> pd.Series:
    """Each pair's Voyado e-mail consent as Voyado says it (Yes / No / Not set)."""
    voyado = {c["id"]: c for c in sb.records("voyado")}
    return pairs["source_id_vy"].map(
        lambda i: (voyado[i].get("preferences") or {}).get("acceptsEmail")
    )


def _edit_contact(sb: Sandbox, contact_id: str, body: dict) -> None:
    """A change made in Salesforce itself (by hand, by its own tools)."""
    r = requests.patch(
        f"{sb.urls['salesforce']}{SF}/sobjects/Contact/{contact_id}",
        json=body,
        headers=SF_HEADERS,
        timeout=10,
    )
    assert r.status_code == 204, r.text


def _unsubscribe_in_salesforce(sb: Sandbox, pair: pd.Series) -> None:
    _edit_contact(sb, pair["source_id_sf"], {"HasOptedOutOfEmail": True})


def _opted_out(sb: Sandbox, pair: pd.Series) -> bool:
    contacts = pd.DataFrame(sb.records("salesforce")).set_index("Id")
    return bool(contacts.loc[pair["source_id_sf"], "HasOptedOutOfEmail"])


def test_a_consent_voyado_owns_reaches_the_contact_both_ways(synced) -> None:
    """Voyado owns the e-mail consent: a withdrawal there sets the paired Contact's
    ``HasOptedOutOfEmail``, a consent given again lifts the opt-out custsync wrote — never
    one made in Salesforce itself (an unsubscribe, or one the CRM held before custsync
    wrote anything): those stay, field conflicts for review — and a run with nothing
    changed sends nothing (a Contact not opted out holds what "yes" writes)."""
    sb, instance, engine, _ = synced
    pairs = _pairs(engine, sb)
    contacts = pd.DataFrame(sb.records("salesforce")).set_index("Id")
    said = _said(sb, pairs)
    # the first runs carried every consent Voyado holds
    opted = contacts.loc[pairs["source_id_sf"], "HasOptedOutOfEmail"].to_numpy()
    assert (opted[(said == "No").to_numpy()]).all()
    assert not (opted[(said == "Yes").to_numpy()]).any()
    assert (said == "Yes").sum() >= 2 and (said == "No").sum() >= 1
    withdrawn = pairs[(said == "Yes").to_numpy()].iloc[0]
    # an opt-out the CRM held from the start (Voyado said no too): not custsync's
    held_before = pairs[(said == "No").to_numpy()].iloc[0]
    # an unsubscribe in Salesforce itself
    unsubscribed = pairs[(said == "Yes").to_numpy()].iloc[1]
    _unsubscribe_in_salesforce(sb, unsubscribed)
    _set_consent(sb, withdrawn, "No")
    _set_consent(sb, held_before, "Yes")
    run = materialize_all(instance)
    assert run.success
    assert _opted_out(sb, withdrawn)  # custsync's write
    assert _opted_out(sb, held_before) and _opted_out(sb, unsubscribed)  # theirs: kept
    meta = metadata_of(run, "salesforce/outbound_deltas")
    assert meta["dagster/row_count"] == 1 and meta["conflicts_new"] == 2
    # consent given again in Voyado: custsync lifts the opt-out it wrote
    _set_consent(sb, withdrawn, "Yes")
    run = materialize_all(instance)
    assert run.success
    assert not _opted_out(sb, withdrawn)
    assert _opted_out(sb, held_before) and _opted_out(sb, unsubscribed)
    again = materialize_all(instance)
    assert again.success
    assert metadata_of(again, "salesforce/outbound_deltas")["dagster/row_count"] == 0


def test_loyalty_custsync_wrote_is_cleared_when_the_member_is_deleted(synced) -> None:
    """Voyado deletes a member: the loyalty tier, points and status custsync wrote to the
    paired Contact are cleared (not left saying "Gold" for a non-member). Where the CRM's
    users changed the tier since custsync wrote it, their tier stays (only custsync's own
    values are withdrawn); a run after sends nothing."""
    sb, instance, engine, _ = synced
    pairs = _pairs(engine, sb)
    contacts = pd.DataFrame(sb.records("salesforce")).set_index("Id")
    held = contacts.loc[pairs["source_id_sf"], "Loyalty_Tier__c"].notna().to_numpy()
    gone, edited = pairs[held].iloc[-1], pairs[held].iloc[-2]
    assert pd.notna(contacts.loc[gone["source_id_sf"], "Membership_Status__c"])
    _edit_contact(sb, edited["source_id_sf"], {"Loyalty_Tier__c": "Set by hand"})
    for pair in (gone, edited):
        r = requests.delete(
            f"{sb.urls['voyado']}/api/v3/contacts/{pair['source_id_vy']}",
            headers=VY_HEADERS,
            timeout=10,
        )
        assert r.status_code in (200, 204), r.text

    run = materialize_all(instance)
    assert run.success
    after = pd.DataFrame(sb.records("salesforce")).set_index("Id")
    for fld in ("Loyalty_Tier__c", "Loyalty_Points__c", "Membership_Status__c"):
        assert pd.isna(after.loc[gone["source_id_sf"], fld]), fld
        if fld != "Loyalty_Tier__c":  # custsync's own points and status: withdrawn
            assert pd.isna(after.loc[edited["source_id_sf"], fld]), fld
    assert after.loc[edited["source_id_sf"], "Loyalty_Tier__c"] == "Set by hand"
    assert metadata_of(run, "salesforce/outbound_deltas")["values_withdrawn"] == 5
    again = materialize_all(instance)
    assert again.success
    assert metadata_of(again, "salesforce/outbound_deltas")["dagster/row_count"] == 0


def test_voyado_receives_crm_customers_keyed_by_email(synced) -> None:
    sb, instance, engine, first = synced
    meta = metadata_of(first, "voyado/outbound_deltas")
    assert meta["creates"] > 0
    golden = core.load_golden_records(engine).set_index("golden_id")
    voyado = pd.DataFrame(sb.records("voyado"))
    made = voyado[voyado["custsyncId"].notna()] if "custsyncId" in voyado else voyado.iloc[:0]
    assert len(made) == meta["creates"]
    # a created contact is keyed by its golden record's e-mail, stamped with its golden id,
    # and carries no loyalty of custsync's making
    want = made["custsyncId"].map(golden["email"])
    assert (made["email"].str.lower().to_numpy() == want.to_numpy()).all()
    # and none took an e-mail another contact holds (Voyado keys contacts by it)
    others = set(voyado.loc[voyado["custsyncId"].isna(), "email"].dropna().str.lower())
    assert not made["email"].str.lower().duplicated().any()
    assert not made["email"].str.lower().isin(others).any()
    # read back, each joins the golden record it was made for (no echo duplicates)
    n_golden = len(golden)
    second = materialize_all(instance)
    assert second.success
    assert len(core.load_golden_records(engine)) == n_golden
    idm = _idmap(engine)
    back = idm[(idm["connector"] == "voyado") & idm["source_id"].isin(made["id"])]
    assert len(back) == len(made)
    stamped = made.set_index("id")["custsyncId"]
    assert (back["golden_id"].to_numpy() == back["source_id"].map(stamped).to_numpy()).all()


def test_a_converted_lead_follows_its_converted_contact(synced) -> None:
    sb, instance, engine, _ = synced
    idm = _idmap(engine).set_index(["connector", "source_id"])["golden_id"]
    contacts = pd.DataFrame(sb.records("salesforce"))
    leads = pd.DataFrame(sb.records("salesforce", "Lead"))
    # a Lead whose golden record holds no Contact, converted into a Contact of another
    # golden record (another e-mail, another name: only the conversion ties them)
    lead_gid = leads["Id"].map(lambda i: idm.get(("salesforce", i)))
    contact_gids = set(contacts["Id"].map(lambda i: idm.get(("salesforce", i))))
    lone = leads[~lead_gid.isin(contact_gids) & lead_gid.notna()]
    assert len(lone) > 1
    lead = lone.iloc[0]
    target = contacts[contacts["Email"].fillna("") != (lead["Email"] or "")].iloc[0]
    assert idm[("salesforce", lead["Id"])] != idm[("salesforce", target["Id"])]
    n_golden = len(core.load_golden_records(engine))
    converted = sb.emulators["salesforce"].convert_lead(lead["Id"], target["Id"])
    assert converted["ConvertedContactId"] == target["Id"]
    # another Lead converted into a new Contact made from it (over the admin API)
    other = lone.iloc[1]
    r = requests.post(
        f"{sb.urls['salesforce']}/_sandbox/convert_lead", json={"lead_id": other["Id"]}, timeout=10
    )
    assert r.status_code == 200, r.text
    new_contact = r.json()["ConvertedContactId"]

    second = materialize_all(instance)
    assert second.success
    after = _idmap(engine).set_index(["connector", "source_id"])["golden_id"]
    assert after[("salesforce", lead["Id"])] == after[("salesforce", target["Id"])]
    assert after[("salesforce", other["Id"])] == after[("salesforce", new_contact)]
    assert after[("salesforce", other["Id"])] == idm[("salesforce", other["Id"])]
    # the first Lead's golden record was merged into the Contact's, the new Contact joined
    # the second Lead's: no duplicate left, and custsync created no Contact for either
    assert len(core.load_golden_records(engine)) == n_golden - 1
    assert len(sb.records("salesforce")) == len(contacts) + 1  # the conversion's own


def test_a_withdrawal_on_a_duplicate_contact_voyado_deleted_stays(dagster_env, tmp_path) -> None:
    """Over sockets: a Voyado contact said yes to e-mail long ago; a duplicate of it (the
    same person and mobile) says no today — the golden record says no. Voyado's duplicate
    clean-up deletes the duplicate: the golden record still says no, with today's time."""
    import dagster as dg
    import requests

    from custsync_pipeline.sandbox.server import CREDENTIALS, Sandbox
    from custsync_pipeline.store import core
    from custsync_pipeline.store.db import StateDB
    from custsync_pipeline_tests.e2e import materialize_all, run_against_sandbox

    headers = {"apikey": CREDENTIALS["VOYADO_API_KEY"], "Content-Type": "application/json"}
    with Sandbox(seed=5, people=40, base_port=0, systems=["salesforce", "voyado"]) as sb:
        db_url, _ = run_against_sandbox(dagster_env, tmp_path, sb.urls, {"salesforce", "voyado"})
        base = f"{sb.urls['voyado']}/api/v3/contacts"
        contacts = sb.records("voyado")
        a = next(
            c
            for c in contacts
            if (c.get("preferences") or {}).get("acceptsEmail") == "Yes"
            and c.get("mobilePhone")
            and c.get("firstName")
            and c.get("lastName")
        )
        dup = requests.post(
            base,
            json={"firstName": a["firstName"], "lastName": a["lastName"],
                  "mobilePhone": a["mobilePhone"], "email": "dup.k9x@example.org",
                  "countryCode": a.get("countryCode") or "SE",
                  "preferences": {"acceptsEmail": "No"}},
            headers=headers, timeout=10,
        )  # fmt: skip
        assert dup.status_code in (200, 201), dup.text
        with dg.DagsterInstance.ephemeral() as instance:
            for _ in range(2):
                assert materialize_all(instance).success
            engine = StateDB(db_url).engine
            ids = pd.read_sql("select connector, source_id, golden_id from identity_map", engine)
            at = ids.set_index(["connector", "source_id"])["golden_id"]
            gid = at[("voyado", str(a["id"]))]
            assert at[("voyado", str(dup.json()["id"]))] == gid  # one person
            before = core.load_golden_records(engine, [gid]).iloc[0]
            assert before["email_consent"] == "no"
            r = requests.delete(f"{base}/{dup.json()['id']}", headers=headers, timeout=10)
            assert r.status_code in (200, 204), r.text
            for _ in range(2):
                assert materialize_all(instance).success
            after = core.load_golden_records(engine, [gid]).iloc[0]
            engine.dispose()
        assert after["email_consent"] == "no"
        assert after["email_consent_at"] == before["email_consent_at"]


def test_an_opt_out_under_review_is_one_conflict(dagster_env, tmp_path) -> None:
    """``conflicts: {email_consent: review}``: an unsubscribe in Salesforce is that review's
    conflict — once (the opt-out rule does not add a second: the publish failed on it)."""
    import yaml

    from custsync_pipeline.store.conflicts import load_field_conflicts

    with Sandbox(seed=5, people=40, base_port=0, systems=["salesforce", "voyado"]) as sb:
        db_url, cfg = run_against_sandbox(dagster_env, tmp_path, sb.urls, {"salesforce", "voyado"})
        data = yaml.safe_load(cfg.read_text())
        for t in data["publish"]:
            if t["connector"] == "salesforce":
                t["conflicts"] = {"email_consent": "review"}
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        with dg.DagsterInstance.ephemeral() as instance:
            assert materialize_all(instance).success
            engine = StateDB(db_url).engine
            pairs = _pairs(engine, sb)
            pair = pairs[(_said(sb, pairs) == "Yes").to_numpy()].iloc[0]
            _unsubscribe_in_salesforce(sb, pair)
            run = materialize_all(instance)
            assert run.success
            open_ = load_field_conflicts(engine, "salesforce")
            mine = open_[open_["source_id"] == pair["source_id_sf"]]
            assert mine["field"].tolist() == ["email_consent"]
            assert _opted_out(sb, pair)
            engine.dispose()
