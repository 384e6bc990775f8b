"""Steps that find nothing new to do leave their last outputs in place (issue 14: a rerun
of a million records reads and writes no more than it must), over real sockets with a
real SQLite state DB: with nothing changed at the sources, the identity and golden steps
report the stored figures without reading (or counting) the map or the golden records
and without rewriting their outputs, and the steps after them read those outputs as before; an output
that is no longer on disk is written again."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from custsync_pipeline.defs.golden.assets import GOLDEN_CUSTOMERS
from custsync_pipeline.defs.identity.assets import (
    IDENTITY_CONFLICTS,
    IDENTITY_MAP,
    RESOLVED_FIGURES,
    resolved_figures,
    save_resolved,
)
from custsync_pipeline.defs.io import ParquetIOManager
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store import identity as identity_store
from custsync_pipeline.store.bulk import table_digests
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import materialize_all, metadata_of, run_against_sandbox


def _no_count(engine) -> None:
    raise AssertionError("the map was counted: the figures saved with it were not used")


def test_a_skipped_resolution_reports_the_figures_saved_with_its_map(tmp_path, monkeypatch):
    """The figures saved with a resolution (records, golden ids, review rows by kind) are
    what a run with the same inputs reports, uncounted; other inputs: counted."""
    engine = StateDB(f"sqlite:///{tmp_path / 'state.sqlite'}").create_all().engine
    id_map = pd.DataFrame(
        {
            "connector": ["a", "a", "b"],
            "source_id": ["1", "2", "3"],
            "golden_id": ["g1", "g1", "g2"],
        }
    )
    conflicts = pd.DataFrame({"kind": ["shared_value", "shared_value", "review"]})
    with engine.begin() as conn:
        assert save_resolved(conn, "inputs-1", id_map, conflicts) == 2
    with monkeypatch.context() as m:
        m.setattr(identity_store, "identity_figures", _no_count)
        assert resolved_figures(engine, "inputs-1") == (3, 2, {"shared_value": 2, "review": 1})
    assert resolved_figures(engine, "inputs-2") == (0, 0, {})  # the state DB's (empty) map
    engine.dispose()


def test_unchanged_steps_keep_their_outputs(dagster_env, tmp_path: Path) -> None:
    with Sandbox(seed=5, people=80, base_port=0, systems=["salesforce", "voucherify"]) as sb:
        # no write-back: the sources do not change between the runs
        url, _ = run_against_sandbox(
            dagster_env, tmp_path, sb.urls, {"salesforce", "voucherify"}, publish=False
        )
        io = ParquetIOManager()
        keys = (IDENTITY_MAP, IDENTITY_CONFLICTS, GOLDEN_CUSTOMERS)
        with dg.DagsterInstance.ephemeral() as instance:
            first = materialize_all(instance)
            written = {k: io.key_path(k).stat().st_mtime_ns for k in keys}
            rows = {k: io.held_rows(k) for k in keys}
            engine = StateDB(url).engine
            assert rows[GOLDEN_CUSTOMERS] == len(core.load_golden_records(engine)) > 0

            with pytest.MonkeyPatch.context() as m:  # the figures saved with the map
                m.setattr(identity_store, "identity_figures", _no_count)
                second = materialize_all(instance)
            ids = metadata_of(second, "identity_map")
            gold = metadata_of(second, "golden_customers")
            assert ids["resolution_skipped"] is True and gold["merge_skipped"] is True
            assert gold["changed_records"] == 0
            figures = {k: v for k, v in ids.items() if k.startswith("conflicts")}
            for key in ("dagster/row_count", "golden_ids", *figures):
                assert ids[key] == metadata_of(first, "identity_map")[key], key
            assert gold["dagster/row_count"] == rows[GOLDEN_CUSTOMERS]
            assert (
                gold["nameless_records"]
                == metadata_of(first, "golden_customers")["nameless_records"]
            )
            conflicts = metadata_of(second, "identity_conflicts")
            assert conflicts["dagster/row_count"] == rows[IDENTITY_CONFLICTS]
            # not rewritten, and still what the steps after them read
            assert {k: io.key_path(k).stat().st_mtime_ns for k in keys} == written

            io.key_path(IDENTITY_MAP).unlink()  # another storage dir, a cleaned disk
            io.key_path(GOLDEN_CUSTOMERS).unlink()
            third = materialize_all(instance)
            assert metadata_of(third, "identity_map")["resolution_skipped"] is True
            assert metadata_of(third, "golden_customers")["merge_skipped"] is True
            assert io.held_rows(IDENTITY_MAP) == rows[IDENTITY_MAP]
            assert io.held_rows(GOLDEN_CUSTOMERS) == rows[GOLDEN_CUSTOMERS]

            # a map file as many rows long that is not the stored map (another run's, a
            # restored state DB; no stamp of the stored map): written again, not kept
            held = pd.read_parquet(io.key_path(IDENTITY_MAP))
            other = held.assign(golden_id=held["golden_id"].iloc[::-1].to_numpy())
            other.attrs = {}
            other.to_parquet(io.key_path(IDENTITY_MAP), index=False)
            materialize_all(instance)
            again = pd.read_parquet(io.key_path(IDENTITY_MAP))
            stored = pd.read_sql("select connector, source_id, golden_id from identity_map", engine)
            both = again.merge(stored, on=["connector", "source_id"], suffixes=("", "_db"))
            assert len(both) == len(stored) == len(again)
            assert (both["golden_id"] == both["golden_id_db"]).all()

            # the saved figures gone (``custsync forget`` clears every digest): counted
            with engine.begin() as conn:
                conn.execute(table_digests.delete().where(table_digests.c.name == RESOLVED_FIGURES))
            counted = metadata_of(materialize_all(instance), "identity_map")
            assert counted["resolution_skipped"] is True
            assert {k: counted[k] for k in ids if k.startswith("conflicts")} == figures
            assert counted["golden_ids"] == ids["golden_ids"]

            sb.changes("salesforce", edit=4, seed=2)
            fourth = materialize_all(instance)
            assert metadata_of(fourth, "identity_map")["resolution_skipped"] is False
            assert metadata_of(fourth, "golden_customers")["changed_records"] > 0
            engine.dispose()


def test_an_edit_resolution_does_not_read_resolves_nothing_again(dagster_env, tmp_path: Path):
    """A KatanaPIM edit changes a customer attribute (an aspect entry) and the record's
    time, no column resolution reads: the stored map is used, the golden record changes."""
    with Sandbox(seed=6, people=60, base_port=0, systems=["salesforce", "katana"]) as sb:
        run_against_sandbox(dagster_env, tmp_path, sb.urls, {"salesforce", "katana"}, publish=False)
        with dg.DagsterInstance.ephemeral() as instance:
            first = materialize_all(instance)
            assert metadata_of(first, "identity_map")["resolution_skipped"] is False
            sb.changes("katana", edit=5, seed=4)
            second = materialize_all(instance)
            ids = metadata_of(second, "identity_map")
            assert ids["resolution_skipped"] is True, ids
            assert (
                ids["dagster/row_count"] == metadata_of(first, "identity_map")["dagster/row_count"]
            )
            gold = metadata_of(second, "golden_customers")
            assert gold["merge_skipped"] is False and gold["entry_changes"] > 0, gold
            sb.changes("salesforce", edit=3, seed=4)  # a city and postal code: read
            third = materialize_all(instance)
            assert metadata_of(third, "identity_map")["resolution_skipped"] is False
