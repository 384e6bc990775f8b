"""The reconciliation job: its own name and description, the full-snapshot run tag, the
sync job's assets (not the day windows), on the nightly schedule; and a run of it against
the sandbox reads full snapshots where ``sync_job`` pulls incrementally."""

from __future__ import annotations

import dagster as dg
import yaml

from custsync_pipeline.defs.extract.pulls import FULL_SNAPSHOT_TAG
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline_tests.e2e import metadata_of, write_sync_config


def test_reconciliation_job_reads_full_snapshots_nightly(tmp_path, dagster_env) -> None:
    from custsync_pipeline.definitions import defs

    with Sandbox(seed=11, people=60, base_port=0) as sb:
        url = f"sqlite:///{tmp_path / 'state.sqlite'}"
        path = write_sync_config(tmp_path / "sync.yaml", sb.urls, url, {"salesforce", "voucherify"})
        data = yaml.safe_load(path.read_text())
        data["publish"] = []
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        dagster_env.setenv("CUSTSYNC_CONFIG", str(path))
        d = defs()
        job = d.resolve_job_def("reconciliation_job")
        assert job.tags[FULL_SNAPSHOT_TAG] == "true"
        assert "Full snapshots" in job.description
        assert set(job.asset_layer.asset_graph.executable_asset_keys) == set(
            d.resolve_job_def("sync_job").asset_layer.asset_graph.executable_asset_keys
        )
        schedule = d.resolve_schedule_def("nightly_reconciliation")
        assert schedule.job_name == "reconciliation_job" and schedule.description
        with dg.DagsterInstance.ephemeral() as instance:
            first = d.resolve_job_def("sync_job").execute_in_process(instance=instance)
            again = d.resolve_job_def("sync_job").execute_in_process(instance=instance)
            nightly = job.execute_in_process(instance=instance)
    assert metadata_of(first, "voucherify/customers")["pull_mode"] == "full"  # a first run
    assert metadata_of(again, "voucherify/customers")["pull_mode"] == "incremental"
    meta = metadata_of(nightly, "voucherify/customers")
    assert meta["pull_mode"] == "full" and meta["source_records_replaced"]


def test_reconciliation_job_reports_drift_and_continues_after_failed_lanes(dagster_env) -> None:
    """Each target's reconciliation_report is in the job; a failed lane of a
    reconciliation run is continued like one of sync_job (resolve, publish, report)."""
    from custsync_pipeline.config import current_plan
    from custsync_pipeline.definitions import defs
    from custsync_pipeline.defs.automation.definitions import (
        continue_after_failed_lanes,
        downstream_step_keys,
    )
    from custsync_pipeline.defs.publish.reconciliation import report_key

    d = defs()
    keys = d.resolve_job_def("reconciliation_job").asset_layer.asset_graph.executable_asset_keys
    targets = [t.connector for t in current_plan().publish]
    assert targets
    for target in targets:
        assert report_key(target) in keys
        # a failed report step is no lane failure: it is not "continued" by re-running it
        assert any(
            k.startswith(f"{target}__reconciliation_report")
            for k in downstream_step_keys(current_plan())
        )
    monitored = {getattr(j, "name", j) for j in continue_after_failed_lanes._monitored_jobs}
    assert {"sync_job", "reconciliation_job"} <= monitored
    continued = d.resolve_job_def("resolve_and_publish_job").asset_layer.asset_graph
    assert all(report_key(t) in continued.executable_asset_keys for t in targets)
