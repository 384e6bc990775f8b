"""Run monitoring is on in both Dagster instances (issue 10, item 5): the production
``dagster.yaml`` at the repo root (PostgreSQL) and the demo's (``scripts/demo_dagster.yaml``,
copied into ``.dagster_home`` by ``scripts/demo.sh`` and ``scripts/ui.sh``), so the daemon
marks a run whose process died instead of leaving it STARTED forever."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parent.parent


def _check(instance: dg.DagsterInstance) -> None:
    assert instance.run_monitoring_enabled
    assert 0 < instance.run_monitoring_max_runtime_seconds <= 24 * 3600
    assert instance.run_monitoring_start_timeout_seconds > 0


def test_demo_instance_monitors_runs(tmp_path: Path) -> None:
    shutil.copy(ROOT / "scripts" / "demo_dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        _check(instance)
    for script in ("demo.sh", "ui.sh"):
        text = (ROOT / "scripts" / script).read_text()
        assert 'cp scripts/demo_dagster.yaml "$DAGSTER_HOME/dagster.yaml"' in text, script


def test_production_instance_monitors_runs(tmp_path: Path, pg_url: str, monkeypatch) -> None:
    monkeypatch.setenv("DAGSTER_PG_URL", pg_url)
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        _check(instance)
