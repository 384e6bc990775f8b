"""The one place that wires custsync together: every ``defs/<area>`` module plus the
resources built from the sync config (``$CUSTSYNC_CONFIG`` or the packaged default)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from custsync_pipeline.config import CONFIG_ENV_VAR, load_sync_config
from custsync_pipeline.defs.io import ParquetIOManager
from custsync_pipeline.defs.resources import build_resources

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dg.definitions
def defs() -> dg.Definitions:
    cfg = load_sync_config()
    resources = build_resources(cfg, config_path=os.environ.get(CONFIG_ENV_VAR, ""))
    return dg.Definitions.merge(
        dg.load_from_defs_folder(project_root=PROJECT_ROOT),
        dg.Definitions(resources={**resources, "io_manager": ParquetIOManager()}),
    )
