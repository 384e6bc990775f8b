"""The outbox sensor against a real SQLite state DB and a real (ephemeral) Dagster instance:
it asks for the publish steps of the targets with pending or failed deltas, and waits while
a sync is in flight."""

from __future__ import annotations

import time

import dagster as dg
import pandas as pd
import pytest
from dagster._core.storage.dagster_run import DagsterRun

from custsync_pipeline.definitions import defs
from custsync_pipeline.defs.resources import StateDBResource
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.delenv("CUSTSYNC_CONFIG", raising=False)  # the packaged config's targets
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    return url, StateDB(url).create_all().engine


def _deltas(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_key": [f"new:G{i}" for i in range(n)],
            "golden_id": [f"G{i}" for i in range(n)],
            "target_id": [None] * n,
            "op": ["upsert"] * n,
            "payload": ['{"LastName": "Ek"}'] * n,
            "payload_hash": [f"h{i}" for i in range(n)],
        }
    )


def _tick(url: str, instance: dg.DagsterInstance):
    sensor = defs().resolve_sensor_def("publish_pending_deltas")
    context = dg.build_sensor_context(
        instance=instance, resources={"state_db": StateDBResource(url=url)}
    )
    return sensor(context)


def test_quiet_when_the_outbox_holds_nothing_to_send(state) -> None:
    url, engine = state
    with dg.DagsterInstance.ephemeral() as instance:
        assert isinstance(_tick(url, instance), dg.SkipReason)
        core.enqueue_deltas(engine, "salesforce", _deltas(2))
        sent = pd.DataFrame(
            {
                "entity_key": ["new:G0", "new:G1"],
                "target_id": ["003A", "003B"],
                "status": ["acked", "acked"],
                "last_error": [None, None],
            }
        )
        core.record_publish_results(engine, "salesforce", sent)
        assert isinstance(_tick(url, instance), dg.SkipReason)


def test_pending_and_failed_deltas_ask_for_their_targets_publish_steps(state) -> None:
    url, engine = state
    core.enqueue_deltas(engine, "voucherify", _deltas(3))
    with dg.DagsterInstance.ephemeral() as instance:
        request = _tick(url, instance)
        assert isinstance(request, dg.RunRequest)
        assert request.asset_selection == [dg.AssetKey(["voucherify", "published"])]
        assert request.tags["custsync/outbox_rows"] == "3"

        core.record_publish_results(
            engine,
            "voucherify",
            pd.DataFrame(
                {
                    "entity_key": ["new:G0"],
                    "target_id": [None],
                    "status": ["failed"],
                    "last_error": ["503 from the API"],
                }
            ),
        )
        core.enqueue_deltas(engine, "salesforce", _deltas(1))
        request = _tick(url, instance)
        assert set(request.asset_selection) == {
            dg.AssetKey(["voucherify", "published"]),
            dg.AssetKey(["salesforce", "published"]),
        }

        # a sync in flight will publish them itself: the sensor waits
        instance.add_run(
            DagsterRun(job_name="sync_job", run_id="r-1", status=dg.DagsterRunStatus.STARTED)
        )
        skipped = _tick(url, instance)
        assert isinstance(skipped, dg.SkipReason) and "r-1" in skipped.skip_message


def test_nightly_reconciliation_runs_the_reconciliation_job() -> None:
    schedule = defs().resolve_schedule_def("nightly_reconciliation")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.job_name == "reconciliation_job"


def test_a_run_left_started_by_a_dead_process_is_not_waited_on(state, tmp_path, monkeypatch):
    """A run record left STARTED (its process was SIGKILLed: no event since, no live state
    lease) blocks the outbox only for ``runs.stale_run_s``; a silent run that still holds
    the lease (a long step) is waited on."""
    import yaml

    from custsync_pipeline.config import DEFAULT_CONFIG_PATH
    from custsync_pipeline.defs.state_lease import LEASE_OWNER_TAG
    from custsync_pipeline.store import lease

    url, engine = state
    cfg = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    cfg["runs"] = {"stale_run_s": 2}
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("CUSTSYNC_CONFIG", str(path))
    core.enqueue_deltas(engine, "voucherify", _deltas(2))
    sensor = defs().resolve_sensor_def("publish_pending_deltas")  # loaded before the clock runs

    def tick(instance: dg.DagsterInstance):
        resources = {"state_db": StateDBResource(url=url)}
        return sensor(dg.build_sensor_context(instance=instance, resources=resources))

    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_run(
            DagsterRun(
                job_name="sync_job",
                run_id="killed",
                status=dg.DagsterRunStatus.STARTED,
                tags={LEASE_OWNER_TAG: "custsync-run-1"},
            )
        )
        assert isinstance(tick(instance), dg.SkipReason)  # just started: in flight
        time.sleep(2.5)
        # silent, but its lease is alive: a long step, not a dead run
        assert lease.try_acquire(engine, "custsync-run-1", ttl_s=60)
        skipped = tick(instance)
        assert isinstance(skipped, dg.SkipReason) and "killed" in skipped.skip_message
        # the lease expired too (nobody renews it): dead, the outbox is sent
        lease.release(engine, "custsync-run-1")
        assert lease.try_acquire(engine, "custsync-run-1", ttl_s=0.1)
        time.sleep(0.3)
        request = tick(instance)
        assert isinstance(request, dg.RunRequest)
        assert request.asset_selection == [dg.AssetKey(["voucherify", "published"])]
