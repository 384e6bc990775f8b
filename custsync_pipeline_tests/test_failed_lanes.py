"""A connector that is down fails its own lane; the others still reach golden records and
publishing (``custsync run`` inline, the ``continue_after_failed_lanes`` sensor under the daemon)."""

from __future__ import annotations

import argparse
from pathlib import Path

import dagster as dg
import pytest
import yaml

from custsync_pipeline import cli_run
from custsync_pipeline.config import load_sync_config
from custsync_pipeline.defs.automation.definitions import (
    continue_after_failed_lanes,
    only_lanes_failed,
)
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import write_sync_config
from custsync_pipeline_tests.sandbox_fixtures import closed_port


@pytest.fixture
def half_down(dagster_env, tmp_path: Path):
    """Salesforce served by the sandbox, Voucherify pointed at a port nobody listens on."""
    db_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    dagster_env.setenv("CUSTSYNC_STATE_DB_URL", db_url)
    with Sandbox(seed=5, people=60, base_port=0) as sb:
        path = write_sync_config(
            tmp_path / "sync.yaml", sb.urls, db_url, enabled={"salesforce", "voucherify"}
        )
        data = yaml.safe_load(path.read_text())
        data["connectors"]["voucherify"]["base_url"] = f"http://127.0.0.1:{closed_port()}"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        dagster_env.setenv("CUSTSYNC_CONFIG", str(path))
        yield sb, db_url


def test_a_down_connector_does_not_stop_golden_records_for_the_others(half_down, capsys) -> None:
    sandbox, db_url = half_down
    assert cli_run.run(argparse.Namespace()) == 1  # something failed, and it says so
    out = capsys.readouterr().out
    assert "lanes failed (voucherify__raw_customers)" in out
    assert "voucherify" in out and "FAILED (the reason is below)" in out
    # one line naming the connector, its step and why, not a traceback
    line = next(x for x in out.splitlines() if x.startswith("  voucherify: voucherify__raw"))
    assert "unreachable" in line and "127.0.0.1" in line and "Traceback" not in out
    assert "resolve_and_publish_job" in out

    engine = StateDB(db_url).engine
    golden = core.load_golden_records(engine)
    assert len(golden) > 0
    sf_outbox = core.load_outbox(engine, "salesforce", ["acked"])
    assert len(sf_outbox) > 0, "Salesforce still received the golden records"
    created = [r for r in sandbox.records("salesforce") if r.get("Custsync_Id__c")]
    assert {r["Custsync_Id__c"] for r in created} <= set(golden["golden_id"])
    engine.dispose()

    # the sensor makes the same decision from the failed run in the instance
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="sync_job"))
        assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.FAILURE
        failure = instance.get_records_for_run(
            run_id=runs[0].run_id, of_type=dg.DagsterEventType.RUN_FAILURE
        ).records[0]
        context = dg.build_run_status_sensor_context(
            sensor_name="continue_after_failed_lanes",
            dagster_instance=instance,
            dagster_run=runs[0],
            dagster_event=failure.event_log_entry.dagster_event,
        ).for_run_failure()
        request = continue_after_failed_lanes(context)
        assert isinstance(request, dg.RunRequest)
        assert request.run_key == f"continue-{runs[0].run_id}"


def test_only_lane_failures_continue(half_down) -> None:
    cfg = load_sync_config()
    assert only_lanes_failed(["voucherify__raw_customers"], cfg.plan())
    assert only_lanes_failed(["salesforce_customers", "voucherify__raw_customers"], cfg.plan())
    assert not only_lanes_failed([], cfg.plan())
    assert not only_lanes_failed(["voucherify__raw_customers", "merge_golden_records"], cfg.plan())
    assert not only_lanes_failed(["resolve_identities"], cfg.plan())
    assert not only_lanes_failed(["salesforce__published"], cfg.plan())


def test_a_lane_that_ran_out_of_step_retries_says_why(dagster_env, tmp_path: Path, capsys) -> None:
    """Exact Online answers every request 503: the HTTP retries, then the step's
    RetryPolicy, run out. The summary names the API's answer, not Dagster's wrapper."""
    import requests

    db_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    dagster_env.setenv("CUSTSYNC_STATE_DB_URL", db_url)
    with Sandbox(seed=5, people=30, base_port=0, systems=["salesforce", "exact"]) as sb:
        path = write_sync_config(tmp_path / "sync.yaml", sb.urls, db_url, {"salesforce", "exact"})
        data = yaml.safe_load(path.read_text())
        data.setdefault("runs", {})["extract_retry_delay_s"] = 0.1  # the test, not the wait
        http = data["connectors"]["exact"]["options"]["http"]
        http |= {"max_retries": 2, "backoff_factor_s": 0.01, "backoff_max_s": 0.05}
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        dagster_env.setenv("CUSTSYNC_CONFIG", str(path))
        r = requests.post(f"{sb.urls['exact']}/_sandbox/faults", json={"rate_5xx": 1.0}, timeout=5)
        assert r.status_code == 200
        assert cli_run.run(argparse.Namespace()) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("  exact: exact__raw_customers"))
    assert "HTTP 503" in line and "Exceeded max_retries" not in line, line
    retries = load_sync_config(str(path)).plan().extract_retries
    assert f"(the step tried {retries + 1} times)" in line, line
