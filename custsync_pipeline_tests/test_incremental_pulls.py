"""Incremental pulls in real sync runs against the sandbox (real sockets, a real SQLite
state DB): the first run reads a full snapshot and stores the watermark; later runs read
the changes since it and the delete feeds, upsert what changed, remove what was deleted,
keep everything else; a run with no change passes its gates; the reconciliation tag reads
a full snapshot again; the watermark moves only once the changes are stored.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from custsync_pipeline.defs.extract.pulls import FULL_SNAPSHOT_TAG
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline.store.golden import load_source_entries
from custsync_pipeline_tests.e2e import metadata_of, write_sync_config

LANES = {"salesforce", "voucherify"}


@pytest.fixture
def sandbox():
    with Sandbox(seed=11, people=120, base_port=0) as sb:
        yield sb


def _setup(env: pytest.MonkeyPatch, tmp_path: Path, sb: Sandbox) -> str:
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    path = write_sync_config(tmp_path / "sync.yaml", sb.urls, url, enabled=LANES)
    # no publishing: what custsync writes would come back as changes of the next pull
    data = yaml.safe_load(path.read_text())
    data["publish"] = []
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    env.setenv("CUSTSYNC_CONFIG", str(path))
    return url


def _run(instance: dg.DagsterInstance, tags: dict[str, str] | None = None):
    from custsync_pipeline.definitions import defs

    job = defs().resolve_job_def("sync_job")
    result = job.execute_in_process(instance=instance, raise_on_error=False, tags=tags or {})
    assert result.success, [
        e.event_specific_data.error.to_string()
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    ]
    return result


def _requests(sb: Sandbox, system: str) -> int:
    return sb.emulators[system].stats["requests"]


def test_incremental_runs_upsert_changes_and_remove_deletes(dagster_env, tmp_path, sandbox):
    engine = StateDB(_setup(dagster_env, tmp_path, sandbox)).engine
    with dg.DagsterInstance.ephemeral() as instance:
        calls = _requests(sandbox, "salesforce")
        first = _run(instance)
        full_calls = _requests(sandbox, "salesforce") - calls
        raw = metadata_of(first, "salesforce/raw_customers")
        assert raw["pull_mode"] == "full"
        before = core.load_source_records(engine, ["salesforce"])
        mark = core.get_watermark(engine, "salesforce")
        assert mark is not None and mark == before["updated_at"].max()

        # nothing changed: an incremental pull of nothing, gates pass, records untouched.
        # (The overlap re-reads the newest records: Voucherify's, which has no delete feed,
        # are taken off the API so its pull is truly empty.)
        vf_mark = core.get_watermark(engine, "voucherify")
        emu = sandbox.emulators["voucherify"]
        with emu.lock:
            for key, rec in list(emu.store.items()):
                if pd.Timestamp(rec.get("updated_at") or rec["created_at"]) >= vf_mark - timedelta(
                    minutes=10
                ):
                    del emu.store[key]
        vf_before = core.source_record_counts(engine)["voucherify"]
        second = _run(instance)
        meta = metadata_of(second, "salesforce/customers")
        assert meta["pull_mode"] == "incremental" and meta["source_records_upserted"]
        assert meta["source_records_replaced"]  # the gate passed: `custsync run` says nothing
        assert metadata_of(second, "voucherify/customers")["pull_mode"] == "incremental"
        checks = {
            f"{e.asset_key.to_user_string()}:{e.check_name}": e
            for e in second.get_asset_check_evaluations()
        }
        assert checks["salesforce/customers:valid_row_rate"].passed
        # 0 rows received, min_rows 1: no failure for a pull that found no change
        gate = checks["voucherify/customers:valid_row_rate"]
        assert gate.passed and gate.metadata["received"].value == 0
        assert core.source_record_counts(engine)["voucherify"] == vf_before
        same = core.load_source_records(engine, ["salesforce"])
        assert sorted(same["source_id"]) == sorted(before["source_id"])

        entries_before = load_source_entries(engine, ["salesforce"])
        touched = sandbox.changes("salesforce", edit=3, delete=2, add=2, seed=3)
        calls = _requests(sandbox, "salesforce")
        third = _run(instance)
        inc_calls = _requests(sandbox, "salesforce") - calls

    raw = metadata_of(third, "salesforce/raw_customers")
    meta = metadata_of(third, "salesforce/customers")
    assert raw["pull_mode"] == "incremental"
    assert meta["deleted_reported"] == 2 and meta["deleted_removed"] == 2
    # the changed records only (edited + added, and what the 10-minute overlap before the
    # watermark holds again), not a snapshot of all of them
    overlap = int((before["updated_at"] >= mark - timedelta(minutes=10)).sum())
    changed = len(touched["edited"]) + len(touched["added"])
    assert changed <= meta["stored"] <= changed + overlap
    assert meta["watermark_moved"]
    after = core.load_source_records(engine, ["salesforce"])
    ids = set(after["source_id"])
    assert not ids & set(touched["deleted"])
    assert set(touched["added"]) <= ids
    assert ids == (set(before["source_id"]) - set(touched["deleted"])) | set(touched["added"])
    assert core.get_watermark(engine, "salesforce") > mark
    # the records this pull did not return keep their entries
    untouched = set(before["source_id"]) - set(touched["edited"]) - set(touched["deleted"])
    entries_after = load_source_entries(engine, ["salesforce"])
    kept = entries_after[entries_after["source_id"].isin(untouched)]
    was = entries_before[entries_before["source_id"].isin(untouched)]
    assert len(kept) >= len(was) - 2 * len(touched["deleted"])  # a deleted Contact's person
    assert not entries_after["source_id"].isin(touched["deleted"]).any()
    # a few records instead of all; at 120 people a page holds everything, so the calls
    # are one query and one delete feed per object instead of one query per object
    assert raw["dagster/row_count"] <= changed + overlap < len(before) / 10
    assert inc_calls == 2 * full_calls
    engine.dispose()


def test_watermark_moves_only_after_the_changes_are_stored(dagster_env, tmp_path, sandbox):
    from custsync_pipeline.definitions import defs

    engine = StateDB(_setup(dagster_env, tmp_path, sandbox)).engine
    with dg.DagsterInstance.ephemeral() as instance:
        _run(instance)
        mark = core.get_watermark(engine, "voucherify")
        sandbox.changes("voucherify", edit=2, seed=5)
        # the raw step alone reads the changes; nothing is stored, so the watermark stays
        job = defs().resolve_job_def("sync_job")
        raw_only = job.get_subset(asset_selection={dg.AssetKey(["voucherify", "raw_customers"])})
        assert raw_only.execute_in_process(instance=instance).success
        assert core.get_watermark(engine, "voucherify") == mark
        _run(instance)
    assert core.get_watermark(engine, "voucherify") > mark
    engine.dispose()


def test_the_full_snapshot_tag_reads_everything_again(dagster_env, tmp_path, sandbox):
    engine = StateDB(_setup(dagster_env, tmp_path, sandbox)).engine
    with dg.DagsterInstance.ephemeral() as instance:
        _run(instance)
        n = core.source_record_counts(engine)["voucherify"]
        full = _run(instance, tags={FULL_SNAPSHOT_TAG: "true"})
    meta = metadata_of(full, "voucherify/customers")
    assert meta["pull_mode"] == "full" and meta["source_records_replaced"]
    assert meta["stored"] == n
    engine.dispose()


def test_a_pull_that_is_the_one_stored_last_is_not_validated_again(dagster_env, tmp_path, sandbox):
    """A full snapshot with the rows stored last is reported, not validated and stored
    again; a changed row, or stored records that moved since, validate as usual."""
    engine = StateDB(_setup(dagster_env, tmp_path, sandbox)).engine
    full = {FULL_SNAPSHOT_TAG: "true"}
    with dg.DagsterInstance.ephemeral() as instance:
        first = _run(instance)
        n = core.source_record_counts(engine)
        again = _run(instance, tags=full)
        for lane in LANES:
            meta = metadata_of(again, f"{lane}/customers")
            assert meta["pull_unchanged"] is True, lane
            assert meta["stored"] == metadata_of(first, f"{lane}/customers")["stored"]
            assert meta["dagster/row_count"] == n[lane]
        assert core.source_record_counts(engine) == n

        edited = sandbox.changes("salesforce", edit=2, seed=3)["edited"]
        changed = _run(instance, tags=full)
        assert metadata_of(changed, "salesforce/customers")["pull_unchanged"] is False
        assert metadata_of(changed, "voucherify/customers")["pull_unchanged"] is True
        stored = core.load_source_records(engine, ["salesforce"]).set_index("source_id")
        truth = pd.DataFrame(sandbox.records("salesforce")).set_index("Id")
        for contact in edited:
            assert stored.loc[contact, "updated_at"] == pd.Timestamp(
                truth.loc[contact, "LastModifiedDate"]
            )

        # the stored records moved since (a record removed behind the lane's back): the
        # same snapshot validates and stores again, and the record is back
        gone = str(stored.index[0])
        core.remove_source_records(engine, "salesforce", [gone])
        back = _run(instance, tags=full)
        assert metadata_of(back, "salesforce/customers")["pull_unchanged"] is False
        assert gone in core.source_record_ids(engine, "salesforce")
        # the step's last output is gone (another storage dir): validated and written again
        from custsync_pipeline.defs.extract.assets import customers_key
        from custsync_pipeline.defs.io import ParquetIOManager

        ParquetIOManager().key_path(customers_key("voucherify")).unlink()
        rewritten = _run(instance, tags=full)
        assert metadata_of(rewritten, "voucherify/customers")["pull_unchanged"] is False
        assert ParquetIOManager().held_rows(customers_key("voucherify")) == n["voucherify"]
    engine.dispose()


def test_a_snapshot_after_an_incremental_pull_of_the_same_rows_validates(tmp_path):
    from custsync_pipeline.defs.extract import replay

    engine = StateDB(f"sqlite:///{tmp_path / 'state.sqlite'}").create_all().engine
    raw = pd.DataFrame({"Id": ["a", "b"], "Email": ["x@example.com", None]})
    key = replay.pull_key(raw, [], "lane", ("addresses",), "custsync_pipeline.connectors.file")
    assert key != replay.pull_key(
        raw, ["c"], "lane", ("addresses",), "custsync_pipeline.connectors.file"
    )
    replay.remember_pull(engine, "crm", key, "incremental", {"stored": 2}, {})
    assert replay.unchanged_pull(engine, "crm", key, True) == {
        "key": key,
        "mode": "incremental",
        "rows": 0,
        "metadata": {"stored": 2},
        "rejected": {},
    }
    assert replay.unchanged_pull(engine, "crm", key, False) is None  # a snapshot
    replay.forget_pull(engine, "crm")
    assert replay.unchanged_pull(engine, "crm", key, True) is None
    engine.dispose()
