"""A file connector whose mapping names a column the export does not have (a typo, a
renamed column): a full read names it — a warning in the lane's log, the raw asset's
``mapped_columns_absent`` metadata and a failed ``schema_drift`` check, first run
included — instead of reading it as a value missing in every row."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import yaml

from custsync_pipeline_tests.e2e import materialize_all

CSV = """CustomerId,FirstName,Surname,Email,Updated
k1,Anna,Berg,anna@x.se,2026-05-01T10:00:00Z
k2,Bo,Ek,bo@x.se,2026-05-02T10:00:00Z
"""


def _run(tmp_path: Path, monkeypatch, mapping: dict[str, str]):  # noqa: ANN001, ANN202
    export = tmp_path / "customers.csv"
    export.write_text(CSV)
    db = f"sqlite:///{tmp_path / 'state.sqlite'}"
    cfg = {
        "state_db_url": db,
        "connectors": {
            "shopfile": {
                "type": "file",
                "role": "source",
                "options": {
                    "path": str(export),
                    "id_field": "CustomerId",
                    "updated_field": "Updated",
                    "mapping": mapping,
                },
            }
        },
        "flow": {"source": "shopfile"},
        "publish": [],
    }
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("CUSTSYNC_CONFIG", str(path))
    monkeypatch.setenv("CUSTSYNC_STATE_DB_URL", db)
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize_all(instance, raise_on_error=False)
        warned = [
            e.user_message for e in instance.all_logs(result.run_id) if e.level >= logging.WARNING
        ]
    return result, warned


def _drift_and_metadata(result: dg.ExecuteInProcessResult):  # noqa: ANN202
    drift = next(e for e in result.get_asset_check_evaluations() if e.check_name == "schema_drift")
    raw = next(
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey(["shopfile", "raw_customers"])
    )
    meta = raw.step_materialization_data.materialization.metadata
    return drift, meta["mapped_columns_absent"].value


def test_a_mapped_column_the_file_lacks_is_named_on_the_first_run(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    mapping = {
        "FirstName": "first_name",
        "LastName": "last_name",  # the export calls it Surname
        "Email": "email",
        "Lang": "language",  # not exported at all
    }
    result, warned = _run(tmp_path, monkeypatch, mapping)
    drift, absent = _drift_and_metadata(result)
    assert absent == ["Lang", "LastName"]
    assert not drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
    assert "['Lang', 'LastName']" in drift.description
    assert drift.metadata["mapped_absent"].value == ["Lang", "LastName"]
    assert any("no column ['Lang', 'LastName']" in m for m in warned), warned
    # the records are still read: the columns that are there carry their values
    assert result.success


def test_a_mapping_the_file_answers_passes(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    mapping = {"FirstName": "first_name", "Surname": "last_name", "Email": "email"}
    result, warned = _run(tmp_path, monkeypatch, mapping)
    drift, absent = _drift_and_metadata(result)
    assert absent == [] and drift.passed
    assert not any("the config reads" in m for m in warned)
