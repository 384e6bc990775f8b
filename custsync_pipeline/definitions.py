"""The one place that wires custsync together: every ``defs/<area>`` module plus the
resources built from the sync config (``$CUSTSYNC_CONFIG`` or the packaged default).

The config is parsed once per process (``config.current_config``); each area's
factory receives the domain's sync plan from it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from custsync_pipeline.config import current_config
from custsync_pipeline.defs.io import ParquetIOManager
from custsync_pipeline.defs.resources import build_resources

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# the jobs' default run config: a run launched from the UI, a schedule or a sensor runs its
# steps in one process, as ``custsync run`` does. Dagster's default (a spawned process per
# step) imported Dagster, pandas and the project again for each of ~46 steps: a run that
# takes 44 s in process took about 250 s on 2 cores. More cores: the launchpad takes
# ``multiprocess_run_config`` (README, "More cores").
IN_PROCESS_RUN_CONFIG: dict = {"execution": {"config": {"in_process": {}}}}


def multiprocess_run_config(max_concurrent: int) -> dict:
    """Run config for Dagster's multiprocess executor (the README's "More cores").

    Step processes fork from a server that imported this module once: a spawned process
    would import Dagster, pandas and the project again for every step (about 1.5 s of CPU
    each; building the definitions still happens per step). The server starts with the
    first run of the process and keeps that run's environment: one process running jobs
    for several configs (``CUSTSYNC_CONFIG``, ``CUSTSYNC_STATE_DB_URL``) must not use it.
    """
    return {
        "execution": {
            "config": {
                "multiprocess": {
                    "max_concurrent": max_concurrent,
                    "start_method": {"forkserver": {"preload_modules": [__name__]}},
                }
            }
        }
    }


@dg.definitions
def defs() -> dg.Definitions:
    resources = build_resources(current_config())
    return dg.Definitions.merge(
        dg.load_from_defs_folder(project_root=PROJECT_ROOT),
        dg.Definitions(resources={**resources, "io_manager": ParquetIOManager()}),
    )
