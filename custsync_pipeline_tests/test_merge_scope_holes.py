"""Review of the incremental golden merge (issue 14): states where a merge of a part of the
golden records must leave what a merge of everything would.

Each test builds a small state DB with the store's own writers (so every write queues
what it changed), materializes the identity and golden steps of the real definitions,
changes something, merges again (a part), then forgets the merge state and merges
everything: that merge must find nothing to change.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa
import yaml

from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import SANDBOX_SECRETS, metadata_of, run_against_sandbox

SAME_TIME = pd.Timestamp("2026-01-05T10:00:00Z")


def _state(dagster_env, tmp_path: Path) -> sa.Engine:
    for k, v in SANDBOX_SECRETS.items():
        dagster_env.setenv(k, v)
    db_url, _ = run_against_sandbox(dagster_env, tmp_path, {}, publish=False)
    return StateDB(db_url).create_all().engine


def _merge(instance: dg.DagsterInstance) -> dict[str, object]:
    """Resolve identities and merge the golden records (no lane runs: the state DB is
    the input); the golden step's metadata."""
    from custsync_pipeline.definitions import defs

    definitions = defs()
    keys = [
        key
        for a in definitions.get_repository_def().asset_graph.assets_defs
        if a.node_def.name in ("resolve_identities", "merge_golden_records")
        for key in a.keys
    ]
    job = definitions.resolve_job_def("sync_job")
    result = job.execute_in_process(instance=instance, asset_selection=keys)
    assert result.success
    return metadata_of(result, "golden_customers")


def _merge_everything(engine: sa.Engine, instance: dg.DagsterInstance) -> dict[str, object]:
    with engine.begin() as conn:
        conn.execute(sa.text("delete from table_digests where name like 'golden_%'"))
    full = _merge(instance)
    assert full["merged_records"] == full["dagster/row_count"]
    return full


def _people(connector: str, n: int, start: int = 100) -> pd.DataFrame:
    """``n`` unrelated people (one golden record each)."""
    ids = [str(start + i) for i in range(n)]
    return pd.DataFrame(
        {
            "connector": connector,
            "source_id": ids,
            "first_name": [f"Filler{i}" for i in ids],
            "last_name": "Berg",
            "email": [f"filler{i}@berg.se" for i in ids],
            "updated_at": SAME_TIME,
        }
    )


def test_a_tie_between_two_records_of_one_connector_is_decided_the_same_way(
    dagster_env, tmp_path: Path
):
    """Two Voucherify records of one person (the same e-mail, the same update time) tie
    for the city; the tie must not be decided by which other records the merge
    happened to load (a source id "2" that Salesforce also uses)."""
    engine = _state(dagster_env, tmp_path)
    sf = pd.concat(
        [
            _people("salesforce", 12),
            pd.DataFrame(
                {
                    "connector": ["salesforce"],
                    "source_id": ["2"],
                    "first_name": ["Bo"],
                    "last_name": ["Ek"],
                    "email": ["bo.ek@ek.se"],
                    "updated_at": [SAME_TIME],
                }
            ),
        ]
    )
    vf = pd.DataFrame(
        {
            "connector": "voucherify",
            "source_id": ["1", "2"],
            "first_name": "Anna",
            "last_name": "Lind",
            "city": ["Lund", "Malmö"],
            "email": "anna.lind@lind.se",
            "updated_at": SAME_TIME,
        }
    )
    core.replace_source_records(engine, "salesforce", sf)
    core.replace_source_records(engine, "voucherify", vf)
    with dg.DagsterInstance.ephemeral() as instance:
        _merge(instance)
        # a phone number for one of the two: the person's golden record is merged again
        vf.loc[vf["source_id"] == "1", "phone"] = "+46701234500"
        core.replace_source_records(engine, "voucherify", vf)
        part = _merge(instance)
        assert part["merged_records"] < part["dagster/row_count"], part
        full = _merge_everything(engine, instance)
        assert full["changed_records"] == 0, full
    engine.dispose()


def test_survivorship_does_not_depend_on_the_rows_loaded_beside_a_golden_record():
    """The domain side of the tie above: the same members give the same golden record and
    entries whether the merge loaded every record (in any order) or only theirs."""
    from custsync_pipeline.domain.golden import FlowStep, build_golden

    aspects = ("name", "customer_contact_details", "addresses")
    steps = [FlowStep("salesforce", aspects), FlowStep("voucherify", aspects)]
    records = pd.DataFrame(
        {
            "connector": ["salesforce", "voucherify", "voucherify"],
            "source_id": ["2", "1", "2"],
            "city": ["Ystad", "Lund", "Malmö"],
            "updated_at": SAME_TIME,
        }
    )
    imap = records[["connector", "source_id"]].assign(golden_id=["G2", "G1", "G1"])
    entries = pd.DataFrame(
        {
            "connector": ["salesforce", "voucherify", "voucherify"],
            "source_id": ["2", "2", "1"],
            "aspect": "customer_contact_details",
            "entry_key": ["email:bo@ek.se", "email:anna@lind.se", "email:anna@lind.se"],
            "type": "email",
            "value": ["bo@ek.se", "Anna@Lind.se", "anna@lind.se"],
            "seen_at": SAME_TIME,
        }
    )

    def g1(rec: pd.DataFrame, ent: pd.DataFrame) -> tuple[list, list]:
        out = build_golden(rec, imap, steps, entries=ent)
        golden = out.golden[out.golden["golden_id"] == "G1"]
        mine = out.entry_sources[out.entry_sources["golden_id"] == "G1"]
        picked = out.entries[out.entries["golden_id"] == "G1"]
        return (
            golden["city"].tolist() + picked["value"].tolist(),
            mine["source_id"].astype(str).tolist(),
        )

    everything = g1(records, entries)
    assert g1(records.iloc[::-1], entries.iloc[::-1]) == everything
    assert g1(records.iloc[1:], entries.iloc[1:]) == everything


