"""``custsync run`` launches runs that belong to the ``custsync`` code location (issue 11
item 6): the job page of the UI finds them (job name and the repository label the webserver
filters on), they carry the location's job origin, and their job snapshot is the one the
code location computes, so Re-execute sees the same version."""

from __future__ import annotations

import argparse
from pathlib import Path

import dagster as dg
import yaml

from custsync_pipeline import cli_run
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline_tests.e2e import run_against_sandbox

ROOT = Path(__file__).resolve().parent.parent


def test_custsync_run_files_its_run_under_the_code_location(dagster_env, tmp_path) -> None:
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.storage.tags import REPOSITORY_LABEL_TAG
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    entry = workspace["load_from"][0]["python_module"]
    assert entry["location_name"] == cli_run.LOCATION_NAME
    assert entry["module_name"] == cli_run.DEFINITIONS_MODULE
    with Sandbox(seed=5, people=30, base_port=0) as sb:
        run_against_sandbox(dagster_env, tmp_path, sb.urls, enabled={"salesforce", "voucherify"})
        assert cli_run.run(argparse.Namespace(config=None)) == 0

    with dg.DagsterInstance.get() as instance:
        label = f"__repository__@{cli_run.LOCATION_NAME}"
        # what the webserver asks for on the job page's Runs tab
        runs = instance.get_runs(
            filters=dg.RunsFilter(job_name="sync_job", tags={REPOSITORY_LABEL_TAG: label})
        )
        assert len(runs) == 1
        run = runs[0]
        assert run.status == dg.DagsterRunStatus.SUCCESS
        origin = run.remote_job_origin
        assert origin.location_name == cli_run.LOCATION_NAME
        assert origin.repository_origin.get_label() == label
        target = origin.repository_origin.code_location_origin.loadable_target_origin
        assert target.module_name == cli_run.DEFINITIONS_MODULE
        # the snapshot the code location serves: Re-execute finds the same version
        location_origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(module_name=cli_run.DEFINITIONS_MODULE),
            location_name=cli_run.LOCATION_NAME,
        )
        with location_origin.create_location(instance) as location:
            repo = location.get_repository("__repository__")
            served = repo.get_full_job("sync_job")
            assert run.job_snapshot_id == served.identifying_job_snapshot_id
