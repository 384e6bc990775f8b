"""Extraction lanes in real Dagster runs against the sandbox over real sockets.

The project's own definitions (the ones ``dagster dev`` loads) are materialized
with a sync config pointing at a sandbox; the tests then break the sandbox's
data in place (a renamed column, malformed ids, a fixed row) and run again:

* the lane checks are registered, with the thresholds of ``connectors.<c>.quality``;
* a feed below its valid-row threshold keeps its last good source records, its
  blocking check fails and stops identity; the other lane still extracts;
* a payload missing a required column fails its lane with a message naming
  the column; the other lane succeeds; a connector whose name is not its type
  still gets its vendor's payload model;
* the quarantine fills ``<c>/rejected_customers`` and the state-DB table, and a
  row fixed at the source leaves it on the next run.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from custsync_pipeline.config import DEFAULT_CONFIG_PATH
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline.store.quarantine import load_quarantine
from custsync_pipeline_tests.e2e import SANDBOX_SECRETS

LANES = ("salesforce", "voucherify")


@pytest.fixture
def sandbox():
    with Sandbox(seed=11, people=120, base_port=0) as sb:
        yield sb


def _configure(
    env,
    tmp_path: Path,
    sandbox: Sandbox,
    *,
    rename: dict[str, str] | None = None,
    quality: dict[str, dict] | None = None,
) -> str:
    """The packaged config on the sandbox, two lanes, optional renamed connectors and quality."""
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    data["state_db_url"] = url
    connectors = {}
    for name, conn in data["connectors"].items():
        conn["enabled"] = name in LANES
        conn["base_url"] = sandbox.urls.get(conn["type"], conn.get("base_url", ""))
        new = (rename or {}).get(name, name)
        if new != name:
            conn.setdefault("options", {})["sandbox_system"] = conn["type"]
        if quality and new in quality:
            conn["quality"] = quality[new]
        connectors[new] = conn
    data["connectors"] = connectors
    for old, new in (rename or {}).items():
        for step in data["flow"]["enrichments"]:
            step["connector"] = new if step["connector"] == old else step["connector"]
        data["flow"]["source"] = new if data["flow"]["source"] == old else data["flow"]["source"]
        for target in [*data["publish"], *data.get("transactions", {}).get("publish", [])]:
            target["connector"] = new if target["connector"] == old else target["connector"]
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    env.setenv("CUSTSYNC_CONFIG", str(path))
    return url


def _run(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    from custsync_pipeline.definitions import defs
    from custsync_pipeline.defs.extract.pulls import FULL_SNAPSHOT_TAG

    job = defs().resolve_job_def("sync_job")
    # these tests edit the sandbox's records in place, without a new change time: only a
    # full snapshot sees such an edit (as the reconciliation job does)
    return job.execute_in_process(
        instance=instance, raise_on_error=False, tags={FULL_SNAPSHOT_TAG: "true"}
    )


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e
        for e in result.get_asset_check_evaluations()
    }


def _failure_messages(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    out = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            err = event.event_specific_data.error
            out[event.step_key] = err.to_string() if err else ""
    return out


def _edit(sandbox: Sandbox, system: str, fn) -> None:  # noqa: ANN001
    """Change the emulator's stored records in place (the API then serves them)."""
    emu = sandbox.emulators[system]
    with emu.lock:
        for rec in emu.store.values():
            fn(rec)


def test_lane_checks_are_registered_with_configured_thresholds(
    dagster_env, tmp_path, sandbox
) -> None:
    from custsync_pipeline.definitions import defs

    _configure(dagster_env, tmp_path, sandbox, quality={"voucherify": {"min_valid_rate": 0.5}})
    graph = defs().resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.asset_check_keys}
    for lane in LANES:
        assert {
            f"{lane}/customers:valid_row_rate",
            f"{lane}/customers:duplicate_source_ids",
            f"{lane}/customers:newest_record_freshness",
            f"{lane}/raw_customers:schema_drift",
        } <= keys
    spec = graph.get_check_spec(
        dg.AssetCheckKey(dg.AssetKey(["voucherify", "customers"]), "valid_row_rate")
    )
    assert spec.blocking and "50%" in spec.description
    spec_sf = graph.get_check_spec(
        dg.AssetCheckKey(dg.AssetKey(["salesforce", "customers"]), "valid_row_rate")
    )
    assert "95%" in spec_sf.description


