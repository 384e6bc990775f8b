"""A record deleted in a target between extraction and publish (issue 10, items 1 and 3),
over real sockets: the update that finds it gone is not a failure to retry or dead-letter;
the member leaves as a delete feed would say, the publish step succeeds, and the golden
record is never created there again."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import requests
import yaml

from custsync_pipeline.definitions import defs
from custsync_pipeline.defs.publish.assets import published_key
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import metadata_of, run_against_sandbox
from custsync_pipeline_tests.sandbox_fixtures import SF_HEADERS

VF_HEADERS = {"X-App-Id": "sandbox-app-id", "X-App-Token": "sandbox-app-token"}
TARGETS = ("salesforce", "voucherify")


def _delete_there(sb: Sandbox, target: str, record_id: str) -> None:
    if target == "salesforce":
        url = f"{sb.urls['salesforce']}/services/data/v60.0/sobjects/Contact/{record_id}"
        r = requests.delete(url, headers=SF_HEADERS, timeout=10)
    else:
        url = f"{sb.urls['voucherify']}/v1/customers/{record_id}"
        r = requests.delete(url, headers=VF_HEADERS, timeout=10)
    assert r.status_code == 204, r.text


def test_an_update_of_a_record_deleted_since_extraction_retires_the_member(
    dagster_env, tmp_path: Path
):
    with Sandbox(seed=5, people=80, base_port=0) as sb:
        db_url, _ = run_against_sandbox(dagster_env, tmp_path, sb.urls, enabled=set(TARGETS))
        job = defs().resolve_job_def("sync_job")
        everything = list(job.asset_layer.executable_asset_keys)
        publish = [published_key(t) for t in TARGETS]
        with dg.DagsterInstance.ephemeral() as instance:
            # extract, resolve, merge and queue deltas; publish nothing yet
            before = job.execute_in_process(
                instance=instance, asset_selection=[k for k in everything if k not in publish]
            )
            assert before.success
            engine = StateDB(db_url).engine
            picked: dict[str, pd.DataFrame] = {}
            for target in TARGETS:
                box = core.load_outbox(engine, target, statuses=core.QUEUED)
                updates = box[box["target_id"].notna() & box["op"].eq("upsert")]
                updates = updates.drop_duplicates("golden_id").head(2)
                assert len(updates) == 2, f"{target}: no queued updates to race"
                for record_id in updates["target_id"]:
                    _delete_there(sb, target, str(record_id))  # someone deletes it there
                picked[target] = updates

            sent = job.execute_in_process(instance=instance, asset_selection=publish)
            assert sent.success, "an update that found its record gone failed the publish"
            for target in TARGETS:
                meta = metadata_of(sent, f"{target}/published")
                assert meta["gone_there"] == 2
                assert meta["dead_lettered"] == 0
                box = core.load_outbox(engine, target).set_index("entity_key")
                keys = picked[target]["entity_key"]
                assert (box.loc[keys, "status"] == "gone").all()
                # the member left the state DB, as a delete feed would have said
                held = core.source_record_ids(engine, target)
                assert not held & set(picked[target]["target_id"].astype(str))
            events = pd.read_sql(
                "select golden_id, new_value, connector from golden_events where field = 'delete'",
                engine,
            )
            written = events[events["new_value"] == "gone when written"]
            for target in TARGETS:
                assert set(picked[target]["golden_id"]) <= set(
                    written.loc[written["connector"] == target, "golden_id"]
                )

            for _ in range(2):  # never created again in the system that deleted it
                again = job.execute_in_process(
                    instance=instance, tags={"custsync/full_snapshot": "true"}
                )
                assert again.success
            sf = pd.DataFrame(sb.records("salesforce"))
            vf = pd.DataFrame(sb.records("voucherify"))
            assert not set(sf["Custsync_Id__c"].dropna()) & set(picked["salesforce"]["golden_id"])
            assert not set(vf["source_id"].dropna()) & set(picked["voucherify"]["golden_id"])
            engine.dispose()


def test_every_writable_connector_reports_an_update_of_a_deleted_record_as_gone(tmp_path: Path):
    """Each target's own way of saying "no such record" to an update (Salesforce's
    ENTITY_IS_DELETED, Voyado's ContactNotFound, a 404 from Voucherify and Exact Online) is
    a ``gone`` result; a create or a transient failure never is."""
    from custsync_pipeline.config import load_sync_config
    from custsync_pipeline.connectors import build_connector
    from custsync_pipeline.connectors.base import WriteOp
    from custsync_pipeline_tests.e2e import SANDBOX_SECRETS, write_sync_config

    systems = ("salesforce", "voucherify", "voyado", "exact")
    with Sandbox(seed=5, people=20, base_port=0, systems=systems) as sb:
        path = write_sync_config(tmp_path / "sync.yaml", sb.urls, "sqlite://", set(systems))
        data = yaml.safe_load(path.read_text())
        for name in systems:  # a 503 costs milliseconds of backoff, not seconds
            opts = data["connectors"][name].setdefault("options", {})
            opts["http"] = {
                "backoff_factor_s": 0.01,
                "backoff_jitter_s": 0.0,
                "backoff_max_s": 0.05,
            }
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        cfg = load_sync_config(path)
        for name in systems:
            connector = build_connector(name, cfg.connectors[name], SANDBOX_SECRETS)
            held = connector.to_canonical(connector.read().records)
            victim = str(held["source_id"].iloc[0])
            [deleted] = connector.write([WriteOp("G1", victim, {}, op="delete")])
            assert deleted.ok, (name, deleted)
            payload = {"salesforce": {"FirstName": "Ann"}, "voucherify": {"name": "Ann Berg"}}
            payload |= {"voyado": {"firstName": "Ann"}, "exact": {"Name": "Ann Berg"}}
            [result] = connector.write([WriteOp("G1", victim, payload[name])])
            assert not result.ok and result.gone, (name, result)
            sb.set_faults(name, rate_5xx=1.0)
            [failed] = connector.write(
                [WriteOp("G2", str(held["source_id"].iloc[1]), payload[name])]
            )
            sb.set_faults(name, rate_5xx=0.0)
            assert not failed.ok and not failed.gone, (name, failed)
