"""``publish[].key_field`` (Voyado contacts are keyed by e-mail): creates the target could
not make are held back, never sent to fail or to overwrite someone else's record; an update
never gives a record a value another of the target's records holds (over sockets: two
Voyado contacts of one person after a merge keep an e-mail each)."""

from __future__ import annotations

import pandas as pd

from custsync_pipeline.domain.deltas import hold_taken_keys, key_clashes


def _deltas(*gids: str, update: str | None = None) -> pd.DataFrame:
    keys = [f"new:{g}" for g in gids] + ([update] if update else [])
    golden_ids = [*gids, "G_upd"] if update else list(gids)
    return pd.DataFrame({"entity_key": keys, "golden_id": golden_ids, "op": "upsert"})


GOLDEN = pd.DataFrame(
    {
        "golden_id": ["G1", "G2", "G3", "G4", "G5", "G_upd"],
        "email": ["anna@x.se", "family@x.se", "FAMILY@x.se ", None, "taken@x.se", "u@x.se"],
    }
)
MEMBERS = pd.DataFrame({"golden_id": ["G9", "G_upd"], "email": [" Taken@X.se", "u@x.se"]})


def test_creates_with_a_taken_or_shared_key_are_held_back() -> None:
    kept, held = hold_taken_keys(
        _deltas("G1", "G2", "G3", "G4", "G5", update="C1"), GOLDEN, MEMBERS, "email"
    )
    # G2 and G3 share a family e-mail (case and spacing folded): neither is created; G5's
    # e-mail another contact holds; G4 has none (required_fields decides about it); the
    # update of an existing member is never held back
    assert held == 3
    assert kept["golden_id"].tolist() == ["G1", "G4", "G_upd"]


def test_no_key_field_holds_nothing() -> None:
    deltas = _deltas("G2", "G3")
    kept, held = hold_taken_keys(deltas, GOLDEN, MEMBERS, None)
    assert held == 0 and kept.equals(deltas)


def test_an_update_never_gives_a_key_value_another_record_of_the_target_holds() -> None:
    """Voyado is keyed by e-mail. G1 has two contacts after a merge: c1 holds the golden
    e-mail, c2 its own — c2 keeps it. G2's two contacts hold neither value: only the first
    by id gets it. G3's contact takes its golden value (nobody holds it): a plain update."""
    golden = pd.DataFrame(
        {"golden_id": ["G1", "G2", "G3"],
         "email": ["anna@example.se", "Bo@Example.se ", "cid@example.se"]}
    )  # fmt: skip
    members = pd.DataFrame(
        {"golden_id": ["G1", "G1", "G2", "G2", "G3"],
         "source_id": ["c1", "c2", "d2", "d1", "e1"],
         "email": ["ANNA@example.se", "anna.old@example.se", "x@example.se", None,
                   "old@example.se"]}
    )  # fmt: skip
    clashes = key_clashes(golden, members, "email")
    assert sorted(clashes["source_id"]) == ["c2", "d2"]
    assert set(clashes["field"]) == {"email"}
    assert key_clashes(golden, members, None).empty


def test_two_voyado_contacts_of_one_person_after_a_merge_keep_an_email_each(
    dagster_env, tmp_path
) -> None:
    import dagster as dg
    import requests

    from custsync_pipeline.sandbox.server import Sandbox
    from custsync_pipeline.store.db import StateDB
    from custsync_pipeline_tests.e2e import materialize_all, metadata_of, run_against_sandbox
    from custsync_pipeline_tests.sandbox_fixtures import SF_HEADERS

    with Sandbox(seed=5, people=60, base_port=0, systems=["salesforce", "voyado"]) as sb:
        db_url, _ = run_against_sandbox(dagster_env, tmp_path, sb.urls, {"salesforce", "voyado"})
        base = f"{sb.urls['salesforce']}/services/data/v60.0/sobjects/Contact"
        with dg.DagsterInstance.ephemeral() as instance:
            assert materialize_all(instance).success
            engine = StateDB(db_url).engine
            recs = pd.read_sql(
                "select m.connector, m.source_id, m.golden_id, s.email, s.first_name, "
                "s.last_name, s.custsync_id from identity_map m join source_records s "
                "using (connector, source_id)",
                engine,
            )
            n = recs.groupby("golden_id")["connector"].agg(list)
            pairs = n[n.map(lambda c: sorted(c) == ["salesforce", "voyado"])].index
            sf = recs[recs["golden_id"].isin(pairs) & (recs["connector"] == "salesforce")]
            vy = recs[recs["golden_id"].isin(pairs) & (recs["connector"] == "voyado")]
            both = sf.merge(vy, on="golden_id", suffixes=("_sf", "_vy"))
            both = both[
                both["custsync_id_vy"].isna()
                & both["email_sf"].notna()
                & (both["email_sf"].str.casefold() == both["email_vy"].str.casefold())
            ]
            person = both.iloc[0]
            # the same person entered again in Salesforce with another e-mail: a golden
            # record of its own, created in Voyado
            new = requests.post(
                base,
                json={"FirstName": person["first_name_sf"], "LastName": person["last_name_sf"],
                      "Email": "second.address.k7@example.org", "MailingCountry": "SE"},
                headers=SF_HEADERS, timeout=10,
            )  # fmt: skip
            assert new.status_code == 201, new.text
            for _ in range(2):
                assert materialize_all(instance).success
            # the duplicate Contact is given the person's e-mail: the two merge, and the
            # person has two Voyado contacts
            r = requests.patch(
                f"{base}/{new.json()['id']}",
                json={"Email": person["email_sf"]},
                headers=SF_HEADERS,
                timeout=10,
            )
            assert r.status_code == 204, r.text
            kept = 0
            for _ in range(3):
                result = materialize_all(instance)
                assert result.success
                kept += metadata_of(result, "voyado/outbound_deltas")["key_kept"]
            ids = pd.read_sql("select connector, source_id, golden_id from identity_map", engine)
            engine.dispose()
        at = ids.set_index(["connector", "source_id"])["golden_id"]
        gid = at[("salesforce", new.json()["id"])]
        assert gid == at[("salesforce", person["source_id_sf"])]  # merged
        assert (ids[ids["golden_id"] == gid]["connector"] == "voyado").sum() == 2
        contacts = pd.DataFrame(sb.records("voyado"))
        emails = contacts["email"].dropna().astype(str).str.strip().str.casefold()
        assert not emails.duplicated().any(), emails[emails.duplicated(keep=False)].tolist()
        assert kept >= 1