def test_broken_feed_keeps_last_good_records_and_blocks(dagster_env, tmp_path, sandbox) -> None:
    url = _configure(
        dagster_env, tmp_path, sandbox, quality={"voucherify": {"min_valid_rate": 0.9}}
    )
    engine = StateDB(url).engine
    with dg.DagsterInstance.ephemeral() as instance:
        first = _run(instance)
        assert first.success, _failure_messages(first)
        assert _checks(first)["voucherify/customers:valid_row_rate"].passed
        good = core.load_source_records(engine, ["voucherify"])
        assert len(good) > 20

        # half the feed now carries ids that are not Voucherify's: those rows are rejected
        ids = sorted(sandbox.emulators["voucherify"].store)
        broken = set(ids[::2])

        def break_id(rec: dict) -> None:
            if rec["id"] in broken:
                rec["id"] = "customer-" + rec["id"][5:]

        _edit(sandbox, "voucherify", break_id)
        sf_before = sandbox.emulators["salesforce"].store
        next(iter(sf_before.values()))["LastName"] = "Lindqvist-Changed"
        second = _run(instance)

    checks = _checks(second)
    gate = checks["voucherify/customers:valid_row_rate"]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    assert gate.metadata["valid_rate"].value < 0.9
    assert checks["salesforce/customers:valid_row_rate"].passed
    done = _materialized(second)
    # the broken lane still reports what it saw; identity and everything after it are stopped
    assert {"voucherify/customers", "voucherify/rejected_customers"} <= done
    assert "identity_map" not in done and "golden_customers" not in done
    # the other lane extracted and stored its change
    assert "salesforce/customers" in done
    sf = core.load_source_records(engine, ["salesforce"])
    assert (sf["last_name"] == "Lindqvist-Changed").sum() == 1
    # the stored Voucherify records are the last good ones, not half of them
    kept = core.load_source_records(engine, ["voucherify"])
    assert sorted(kept["source_id"]) == sorted(good["source_id"])
    # ... while the quarantine names every rejected id
    open_rows = load_quarantine(engine, "voucherify")
    bad_ids = open_rows.loc[open_rows["check"] == "voucherify_id", "source_id"]
    assert set(bad_ids) == {"customer-" + i[5:] for i in broken}
    engine.dispose()


def test_an_empty_answer_never_wipes_the_stored_records(dagster_env, tmp_path, sandbox) -> None:
    url = _configure(dagster_env, tmp_path, sandbox)  # default quality: min_rows 1
    engine = StateDB(url).engine
    with dg.DagsterInstance.ephemeral() as instance:
        first = _run(instance)
        assert first.success, _failure_messages(first)
        good = core.load_source_records(engine, ["voucherify"])
        assert len(good) > 20
        emu = sandbox.emulators["voucherify"]
        with emu.lock:  # the API now answers 200 with no customers at all
            emu.store.clear()
        second = _run(instance)
    gate = _checks(second)["voucherify/customers:valid_row_rate"]
    assert not gate.passed
    assert "identity_map" not in _materialized(second)
    kept = core.load_source_records(engine, ["voucherify"])
    assert sorted(kept["source_id"]) == sorted(good["source_id"])
    engine.dispose()


def test_wrong_shape_fails_only_its_lane_naming_the_column(dagster_env, tmp_path, sandbox) -> None:
    # the Voucherify connector is named vf_eu: its payload model must follow its type
    url = _configure(dagster_env, tmp_path, sandbox, rename={"voucherify": "vf_eu"})
    engine = StateDB(url).engine
    with dg.DagsterInstance.ephemeral() as instance:
        target = sorted(sandbox.emulators["voucherify"].store)[3]

        def bad_one(rec: dict) -> None:
            if rec["id"] == target:
                rec["id"] = "not-a-voucherify-id"

        _edit(sandbox, "voucherify", bad_one)
        first = _run(instance)
        assert first.success, _failure_messages(first)
        quarantined = load_quarantine(engine, "vf_eu")
        row = quarantined[quarantined["source_id"] == "not-a-voucherify-id"]
        assert list(row["check"]) == ["voucherify_id"] and (row["severity"] == "row").all()

        # the vendor renames a column every record must carry
        def rename(rec: dict) -> None:
            rec["emailAddress"] = rec.pop("email", None)

        _edit(sandbox, "voucherify", rename)
        second = _run(instance)
    failures = _failure_messages(second)
    assert set(failures) == {"vf_eu_customers"}, failures
    message = failures["vf_eu_customers"]
    assert "SchemaShapeError" in message and "'email'" in message and "emailAddress" in message
    assert "KeyError" not in message
    done = _materialized(second)
    assert {"salesforce/raw_customers", "salesforce/customers", "vf_eu/raw_customers"} <= done
    assert "vf_eu/customers" not in done
    engine.dispose()


