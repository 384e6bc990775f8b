"""The valid-row gate says what it did (issue 15): on a first run there is nothing to keep,
and it says so; later it names how many records of the last good run it kept. A real file
lane materialized by Dagster on a real SQLite state DB."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from custsync_pipeline.config import load_sync_config
from custsync_pipeline.defs.extract.assets import build_extract_assets
from custsync_pipeline.defs.io import ParquetIOManager
from custsync_pipeline.defs.resources import build_resources
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB

GOOD = "id,first,last,email\n" + "".join(f"{i},A{i},B{i},p{i}@example.se\n" for i in range(10))
BAD = "id,first,last,email\n1,A,B,a@example.se\n2,x\n3,y\n4,z\n"  # 3 of 4 rows ragged


@pytest.fixture
def file_lane(monkeypatch, tmp_path: Path):
    export = tmp_path / "export.csv"
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    config = {
        "state_db_url": url,
        "connectors": {
            "export": {
                "type": "file",
                "role": "source",
                "options": {
                    "path": str(export),
                    "id_field": "id",
                    "mapping": {"first": "first_name", "last": "last_name", "email": "email"},
                    "static": {"kind": "person"},
                },
            }
        },
        "identity": {"identifiers": [{"name": "email", "columns": ["email"], "priority": 3}]},
        "flow": {"source": "export"},
        "publish": [],
    }
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("CUSTSYNC_CONFIG", str(path))
    monkeypatch.delenv("CUSTSYNC_STATE_DB_URL", raising=False)
    cfg = load_sync_config()
    assets = build_extract_assets(cfg.plan())
    resources = {
        **build_resources(cfg),
        "io_manager": ParquetIOManager(base_dir=str(tmp_path / "storage")),
    }

    def run(text: str) -> tuple[str, dict[str, object]]:
        export.write_text(text)
        with dg.DagsterInstance.ephemeral() as instance:
            result = dg.materialize(assets, resources=resources, instance=instance)
            logs = [e.user_message for e in instance.all_logs(result.run_id)]
        warning = next((m for m in logs if "valid-row" in m or "below" in m), "")
        mat = next(
            m
            for m in result.get_asset_materialization_events()
            if m.asset_key == dg.AssetKey(["export", "customers"])
        )
        meta = {
            k: getattr(v, "value", v)
            for k, v in mat.event_specific_data.materialization.metadata.items()
        }
        return warning, meta

    yield run, url


def test_first_run_below_the_gate_says_there_was_nothing_to_keep(file_lane):
    run, url = file_lane
    warning, meta = run(BAD)
    assert "no earlier good run to keep" in warning
    assert "last good run" not in warning.replace("no earlier good run", "")
    assert meta["source_records_replaced"] is False and meta["source_records_kept"] == 0
    engine = StateDB(url).engine
    assert core.source_record_counts(engine).get("export", 0) == 0
    engine.dispose()


def test_a_later_run_below_the_gate_names_the_records_it_kept(file_lane):
    run, _ = file_lane
    _, first = run(GOOD)
    assert first["source_records_replaced"] is True and first["stored"] == 10
    warning, meta = run(BAD)
    assert "the 10 source records of the last good run kept" in warning
    assert meta["source_records_kept"] == 10
