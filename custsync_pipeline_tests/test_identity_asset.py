"""The identity Dagster asset on a real SQLite state DB: its numeric resolution metadata."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import yaml

from custsync_pipeline.config import DEFAULT_CONFIG_PATH, load_sync_config
from custsync_pipeline.defs.identity.assets import build_identity_assets
from custsync_pipeline.defs.resources import StateDBResource, build_resources
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB


def _config(tmp_path: Path, db_url: str) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["state_db_url"] = db_url
    for name, conn in data["connectors"].items():
        conn["enabled"] = name in {"salesforce", "voucherify"}
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _materialize(cfg_path: Path, db_url: str) -> dict[str, dict]:
    cfg = load_sync_config(str(cfg_path))
    result = dg.materialize(
        build_identity_assets(cfg.plan()),
        resources={**build_resources(cfg), "state_db": StateDBResource(url=db_url)},
    )
    assert result.success
    out = {}
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        out[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    return out


def test_identity_asset_publishes_merges_splits_new_ids_and_conflicts(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    cfg_path = _config(tmp_path, db_url)
    engine = StateDB(db_url).create_all().engine
    sf = pd.DataFrame(
        [
            dict(connector="salesforce", source_id="003A", salesforce_id="003A", email="al@x.se", first_name="Al"),
            dict(connector="salesforce", source_id="003B", salesforce_id="003B", email="fam@x.se", first_name="Bo"),
            dict(connector="salesforce", source_id="003C", salesforce_id="003C", email="fam@x.se", first_name="Cy"),
        ]
    )  # fmt: skip
    vc = pd.DataFrame(
        [dict(connector="voucherify", source_id="v1", voucherify_source_id="v1", email="al@x.se", first_name="Al")]
    )  # fmt: skip
    core.replace_source_records(engine, "salesforce", sf)
    core.replace_source_records(engine, "voucherify", vc)
    first = _materialize(cfg_path, db_url)["identity_map"]
    assert first["new_golden_ids"] == 3 and first["merges"] == 0 and first["splits"] == 0
    assert first["conflicts_name_mismatch"] == 1 and first["conflicts"] == 1

    # v1 changes its email: it splits off Al's golden record
    core.replace_source_records(engine, "voucherify", vc.assign(email="new@x.se"))
    second = _materialize(cfg_path, db_url)
    assert second["identity_map"]["splits"] == 1
    assert second["identity_map"]["new_golden_ids"] == 1
    assert second["identity_conflicts"]["conflicts_name_mismatch"] == 1
    bad = {
        k: v
        for k, v in second["identity_map"].items()
        if k != "path" and not isinstance(v, (int, float))  # path: the test IO manager
    }
    assert not bad
