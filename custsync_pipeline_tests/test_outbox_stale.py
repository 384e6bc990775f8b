"""An outage of a target never makes duplicates (issue 10, item 3), over real sockets.

Run 1: Voucherify is down. Every golden record is queued for it as a create; the first
writes all fail, so the rest stay queued unsent, and the run says so: its publish step
fails naming the target. Run 2: Voucherify is
back and its customers are members; the stale creates of run 1 are superseded by the new
computation, not sent beside it, so no golden record gets a second Voucherify customer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml

from custsync_pipeline import cli_run
from custsync_pipeline.defs.publish.assets import PUBLISH_PROBE
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import write_sync_config
from custsync_pipeline_tests.sandbox_fixtures import closed_port


def _config(path: Path, sb: Sandbox, db_url: str, voucherify_url: str) -> None:
    write_sync_config(path, sb.urls, db_url, enabled={"salesforce", "voucherify"})
    data = yaml.safe_load(path.read_text())
    data["connectors"]["voucherify"]["base_url"] = voucherify_url
    # no long backoff against a port nobody listens on (keeps the test fast)
    http = {"max_retries": 0, "backoff_factor_s": 0.01, "backoff_jitter_s": 0.0}
    data["connectors"]["voucherify"].setdefault("options", {})["http"] = http
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_an_outage_queues_no_duplicates_and_fails_the_publish(dagster_env, tmp_path, capsys):
    db_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    dagster_env.setenv("CUSTSYNC_STATE_DB_URL", db_url)
    cfg = tmp_path / "sync.yaml"
    dagster_env.setenv("CUSTSYNC_CONFIG", str(cfg))
    with Sandbox(seed=5, people=60, base_port=0) as sb:
        before = len(sb.records("voucherify"))
        _config(cfg, sb, db_url, f"http://127.0.0.1:{closed_port()}")
        assert cli_run.run(argparse.Namespace()) == 1
        out = capsys.readouterr().out
        # the publish step failed and says which target and why, without personal data
        line = next(x for x in out.splitlines() if x.startswith("  voucherify: voucherify__pub"))
        assert "writes failed" in line and "@" not in line
        assert "resolve_and_publish_job: FAILED" in out

        engine = StateDB(db_url).engine
        stale = core.load_outbox(engine, "voucherify", core.QUEUED)
        assert len(stale) > 0 and stale["entity_key"].str.startswith("new:").all()
        assert stale["golden_version"].notna().all()
        # the first writes all failed: the rest were not each sent against the outage
        sent = stale[stale["attempts"] > 0]
        assert len(sent) == PUBLISH_PROBE < len(stale)
        assert (sent["status"] == "failed").all()
        assert (stale.loc[stale["attempts"] == 0, "status"] == "pending").all()
        assert f"{len(stale) - PUBLISH_PROBE} not sent" in line and "looks down" in line

        _config(cfg, sb, db_url, sb.urls["voucherify"])  # back up
        cli_run.run(argparse.Namespace())
        capsys.readouterr()

        box = core.load_outbox(engine, "voucherify")
        gone = box[box["entity_key"].isin(stale["entity_key"]) & (box["status"] == "superseded")]
        assert len(gone) > 0, "stale creates of golden records Voucherify holds are superseded"
        ids = pd.read_sql("select connector, source_id, golden_id from identity_map", engine)
        engine.dispose()

        vc = pd.DataFrame(sb.records("voucherify"))
        created = vc[vc["source_id"].isin(stale["golden_id"])]
        members = ids.loc[
            (ids["connector"] == "voucherify") & ~ids["source_id"].isin(created["id"])
        ]
        # no golden record holds a customer of its own beside one we created for it
        assert not set(created["source_id"]) & set(members["golden_id"])
        assert created["source_id"].is_unique
        assert len(vc) == before + len(created)
