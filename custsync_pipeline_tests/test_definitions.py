"""The Dagster definitions load, validate with Dagster's own CLI, and follow the sync config."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from custsync_pipeline.config import ConfigError, load_sync_config

ROOT = Path(__file__).resolve().parent.parent


def test_dagster_definitions_validate(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DAGSTER_HOME", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-w",
            str(ROOT / "workspace.yaml"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_lanes_follow_the_config() -> None:
    from custsync_pipeline.definitions import defs

    keys = {k.to_user_string() for k in defs().resolve_asset_graph().get_all_asset_keys()}
    for name, conn in load_sync_config().enabled_connectors().items():
        if conn.role == "transactions":  # a shop's orders: the transactions asset, no lane
            assert "transactions" in keys and f"{name}/raw_customers" not in keys
            continue
        assert {f"{name}/raw_customers", f"{name}/customers", f"{name}/rejected_customers"} <= keys
    assert {"identity_map", "identity_conflicts", "golden_customers"} <= keys
    for target in load_sync_config().publish:
        assert {f"{target.connector}/outbound_deltas", f"{target.connector}/published"} <= keys


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    bad = (ROOT / "custsync_pipeline" / "sync_config.yaml").read_text()
    bad = bad.replace("source: salesforce", "source: salesforc")
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    with pytest.raises(ConfigError, match=r"flow.source.*salesforc"):
        load_sync_config(path)
    path.write_text(
        "connectors: {a: {type: x, aspects: [nmae]}}\nidentity: {identifiers: []}\nflow: {source: a}\n"
    )
    with pytest.raises(ConfigError, match=r"connectors.a.aspects"):
        load_sync_config(path)
    path.write_text(
        "connectors: {a: {type: x, credentials: {token: 's3cr3t-value'}}}\n"
        "identity: {identifiers: []}\nflow: {source: a}\n"
    )
    with pytest.raises(ConfigError, match=r"credentials") as err:
        load_sync_config(path)
    assert "s3cr3t-value" not in str(err.value)


def test_resources_take_secrets_from_env_vars(monkeypatch) -> None:  # noqa: ANN001
    """Each credential an ``EnvVar`` (a reference, never the value); a variable not set
    is left out, so only that connector's steps fail (naming it), not every run."""
    from custsync_pipeline.defs.resources import build_resources

    monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", "t0ken")
    monkeypatch.delenv("VOYADO_API_KEY", raising=False)
    res = build_resources(load_sync_config())
    secrets = res["salesforce_api"].secrets
    assert set(secrets) == {"SALESFORCE_ACCESS_TOKEN"}
    assert isinstance(secrets["SALESFORCE_ACCESS_TOKEN"], dg.EnvVar)
    assert res["voyado_api"].secrets == {}


def test_state_writers_share_one_pool_and_api_steps_their_api_pool() -> None:
    from custsync_pipeline.definitions import defs
    from custsync_pipeline.defs.resources import STATE_POOL

    graph = defs().resolve_asset_graph()
    pools = {key.to_user_string(): graph.get(key).pools for key in graph.get_all_asset_keys()}
    for key in ("identity_map", "golden_customers", "salesforce/outbound_deltas"):
        assert pools[key] == {STATE_POOL}, key
    assert pools["voyado/raw_customers"] == {"voyado_api"}
    assert pools["salesforce/published"] == {"salesforce_api"}


def test_every_job_runs_in_one_process_unless_told_otherwise(tmp_path) -> None:  # noqa: ANN001
    """A run launched without execution config (the UI, a schedule, a sensor's subset of a
    job) runs its steps in one process, as ``custsync run``; the README's multiprocess
    config still picks the multiprocess executor. Real runs of ``publish_job`` through
    Dagster's CLI on a throwaway instance (nothing queued: no request leaves)."""
    import os
    import subprocess
    import sys

    import yaml

    from custsync_pipeline.definitions import defs, multiprocess_run_config
    from custsync_pipeline.sandbox.server import CREDENTIALS

    env = {
        **os.environ,
        **CREDENTIALS,
        "DAGSTER_HOME": str(tmp_path),
        "CUSTSYNC_STATE_DB_URL": f"sqlite:///{tmp_path / 'state.sqlite'}",
    }
    (tmp_path / "dagster.yaml").write_text("")
    run_config = tmp_path / "run.yaml"
    run_config.write_text(yaml.safe_dump(multiprocess_run_config(2)))
    dagster = [sys.executable, "-m", "dagster", "job", "execute"]
    args = ["-m", "custsync_pipeline.definitions", "-j", "publish_job"]
    for extra, says in (
        ([], "Executing steps in process"),
        (["-c", str(run_config)], "multiprocess"),
    ):
        done = subprocess.run(
            [*dagster, *args, *extra], env=env, capture_output=True, text=True, timeout=300
        )
        log = done.stdout + done.stderr
        assert done.returncode == 0 and "RUN_SUCCESS" in log, log[-2000:]
        assert says in log, log[-2000:]
    for name in ("sync_job", "resolve_and_publish_job", "publish_job", "reconciliation_job"):
        assert defs().resolve_job_def(name).executor_def.name == "in_process_unless_told"
