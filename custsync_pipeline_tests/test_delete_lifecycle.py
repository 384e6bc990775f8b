"""Deletes as events, archive mode over sockets, and a publish killed with SIGKILL
(issue 10, items 1 and 3), against the sandbox over real sockets.

- Salesforce is the source of truth; Voucherify's ``delete_mode`` is ``archive``: a Contact
  deleted in Salesforce leaves its golden record pending for the grace period, then its
  Voucherify customer gets the archive payload (it stays, marked), never a delete; each
  step (pending, due, queued archive, archived) is a ``delete`` event in golden history,
  shown by ``custsync history``.
- ``custsync run`` in a subprocess is killed with SIGKILL while Voucherify is taking its
  creates (sent, not yet recorded); a second ``custsync run`` takes over the state lease
  once it expires, resumes, and the sandbox holds one customer per golden record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import yaml

from custsync_pipeline.cli import main
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import (
    SANDBOX_SECRETS,
    delete_salesforce_contacts,
    materialize_all,
    metadata_of,
    run_against_sandbox,
)

ARCHIVE = {"metadata": {"custsync_archived": "yes"}}


def _delete_steps(engine, golden_id: str) -> list[tuple[str, str]]:
    ev = pd.read_sql(
        "select new_value, connector from golden_events where field = 'delete' "
        f"and golden_id = '{golden_id}' order by id",
        engine,
    )
    return list(zip(ev["new_value"], ev["connector"], strict=True))


def test_archive_mode_and_delete_events(dagster_env, tmp_path: Path, capsys):
    with Sandbox(seed=5, people=60, base_port=0) as sb:
        db_url, cfg = run_against_sandbox(
            dagster_env, tmp_path, sb.urls, enabled={"salesforce", "voucherify"}
        )
        data = yaml.safe_load(cfg.read_text())
        for t in data["publish"]:
            if t["connector"] == "voucherify":
                t["delete_mode"] = "archive"
                t["archive_payload"] = ARCHIVE
        data["deletes"] = {"grace_runs": 2}
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        with dg.DagsterInstance.ephemeral() as instance:
            assert materialize_all(instance).success
            engine = StateDB(db_url).engine
            pairs = delete_salesforce_contacts(sb, engine, 2)

            assert materialize_all(instance).success  # pending: found gone once
            gid = pairs["golden_id"].iloc[0]
            gone = [("pending", "salesforce"), ("gone from target", "salesforce")]
            assert _delete_steps(engine, gid) == gone

            third = materialize_all(instance)  # due: archived in Voucherify
            assert third.success
            assert metadata_of(third, "voucherify/outbound_deltas")["deletes"] == 2
            vc = pd.DataFrame(sb.records("voucherify")).set_index("id")
            for cid in pairs["source_id_vf"]:  # still there, marked archived
                assert vc.loc[cid, "metadata"]["custsync_archived"] == "yes"
            steps = _delete_steps(engine, gid)
            assert steps == [
                *gone,
                ("due", "salesforce"),
                ("queued archive", "voucherify"),
                ("archived", "voucherify"),
            ], steps
            # archived (acknowledged): no longer due, though the records stay there
            report = metadata_of(third, "voucherify/reconciliation_report")
            assert report["deletes_due"] == 0, report

            fourth = materialize_all(instance)  # nothing sent again for them
            assert fourth.success
            assert metadata_of(fourth, "voucherify/outbound_deltas")["deletes"] == 0
            assert metadata_of(fourth, "voucherify/reconciliation_report")["deletes_due"] == 0
            assert len(_delete_steps(engine, gid)) == 5

            capsys.readouterr()
            main(["history", gid, "--db", db_url])
            out = capsys.readouterr().out
            assert "delete: set archived  (from voucherify)" in out, out
            engine.dispose()


def _custsync_run(env: dict[str, str], cfg: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "custsync_pipeline.cli", "run", "--config", str(cfg)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_sigkill_mid_publish_resumes_without_duplicates(tmp_path: Path):
    with Sandbox(seed=7, people=150, base_port=0) as sb:
        db_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
        from custsync_pipeline_tests.e2e import write_sync_config

        cfg = write_sync_config(
            tmp_path / "sync.yaml", sb.urls, db_url, enabled={"salesforce", "voucherify"}
        )
        data = yaml.safe_load(cfg.read_text())
        data["runs"] = {"lease_ttl_s": 6, "lease_wait_s": 120}
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        env = {**os.environ, **SANDBOX_SECRETS, "CUSTSYNC_STATE_DB_URL": db_url}
        env["DAGSTER_HOME"] = str(tmp_path / "home")
        (tmp_path / "home").mkdir()
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
        before = len(sb.records("voucherify"))
        # Voucherify answers slowly: the kill lands among its creates
        sb.set_faults("voucherify", slow_rate=1.0, slow_seconds=0.15, seed=3)
        proc = _custsync_run(env, cfg, tmp_path / "first.log")
        try:
            deadline = time.time() + 240
            while time.time() < deadline and proc.poll() is None:
                if len(sb.records("voucherify")) >= before + 5:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == -signal.SIGKILL
        engine = StateDB(db_url).engine
        box = core.load_outbox(engine, "voucherify")
        assert box["status"].isin(["pending", "sending"]).any()  # the kill left rows queued
        mid = pd.DataFrame(sb.records("voucherify"))
        assert len(mid) > before
        # a create that reached Voucherify but whose answer the kill lost says so: sending,
        # not pending (not sent yet)
        reached = box[box["golden_id"].isin(set(mid["source_id"].dropna()))]
        unanswered = reached[reached["entity_key"].str.startswith("new:")]
        assert len(unanswered) and unanswered["status"].isin(["acked", "sending"]).all(), (
            unanswered["status"].value_counts()
        )

        sb.set_faults("voucherify", slow_rate=0.0)
        second = subprocess.run(
            [sys.executable, "-m", "custsync_pipeline.cli", "run", "--config", str(cfg)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        vc = pd.DataFrame(sb.records("voucherify"))
        golden = core.load_golden_records(engine)
        mine = vc[vc["source_id"].isin(golden["golden_id"])]
        # one customer per golden record custsync created: the resent creates upserted
        assert not mine["source_id"].duplicated().any()
        ids = pd.read_sql("select golden_id from identity_map where connector='voucherify'", engine)
        per_golden = ids["golden_id"].value_counts()
        created = set(mine["source_id"])
        assert (per_golden[per_golden.index.isin(created)] == 1).all()
        assert core.load_outbox(engine, "voucherify", core.QUEUED).empty
        engine.dispose()
