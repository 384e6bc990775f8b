"""The one place that wires custsync together: every ``defs/<area>`` module plus the
resources built from the sync config (``$CUSTSYNC_CONFIG`` or the packaged default).

The config is parsed once per process (``config.current_config``); each area's
factory receives the domain's sync plan from it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

# Dagster's own default executor, built from its parts (private names: the version is
# pinned in pyproject.toml; test_definitions runs both modes, so a change fails there)
from dagster._core.definitions.executor_definition import (
    IN_PROC_CONFIG,
    MULTI_PROC_CONFIG,
    _core_in_process_executor_creation,
    _core_multiprocess_executor_creation,
    _get_default_executor_requirements,
)

from custsync_pipeline.config import current_config
from custsync_pipeline.defs.io import ParquetIOManager
from custsync_pipeline.defs.resources import build_resources

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dg.executor(
    name="in_process_unless_told",
    config_schema=dg.Field(
        dg.Selector({"multiprocess": MULTI_PROC_CONFIG, "in_process": IN_PROC_CONFIG}),
        default_value={"in_process": {}},
    ),
    requirements=_get_default_executor_requirements,
)
def in_process_unless_told(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Every job's executor: Dagster's default one (the same ``multiprocess`` / ``in_process``
    run config), but in one process unless the run config says ``multiprocess``. A run
    launched from the UI, a schedule or a sensor then runs as ``custsync run`` does:
    Dagster's default spawned a process per step, each importing Dagster, pandas and the
    project again (a demo run took about 250 s on 2 cores against 44 s in process).
    A job default run config would do the same but breaks every subset of the job
    (a sensor's lane run, a selection in the UI): its ops config names them all."""
    config = init_context.executor_config
    if "multiprocess" in config:
        return _core_multiprocess_executor_creation(config["multiprocess"])
    return _core_in_process_executor_creation(config["in_process"])


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
        dg.Definitions(
            resources={**resources, "io_manager": ParquetIOManager()},
            executor=in_process_unless_told,
        ),
    )
