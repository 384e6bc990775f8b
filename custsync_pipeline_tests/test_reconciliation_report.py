"""The per-target ``reconciliation_report``, the per-field conflict policy and
``custsync status`` (issue 10, items 2 and the "must show" status line), over real sockets.

- the report's counts are numeric metadata: a first run finds golden records missing in
  each target and creates them; a second finds them in sync, nothing drifted;
- ``publish[].conflicts: {loyalty_tier: review}``: a hand edit of ``Loyalty_Tier__c`` in
  Salesforce (Voyado owns the tier) is not overwritten; it waits in the review queue
  (``field_conflicts``, ``custsync conflicts``, masked) and in the report, and a write to
  the Contact for another reason never carries the tier;
- ``custsync status <golden id>``: per target the last operation, when, and its result.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import requests
import yaml

from custsync_pipeline.cli import main
from custsync_pipeline.config import ConfigError, load_sync_config
from custsync_pipeline.domain.conflicts import field_conflicts
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import conflicts as conflict_store
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import materialize_all, metadata_of, run_against_sandbox
from custsync_pipeline_tests.sandbox_fixtures import SF_HEADERS

COUNTS = ("in_sync", "drifted", "corrected", "missing", "created", "extra", "pending_deletes",
          "deletes_due", "dead_letters", "conflicts_open")  # fmt: skip


def _contacts(sb: Sandbox) -> pd.DataFrame:
    return pd.DataFrame(sb.records("salesforce")).set_index("Id")


def test_report_counts_conflict_review_and_status(dagster_env, tmp_path: Path, capsys):
    with Sandbox(seed=11, people=60, base_port=0) as sb:
        db_url, cfg = run_against_sandbox(
            dagster_env, tmp_path, sb.urls, enabled={"salesforce", "voyado", "voucherify"}
        )
        data = yaml.safe_load(cfg.read_text())
        for t in data["publish"]:
            if t["connector"] == "salesforce":
                t["conflicts"] = {"loyalty_tier": "review", "email": "overwrite"}
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        with dg.DagsterInstance.ephemeral() as instance:
            first = materialize_all(instance)
            assert first.success
            for t in ("salesforce", "voucherify"):
                report = metadata_of(first, f"{t}/reconciliation_report")
                assert set(COUNTS) <= set(report), (t, report)
                assert all(isinstance(report[k], int) for k in COUNTS), report
                assert report["missing"] > 0 and report["created"] == report["missing"], report
                assert report["dead_letters"] == 0
            engine = StateDB(db_url).engine
            golden = core.load_golden_records(engine).set_index("golden_id")
            acked = core.load_outbox(engine, "salesforce", ["acked"])
            updated = acked[~acked["entity_key"].str.startswith("new:")]
            updated = updated[updated["golden_id"].map(golden["loyalty_tier"]).notna()]
            assert len(updated) >= 2
            picked = updated.head(2)

            second = materialize_all(instance)
            assert second.success
            report = metadata_of(second, "salesforce/reconciliation_report")
            assert report["drifted"] == 0 and report["missing"] == 0, report
            assert report["in_sync"] > 0 and report["extra"] == 0, report

            # a hand edit of the tier in Salesforce, and of the e-mail of the same Contact
            hand = {}
            base = f"{sb.urls['salesforce']}/services/data/v60.0/sobjects/Contact"
            for contact_id, gid in zip(picked["entity_key"], picked["golden_id"], strict=True):
                tier = golden.loc[gid, "loyalty_tier"]
                hand[contact_id] = "Gold" if tier != "Gold" else "Bronze"
                body = {"Loyalty_Tier__c": hand[contact_id]}
                r = requests.patch(
                    f"{base}/{contact_id}", json=body, headers=SF_HEADERS, timeout=10
                )
                assert r.status_code == 204, r.text
            one = picked["entity_key"].iloc[0]
            r = requests.patch(
                f"{base}/{one}", json={"Email": "hand.edit@example.org"}, headers=SF_HEADERS,
                timeout=10,
            )  # fmt: skip
            assert r.status_code == 204, r.text

            third = materialize_all(instance)
            assert third.success
            after = _contacts(sb)
            for contact_id, tier in hand.items():  # under review: the target's value stays
                assert after.loc[contact_id, "Loyalty_Tier__c"] == tier
            # the e-mail (overwrite) was corrected by a write that did not carry the tier
            assert after.loc[one, "Email"] == golden.loc[picked["golden_id"].iloc[0], "email"]
            open_rows = conflict_store.load_field_conflicts(engine, "salesforce")
            assert set(open_rows["source_id"]) == set(hand)
            assert set(open_rows["field"]) == {"loyalty_tier"}
            deltas = metadata_of(third, "salesforce/outbound_deltas")
            assert deltas["conflicts_open"] == 2 and deltas["conflicts_new"] == 2
            report = metadata_of(third, "salesforce/reconciliation_report")
            assert report["conflicts_open"] == 2 and report["corrected"] >= 1, report

            # the review queue shows both sides, masked
            capsys.readouterr()
            assert main(["conflicts", "--db", db_url]) == 0
            out = capsys.readouterr().out
            assert "field conflicts" in out and "loyalty_tier" in out
            assert "hand.edit@example.org" not in out

            # a fourth run: still open, not new, nothing sent for them
            fourth = materialize_all(instance)
            assert fourth.success
            deltas = metadata_of(fourth, "salesforce/outbound_deltas")
            assert deltas["conflicts_open"] == 2 and deltas["conflicts_new"] == 0
            assert deltas["dagster/row_count"] == 0

            # custsync status: per target, the last operation, when, and its result
            gid = picked["golden_id"].iloc[0]
            capsys.readouterr()
            assert main(["status", gid, "--db", db_url, "--config", str(cfg)]) == 0
            out = capsys.readouterr().out
            assert f"golden id {gid}: live" in out
            lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
            assert "salesforce" in lines and "voucherify" in lines, out
            assert "upsert" in lines["salesforce"] and "acked" in lines["salesforce"]
            assert "hand.edit" not in out and "@" not in out
            assert main(["status", "Gnope", "--db", db_url]) == 1
            engine.dispose()


def test_field_conflicts_are_differences_on_review_fields_only():
    golden = pd.DataFrame(
        {"golden_id": ["g1", "g2", "g3"], "loyalty_tier": ["Bronze", "Gold", None]}
    )
    members = pd.DataFrame(
        {
            "golden_id": ["g1", "g2", "g3", "g1"],
            "source_id": ["a", "b", "c", "d"],
            "loyalty_tier": ["Gold", "Gold", "Silver", None],
        }
    )
    found = field_conflicts(golden, members, ["loyalty_tier"])
    # g1/a differs; g2/b agrees; g3 has no golden value (nothing is sent); d is empty there
    assert found[["source_id", "target_value", "golden_value"]].values.tolist() == [
        ["a", "Gold", "Bronze"]
    ]


def test_conflicts_config_names_a_sent_field(tmp_path: Path):
    from custsync_pipeline.config import DEFAULT_CONFIG_PATH

    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["publish"][0]["conflicts"] = {"birth_date": "review"}
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"conflicts.*birth_date"):
        load_sync_config(path)
    data["publish"][0]["conflicts"] = {"email": "ask"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"conflicts"):
        load_sync_config(path)
