"""Checks on identity (``conflict_rate``, ``largest_cluster`` on ``identity_map``) and on
each publishing lane (``no_dead_letters`` on ``<t>/published``, ``held_back_share`` on
``<t>/outbound_deltas``): a sync against the sandbox over real sockets runs them all and
they pass with their numbers; an over-merged cluster and a conflict-ridden map fail."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from custsync_pipeline.defs.identity.assets import IDENTITY_MAP
from custsync_pipeline.defs.identity.checks import (
    MAX_CLUSTER_SIZE,
    conflict_rate,
    largest_cluster,
)
from custsync_pipeline.defs.io import ParquetIOManager, write_private_parquet
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline_tests.e2e import materialize_all, run_against_sandbox


def test_identity_and_publish_checks_run_in_the_sync(dagster_env, tmp_path) -> None:
    with Sandbox(seed=5, people=60, base_port=0) as sb:
        run_against_sandbox(dagster_env, tmp_path, sb.urls, enabled={"salesforce", "voucherify"})
        with dg.DagsterInstance.ephemeral() as instance:
            result = materialize_all(instance)
    evals = {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in (ev.event_specific_data for ev in result.all_events)
        if type(e).__name__ == "AssetCheckEvaluation"
    }
    wanted = [
        ("identity_map", "conflict_rate"),
        ("identity_map", "largest_cluster"),
        *[(f"{t}/published", "no_dead_letters") for t in ("salesforce", "voucherify")],
        *[(f"{t}/outbound_deltas", "held_back_share") for t in ("salesforce", "voucherify")],
    ]
    for key in wanted:
        assert key in evals, key
        assert evals[key].passed, (key, evals[key].description)
    meta = evals[("identity_map", "largest_cluster")].metadata
    assert 1 <= meta["largest_cluster"].value <= MAX_CLUSTER_SIZE
    meta = evals[("voucherify/outbound_deltas", "held_back_share")].metadata
    assert meta["golden_records"].value > 0  # read from this run's golden_customers
    assert evals[("salesforce/published", "no_dead_letters")].metadata["acked"].value > 0


def test_identity_checks_fail_on_an_over_merge_and_many_conflicts(tmp_path) -> None:
    """The checks read the stored ``identity_map`` output (its golden ids, its row count)
    through the IO manager; without one they fail saying so."""
    n = MAX_CLUSTER_SIZE + 5
    merged = pd.DataFrame(
        {
            "connector": ["salesforce"] * n + ["voucherify"],
            "source_id": [f"s{i}" for i in range(n)] + ["v1"],
            "golden_id": ["G-1"] * n + ["G-2"],
        }
    )
    io = ParquetIOManager(base_dir=str(tmp_path))
    context = dg.build_asset_check_context(resources={"io_manager": io})
    with pytest.raises(dg.Failure, match="materialize identity_map first"):
        largest_cluster(context)
    io.key_path(IDENTITY_MAP).parent.mkdir(parents=True, exist_ok=True)
    io.key_path(IDENTITY_MAP).write_bytes(b"not parquet")
    for check in (largest_cluster, lambda c: conflict_rate(c, conflicts=merged.iloc[:0])):
        with pytest.raises(dg.Failure, match="no readable stored output"):
            check(context)
    write_private_parquet(merged, io.key_path(IDENTITY_MAP), tmp_path)
    result = largest_cluster(context)
    assert not result.passed
    assert result.metadata["largest_cluster"].value == n
    assert result.metadata["clusters_over_threshold"].value == 1
    assert result.metadata["golden_ids"].value == 2
    conflicts = pd.DataFrame({"kind": ["shared_value"] * 5 + ["blocked_value"]})
    result = conflict_rate(context, conflicts=conflicts)
    assert not result.passed  # 6 of 31 records
    assert result.metadata["source_records"].value == n + 1
    assert result.metadata["conflicts_shared_value"].value == 5
    assert conflict_rate(context, conflicts=conflicts.iloc[:0]).passed
    write_private_parquet(merged.iloc[n - 3 :], io.key_path(IDENTITY_MAP), tmp_path)
    assert largest_cluster(context).passed  # 3 and 1 records