def test_a_merge_by_another_version_of_the_code_is_no_base_for_a_merge_of_a_part(
    dagster_env, tmp_path: Path
):
    """Survivorship or echo safety changed by an upgrade (the same plan): the golden
    records the last merge left were merged by other rules, and a merge of a part would
    keep the old rules' result on every record it does not touch."""
    from custsync_pipeline.defs.golden import assets as golden_assets

    engine = _state(dagster_env, tmp_path)
    core.replace_source_records(engine, "salesforce", _people("salesforce", 12))
    with dg.DagsterInstance.ephemeral() as instance:
        _merge(instance)
        # another version of the merge's code (what an upgrade brings)
        dagster_env.setattr(
            golden_assets, "code_digest", lambda modules: "another version", raising=False
        )
        people = _people("salesforce", 12)
        people.loc[0, "city"] = "Lund"
        core.replace_source_records(engine, "salesforce", people)
        again = _merge(instance)
        assert again["merged_records"] == again["dagster/row_count"], again
    engine.dispose()


def test_with_publishing_a_merge_of_a_part_leaves_what_a_merge_of_everything_would(
    dagster_env, tmp_path: Path
):
    """The sandbox with its publish targets: writes acknowledged since the last merge
    change what echo safety takes as a target's own word."""
    from custsync_pipeline.sandbox.server import Sandbox
    from custsync_pipeline_tests.e2e import materialize_all

    for k, v in SANDBOX_SECRETS.items():
        dagster_env.setenv(k, v)
    with Sandbox(seed=23, people=400, base_port=0) as sb:
        db_url, _ = run_against_sandbox(dagster_env, tmp_path, sb.urls)
        engine = StateDB(db_url).engine
        with dg.DagsterInstance.ephemeral() as instance:
            assert materialize_all(instance).success
            for system in ("salesforce", "voyado", "voucherify", "icomm"):
                sb.changes(system, edit=6, delete=2, add=3, seed=5)
            assert materialize_all(instance).success  # merges a part, then publishes
            assert materialize_all(instance).success  # reads back what it wrote
            part = _merge(instance)  # what the last publish changed
            full = _merge_everything(engine, instance)
            assert full["changed_records"] == 0, (part, full)
        engine.dispose()


def test_a_merge_with_nothing_in_its_scope_changes_nothing(dagster_env, tmp_path: Path):
    """The inputs moved but no golden record's did (a write the identity map does not
    name): the merge redoes nothing and removes nothing."""
    engine = _state(dagster_env, tmp_path)
    core.replace_source_records(engine, "salesforce", _people("salesforce", 12))
    with dg.DagsterInstance.ephemeral() as instance:
        first = _merge(instance)
        with engine.begin() as conn:
            conn.execute(sa.text("delete from table_digests where name = 'golden_inputs'"))
        again = _merge(instance)
        assert again["merged_records"] == 0, again
        assert again["dagster/row_count"] == first["dagster/row_count"], again
        assert again["changed_records"] == again["retired_ids"] == 0, again
        full = _merge_everything(engine, instance)
        assert full["changed_records"] == 0, full
    engine.dispose()


def test_with_current_data_as_the_source_a_merge_of_a_part_leaves_what_everything_would(
    dagster_env, tmp_path: Path
):
    """Seed 001's ``current_data`` source: every stored golden record is the first step
    of its own merge (a record whose members left stays)."""
    engine = _state(dagster_env, tmp_path)
    cfg = Path(tmp_path / "sync.yaml")
    data = yaml.safe_load(cfg.read_text())
    data["flow"]["source"] = "current_data"
    data["flow"]["enrichments"].insert(
        0, {"connector": "salesforce", "aspects": ["name", "customer_contact_details"]}
    )
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    people = _people("salesforce", 12)
    people["phone"] = [f"+4670123{i:04d}" for i in range(12)]
    core.replace_source_records(engine, "salesforce", people)
    with dg.DagsterInstance.ephemeral() as instance:
        _merge(instance)
        people.loc[0, "first_name"] = "Changed"
        people.loc[1, "phone"] = None
        core.replace_source_records(engine, "salesforce", people.drop(index=2))
        part = _merge(instance)
        assert part["merged_records"] < part["dagster/row_count"], part
        full = _merge_everything(engine, instance)
        assert full["changed_records"] == 0, (part, full)
    engine.dispose()
