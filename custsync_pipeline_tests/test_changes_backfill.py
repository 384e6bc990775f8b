"""``<c>/changes``, the day-partitioned change pulls, against the sandbox over real sockets:
a three-day backfill range (as the backfill policy launches it: one run, a partition
range) re-pulls exactly the records changed in those days, counted at the sandbox; a
single day pulls that day alone; the watermark never moves; the sync job leaves the
partitioned assets out.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from custsync_pipeline.config import load_sync_config
from custsync_pipeline.defs.extract.changes import (
    CHANGES_BACKFILL,
    build_changes_assets,
    changes_key,
)
from custsync_pipeline.defs.io import ParquetIOManager
from custsync_pipeline.defs.resources import build_resources
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import write_sync_config

DAYS = ["2026-10-05", "2026-10-06", "2026-10-07"]
# (day, time) of the records moved into the window days and their neighbours
STAMPS = {
    "2026-10-04": ["12:00:00", "23:59:59"],  # the day before: never pulled
    "2026-10-05": ["00:00:00", "08:30:00", "23:59:59"],
    "2026-10-06": ["00:00:01", "12:00:00", "13:00:00", "22:00:00"],
    "2026-10-07": ["06:00:00", "18:45:10"],
    "2026-10-08": ["00:00:00", "09:00:00"],  # the day after: read, left out
}


@pytest.fixture
def sandbox():
    with Sandbox(seed=11, people=120, base_port=0) as sb:
        yield sb


def _stamp(sb: Sandbox) -> dict[str, list[str]]:
    """Voucherify's customers moved to known change times: a few into each day of
    ``STAMPS``, every other one to an old time. Answers day -> ids."""
    emu = sb.emulators["voucherify"]
    by_day: dict[str, list[str]] = {d: [] for d in STAMPS}
    with emu.lock:
        recs = sorted(emu.store.values(), key=lambda r: r["id"])
        slots = [(d, t) for d, times in STAMPS.items() for t in times]
        for rec in recs:
            rec["created_at"] = "2024-01-01T00:00:00.000Z"
            rec["updated_at"] = "2024-03-01T00:00:00.000Z"
        for rec, (day, at) in zip(recs[5::3], slots, strict=False):
            rec["updated_at"] = f"{day}T{at}.000Z"
            by_day[day].append(rec["id"])
    return by_day


def _materialize(config: Path, tags: dict[str, str], storage: Path) -> dg.ExecuteInProcessResult:
    cfg = load_sync_config(config)
    asset = next(a for a in build_changes_assets(cfg.plan()) if changes_key("voucherify") in a.keys)
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [asset],
            resources={
                **build_resources(cfg),
                "io_manager": ParquetIOManager(base_dir=str(storage)),
            },
            instance=instance,
            tags=tags,
        )


def _meta(result: dg.ExecuteInProcessResult) -> list[dict[str, object]]:
    return [
        {k: v.value for k, v in e.event_specific_data.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    ]


def test_a_three_day_backfill_re_pulls_exactly_those_windows(tmp_path, sandbox, dagster_env):
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    config = write_sync_config(
        tmp_path / "sync.yaml", sandbox.urls, url, {"voucherify", "salesforce"}
    )
    by_day = _stamp(sandbox)
    in_window = {i for d in DAYS for i in by_day[d]}
    # counted at the sandbox: what it serves changed in the three days, and from the first
    # day's start minus the 10-minute overlap on (the read the connector makes)
    served = pd.DataFrame(sandbox.records("voucherify"))
    when = pd.to_datetime(served["updated_at"], utc=True)
    start, end = pd.Timestamp(DAYS[0], tz="UTC"), pd.Timestamp("2026-10-08", tz="UTC")
    assert set(served.loc[(when >= start) & (when < end), "id"]) == in_window
    read_from = int((when >= start - pd.Timedelta(minutes=10)).sum())
    engine = StateDB(url).create_all().engine
    mark = core.get_watermark(engine, "voucherify")

    before = sandbox.emulators["voucherify"].stats["requests"]
    result = _materialize(
        config,
        {
            "dagster/asset_partition_range_start": DAYS[0],
            "dagster/asset_partition_range_end": DAYS[-1],
        },
        tmp_path / "storage",
    )
    requests = sandbox.emulators["voucherify"].stats["requests"] - before
    assert result.success
    # one materialization per day partition, all from the one read of the range
    parts = sorted(
        e.event_specific_data.materialization.partition
        for e in result.get_asset_materialization_events()
    )
    assert parts == DAYS
    meta = _meta(result)[0]
    assert meta["records_in_window"] == len(in_window) == 9
    # each day's own count (the run's materializations share one metadata set)
    assert meta["records_per_day"] == {d: len(by_day[d]) for d in DAYS}
    assert meta["days_in_run"] == 3 and "dagster/row_count" not in meta
    assert meta["records_read"] == read_from  # the day after is read, then left out
    assert meta["requests"] == requests == 1  # one page: a week costs one listing
    assert meta["pull_mode"] == "window" and meta["source_records_upserted"]
    stored = set(core.load_source_records(engine, ["voucherify"])["source_id"])
    assert stored == in_window  # exactly the three days, not the day before or after
    assert core.get_watermark(engine, "voucherify") == mark  # a backfill never moves it

    # one day alone: that window only
    one = _materialize(config, {"dagster/partition": DAYS[1]}, tmp_path / "storage")
    assert _meta(one)[0]["records_in_window"] == len(by_day[DAYS[1]]) == 4
    assert _meta(one)[0]["dagster/row_count"] == 4 and "records_per_day" not in _meta(one)[0]
    engine.dispose()


def test_the_backfill_policy_batches_a_week_and_the_sync_job_leaves_windows_out(
    tmp_path, sandbox, dagster_env
):
    from custsync_pipeline.definitions import defs

    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    config = write_sync_config(
        tmp_path / "sync.yaml", sandbox.urls, url, {"voucherify", "salesforce"}
    )
    dagster_env.setenv("CUSTSYNC_CONFIG", str(config))
    assert CHANGES_BACKFILL.max_partitions_per_run == 7
    d = defs()
    graph = d.resolve_asset_graph()
    node = graph.get(changes_key("voucherify"))
    assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition)
    assert node.backfill_policy == CHANGES_BACKFILL
    keys = d.resolve_job_def("sync_job").asset_layer.asset_graph.executable_asset_keys
    assert changes_key("voucherify") not in keys
    assert dg.AssetKey(["voucherify", "raw_customers"]) in keys
    yaml.safe_load(config.read_text())  # the config the definitions loaded
