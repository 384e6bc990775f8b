"""A record deleted in a target is never re-created there (issue 10, item 1), over real
sockets: Salesforce Contacts deleted by hand after a sync stay deleted, although their
golden records live on through their Voucherify members."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import requests

from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import materialize_all, metadata_of, write_sync_config
from custsync_pipeline_tests.sandbox_fixtures import SF_HEADERS


def test_a_contact_deleted_in_salesforce_is_not_created_again(dagster_env, tmp_path: Path):
    db_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    dagster_env.setenv("CUSTSYNC_STATE_DB_URL", db_url)
    with Sandbox(seed=5, people=60, base_port=0) as sb:
        cfg = write_sync_config(
            tmp_path / "sync.yaml", sb.urls, db_url, enabled={"salesforce", "voucherify"}
        )
        dagster_env.setenv("CUSTSYNC_CONFIG", str(cfg))
        with dg.DagsterInstance.ephemeral() as instance:
            assert materialize_all(instance).success
            engine = StateDB(db_url).engine
            ids = pd.read_sql("select connector, source_id, golden_id from identity_map", engine)
            golden = core.load_golden_records(engine).set_index("golden_id")
            sf = ids[ids["connector"] == "salesforce"]
            vf = set(ids.loc[ids["connector"] == "voucherify", "golden_id"])
            contacts = pd.DataFrame(sb.records("salesforce")).set_index("Id")
            # Contacts that are people with a last name, one per golden record that also
            # lives in Voucherify (so the golden record outlives the Contact)
            ok = sf[
                sf["golden_id"].isin(vf)
                & sf["source_id"].isin(contacts.index)
                & sf["golden_id"].map(golden["kind"]).eq("person")
                & sf["golden_id"].map(golden["last_name"]).notna()
            ].drop_duplicates("golden_id")
            ok = ok[~ok["golden_id"].duplicated(keep=False)]
            picked = ok.head(3)
            assert len(picked) == 3
            base = f"{sb.urls['salesforce']}/services/data/v60.0/sobjects/Contact"
            for contact_id in picked["source_id"]:
                r = requests.delete(f"{base}/{contact_id}", headers=SF_HEADERS, timeout=10)
                assert r.status_code == 204, r.text

            for _ in range(2):  # and stays so run after run
                again = materialize_all(instance)
                assert again.success
                # (a golden record that lost its Salesforce-only last name is held back anyway)
                assert metadata_of(again, "salesforce/outbound_deltas")["not_recreated"] >= 2
            after = pd.DataFrame(sb.records("salesforce"))
            held = set(after["Custsync_Id__c"].dropna())
            assert not held & set(picked["golden_id"]), "re-created in the system that deleted it"
            alive = set(core.load_golden_records(engine)["golden_id"])
            assert len(set(picked["golden_id"]) & alive) >= 2  # they live on, in Voucherify
            engine.dispose()
