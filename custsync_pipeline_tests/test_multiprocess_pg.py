"""The sync job on Dagster's multiprocess executor with the state DB and the instance on
PostgreSQL (the set-up for more than one core: each lane a process of its own), and the
steps that skip their work when nothing they read changed.

Runs three times against the sandbox over real sockets: the first run (multiprocess)
resolves and merges everything; the second (in process, as the third), with nothing
changed at the sources, uses the stored identity map and golden records as they are (no
resolution, no merge, no golden write); the third, after records changed in Salesforce,
resolves and merges again.
"""

from __future__ import annotations

import os

import dagster as dg
import pytest
import yaml

from custsync_pipeline.definitions import multiprocess_run_config
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import postgres_instance, write_sync_config

MULTIPROCESS = multiprocess_run_config(2)


def sync_job() -> dg.JobDefinition:
    """The project's sync job, rebuilt in every step process from the definitions."""
    from custsync_pipeline.definitions import defs

    return defs().resolve_job_def("sync_job")


@pytest.fixture
def sandbox():
    with Sandbox(seed=5, people=80, base_port=0) as sb:
        yield sb


def _run(instance: dg.DagsterInstance) -> tuple[dict[str, dict[str, object]], set[int]]:
    """One run of the sync job: each asset's metadata, and the processes its steps ran in."""
    from custsync_pipeline.cli_run import materialization_metadata

    with dg.execute_job(
        dg.reconstructable(sync_job), instance=instance, run_config=MULTIPROCESS
    ) as result:
        assert result.success, [
            e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"
        ]
        pids = {
            e.pid
            for e in result.all_events
            if e.event_type_value == "STEP_START" and e.pid is not None
        }
        return materialization_metadata(result), pids  # type: ignore[arg-type]


def _run_here(instance: dg.DagsterInstance) -> dict[str, dict[str, object]]:
    from custsync_pipeline.cli_run import materialization_metadata

    return materialization_metadata(sync_job().execute_in_process(instance=instance))


def test_sync_job_multiprocess_on_postgres_skips_unchanged_work(
    sandbox, dagster_env, tmp_path, pg_url
) -> None:
    # two lanes keep the step processes (each loads the definitions) few
    lanes = {"salesforce", "voucherify"}
    cfg_path = write_sync_config(tmp_path / "sync.yaml", sandbox.urls, pg_url, enabled=lanes)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["publish"] = []  # extraction, identity and golden records only: no write-back echo
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    dagster_env.setenv("CUSTSYNC_CONFIG", str(cfg_path))
    dagster_env.setenv("CUSTSYNC_STATE_DB_URL", pg_url)
    with postgres_instance(dagster_env, tmp_path, pg_url) as instance:
        first, pids = _run(instance)
        # every step in a process of its own, none in this one
        assert len(pids) > 2 and os.getpid() not in pids
        assert first["identity_map"]["resolution_skipped"] is False
        gold = first["golden_customers"]
        assert gold["merge_skipped"] is False and gold["changed_records"] > 0
        engine = StateDB(pg_url).engine
        n_golden = len(core.load_golden_records(engine))
        assert n_golden == gold["dagster/row_count"] > 0

        # the later runs in this process (a multiprocess run costs a definitions load per step)
        second = _run_here(instance)
        assert second["identity_map"]["resolution_skipped"] is True
        again = second["golden_customers"]
        assert again["merge_skipped"] is True
        assert again["dagster/row_count"] == n_golden and again["changed_records"] == 0

        touched = sandbox.changes("salesforce", edit=5, seed=3)
        assert touched
        third = _run_here(instance)
        assert third["identity_map"]["resolution_skipped"] is False
        changed = third["golden_customers"]
        assert changed["merge_skipped"] is False and changed["changed_records"] > 0
        engine.dispose()