def test_quarantine_end_to_end_and_fixed_rows_leave(dagster_env, tmp_path, sandbox) -> None:
    url = _configure(dagster_env, tmp_path, sandbox)
    engine = StateDB(url).engine
    # one record with an address that is not one (a field failure: the record stays)
    fixed_id = sorted(sandbox.emulators["voucherify"].store)[5]

    def spoil(rec: dict) -> None:
        if rec["id"] == fixed_id:
            rec["email"] = "frida.aberg@@gmail..com"

    _edit(sandbox, "voucherify", spoil)
    with dg.DagsterInstance.ephemeral() as instance:
        first = _run(instance)
        assert first.success, _failure_messages(first)
        rejected = pd.read_parquet(
            Path(tmp_path, "dagster_home", "storage", "custsync", "voucherify")
            / "rejected_customers.parquet"
        )
        table = load_quarantine(engine, "voucherify")
        for frame in (rejected, table):
            assert len(frame) > 0
            cols = ["connector", "source_id", "field", "check", "reason", "raw_payload"]
            assert frame[cols].notna().all().all()
            assert (frame["connector"] == "voucherify").all()
        # the parquet and the table hold the same failures
        key = ["source_id", "field", "check"]
        assert set(map(tuple, rejected[key].to_numpy())) == set(map(tuple, table[key].to_numpy()))
        row = table[(table["source_id"] == fixed_id) & (table["field"] == "email")]
        assert list(row["check"]) == ["email_syntax"]
        payload = json.loads(row["raw_payload"].iloc[0])
        assert payload["id"] == fixed_id
        assert payload["email"] == "frida.aberg@@gmail..com"
        assert "frida" not in row["reason"].iloc[0]  # reasons mask personal data

        # fixed at the source: the next run resolves it and keeps the others open
        def fix(rec: dict) -> None:
            if rec["id"] == fixed_id:
                rec["email"] = "fixed.address@gmail.com"

        _edit(sandbox, "voucherify", fix)
        second = _run(instance)
        assert second.success, _failure_messages(second)
    after = load_quarantine(engine, "voucherify", status=None)
    mine = after[(after["source_id"] == fixed_id) & (after["field"] == "email")]
    assert list(mine["status"]) == ["resolved"] and mine["resolved_at"].notna().all()
    still = after[after["status"] == "open"]
    # every row of the fixed record leaves (its e-mail also failed as a contact-detail
    # entry of the customer_contact_details aspect); the others stay open
    assert set(after.loc[after["source_id"] == fixed_id, "status"]) == {"resolved"}
    assert len(still) == int((table["source_id"] != fixed_id).sum())
    stored = core.load_source_records(engine, ["voucherify"]).set_index("source_id")
    assert stored.loc[fixed_id, "email"] == "fixed.address@gmail.com"
    engine.dispose()


def test_renamed_id_column_is_named_not_a_key_error(dagster_env, tmp_path, sandbox) -> None:
    """The vendor renames ``id``: the mapping would die on ``raw["id"]``; the shape check,
    run first with the connector's type, names the column and the likely rename."""
    from custsync_pipeline.config import load_sync_config
    from custsync_pipeline.connectors import build_connector
    from custsync_pipeline.defs.extract.assets import build_extract_assets
    from custsync_pipeline.defs.io import ParquetIOManager
    from custsync_pipeline.defs.resources import build_resources

    _configure(dagster_env, tmp_path, sandbox, rename={"voucherify": "vf_eu"})
    cfg = load_sync_config()
    with build_connector("vf_eu", cfg.connectors["vf_eu"], env=SANDBOX_SECRETS) as conn:
        received = conn.read(since=None).records  # over the sandbox's socket
    renamed = received.rename(columns={"id": "customer_id"})

    @dg.asset(key=["vf_eu", "raw_customers"])
    def raw_customers() -> pd.DataFrame:
        return renamed

    lane = [a for a in build_extract_assets(cfg.plan()) if a.node_def.name == "vf_eu_customers"]
    result = dg.materialize(
        [raw_customers, *lane],
        resources={**build_resources(cfg), "io_manager": ParquetIOManager(base_dir=str(tmp_path))},
        raise_on_error=False,
    )
    message = _failure_messages(result)["vf_eu_customers"]
    assert "SchemaShapeError" in message and "KeyError" not in message
    assert "['id']" in message and "customer_id" in message
