"""Drift is corrected whatever the ledger says (issue 10, item 2), over real sockets.

A Salesforce Contact whose ``Loyalty_Tier__c`` (owned by Voyado) custsync updated and the
API acknowledged is changed by hand afterwards, back to a value the ledger's hash does not
describe. The next run reads the Contact, sees it differ from the golden record, and writes
the golden value again, although the ledger holds an acknowledgement of that same payload.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import requests

from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import materialize_all, metadata_of, run_against_sandbox
from custsync_pipeline_tests.sandbox_fixtures import SF_HEADERS


def _contacts(sb: Sandbox) -> pd.DataFrame:
    return pd.DataFrame(sb.records("salesforce")).set_index("Id")


def test_a_hand_edit_of_an_acknowledged_field_is_corrected(dagster_env, tmp_path: Path):
    with Sandbox(seed=11, people=60, base_port=0) as sb:
        db_url, _ = run_against_sandbox(
            dagster_env, tmp_path, sb.urls, enabled={"salesforce", "voyado"}
        )
        with dg.DagsterInstance.ephemeral() as instance:
            assert materialize_all(instance).success
            engine = StateDB(db_url).engine
            acked = core.load_outbox(engine, "salesforce", ["acked"])
            golden = core.load_golden_records(engine).set_index("golden_id")
            # Contacts custsync updated (not created) whose golden record has a tier
            updated = acked[~acked["entity_key"].str.startswith("new:")]
            updated = updated[updated["golden_id"].map(golden["loyalty_tier"]).notna()]
            assert len(updated) >= 2, "the seed gives Contacts whose tier Voyado sets"
            picked = updated.head(2)
            before = _contacts(sb)
            for contact_id, gid in zip(picked["entity_key"], picked["golden_id"], strict=True):
                tier = golden.loc[gid, "loyalty_tier"]
                assert before.loc[contact_id, "Loyalty_Tier__c"] == tier  # the update landed
                hand = "Gold" if tier != "Gold" else "Bronze"
                url = f"{sb.urls['salesforce']}/services/data/v60.0/sobjects/Contact/{contact_id}"
                r = requests.patch(
                    url, json={"Loyalty_Tier__c": hand}, headers=SF_HEADERS, timeout=10
                )
                assert r.status_code == 204, r.text
            assert (
                _contacts(sb).loc[picked["entity_key"], "Loyalty_Tier__c"]
                != picked["golden_id"].map(golden["loyalty_tier"]).to_numpy()
            ).all()

            second = materialize_all(instance)
            assert second.success
            assert metadata_of(second, "salesforce/published")["published"] >= 2
            after = _contacts(sb)
            want = picked["golden_id"].map(golden["loyalty_tier"]).to_numpy()
            assert (after.loc[picked["entity_key"], "Loyalty_Tier__c"].to_numpy() == want).all()

            # and once corrected, a third run sends nothing to those Contacts
            third = materialize_all(instance)
            assert third.success
            box = core.load_outbox(engine, "salesforce").set_index("entity_key")
            assert (box.loc[picked["entity_key"], "status"] == "acked").all()
            assert metadata_of(third, "salesforce/outbound_deltas")["dagster/row_count"] == 0
            engine.dispose()
