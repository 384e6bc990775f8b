"""The per-connector change-feed sensors with ``build_sensor_context`` and real JSON cursors,
against the sandbox over real sockets and a real SQLite state DB: a change in the sandbox
launches exactly one run, no change launches none, a delete reported by the feed launches
one, and a tick that fails (the API is down) keeps its cursor and the next one catches up.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from custsync_pipeline.config import load_sync_config
from custsync_pipeline.connectors.http import ConnectorError
from custsync_pipeline.defs.automation.change_sensors import build_change_sensors
from custsync_pipeline.defs.automation.definitions import sync_job
from custsync_pipeline.defs.resources import build_resources
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import write_sync_config
from custsync_pipeline_tests.test_connectors_systems import FAST_HTTP

LANES = {"salesforce", "voucherify"}
CHANGED_AT = {"voucherify": ("updated_at", None), "salesforce": ("LastModifiedDate", None)}


@pytest.fixture
def sandbox():
    with Sandbox(seed=11, people=120, base_port=0) as sb:
        yield sb


@pytest.fixture
def sensors(tmp_path: Path, sandbox: Sandbox, dagster_env):
    """The sensors of both lanes, their resources, and a state DB whose watermarks are the
    newest change time at the sandbox (as after a first sync)."""
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    path = write_sync_config(tmp_path / "sync.yaml", sandbox.urls, url, LANES)
    data = yaml.safe_load(path.read_text())
    for name in LANES:  # a refused request fails the tick at once, not after backoff
        data["connectors"][name].setdefault("options", {})["http"] = {**FAST_HTTP, "max_retries": 0}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_sync_config(path)
    engine = StateDB(url).create_all().engine
    for name in LANES:
        field = CHANGED_AT[name][0]
        objects = [None, "Account", "Lead"] if name == "salesforce" else [None]
        frames = [pd.DataFrame(sandbox.records(name, o)) for o in objects]
        stamps = pd.concat(
            [pd.to_datetime(f[field], utc=True, format="ISO8601") for f in frames if field in f]
        )
        core.set_watermark(engine, name, stamps.max().to_pydatetime())
    found = {s.name: s for s in build_change_sensors(cfg.plan(), sync_job)}
    yield found, build_resources(cfg)
    engine.dispose()


def _tick(sensor: dg.SensorDefinition, resources: dict, cursor: str | None):
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(cursor=cursor, resources=resources, instance=instance)
        # the daemon's path: the evaluation function with the context's resources
        result = sensor.evaluate_tick(context)
        return result, context.cursor


def test_a_change_launches_exactly_one_run_and_no_change_none(sensors, sandbox):
    found, resources = sensors
    sensor = found["voucherify_changes"]
    assert sensor.description and "voucherify" in sensor.description

    quiet, _ = _tick(sensor, resources, None)
    assert not quiet.run_requests and quiet.skip_message
    cursor = json.loads(quiet.cursor)
    assert set(cursor) == {"watermark", "deleted"}

    sandbox.changes("voucherify", edit=2, seed=3)
    busy, _ = _tick(sensor, resources, quiet.cursor)
    assert len(busy.run_requests) == 1
    run = busy.run_requests[0]
    assert run.run_key.startswith("voucherify:") and run.tags["custsync/changed_connector"]
    assert json.loads(busy.cursor)["watermark"] > cursor["watermark"]

    # the same change is not a change twice (the read's overlap returns it again)
    again, _ = _tick(sensor, resources, busy.cursor)
    assert not again.run_requests and again.skip_message


def test_a_delete_in_the_feed_launches_one_run(sensors, sandbox):
    found, resources = sensors
    sensor = found["salesforce_changes"]
    quiet, _ = _tick(sensor, resources, None)
    assert not quiet.run_requests
    sandbox.changes("salesforce", delete=1, seed=4)
    busy, _ = _tick(sensor, resources, quiet.cursor)
    assert len(busy.run_requests) == 1
    assert len(json.loads(busy.cursor)["deleted"]) == 1
    again, _ = _tick(sensor, resources, busy.cursor)
    assert not again.run_requests


def test_a_failing_tick_keeps_its_cursor(sensors, sandbox):
    found, resources = sensors
    sensor = found["voucherify_changes"]
    quiet, _ = _tick(sensor, resources, None)
    sandbox.changes("voucherify", edit=1, seed=6)
    sandbox.set_faults("voucherify", fail_after=0)  # every request answers 503
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            cursor=quiet.cursor, resources=resources, instance=instance
        )
        with pytest.raises(ConnectorError):
            sensor.evaluate_tick(context)
        assert context.cursor == quiet.cursor
    sandbox.set_faults("voucherify", fail_after=-1)
    caught_up, _ = _tick(sensor, resources, quiet.cursor)
    assert len(caught_up.run_requests) == 1


def test_the_run_pulls_that_lane_and_resolves_and_publishes(
    sensors, sandbox, tmp_path, dagster_env
):
    from custsync_pipeline.definitions import defs

    found, resources = sensors
    dagster_env.setenv("CUSTSYNC_CONFIG", str(tmp_path / "sync.yaml"))
    sensor = found["voucherify_changes"]
    quiet, _ = _tick(sensor, resources, None)
    sandbox.changes("voucherify", edit=1, seed=8)
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            cursor=quiet.cursor, resources=resources, instance=instance, definitions=defs()
        )
        run = sensor.evaluate_tick(context).run_requests[0]
    keys = {k.to_user_string() for k in run.asset_selection}
    assert {"voucherify/raw_customers", "voucherify/customers", "identity_map"} <= keys
    assert "golden_customers" in keys
    assert not any(k.startswith("salesforce/") and "raw" in k for k in keys)
    assert "voucherify/changes" not in keys
