"""Builds the golden area's definitions from the sync config (lanes follow the configured connectors)."""

import dagster as dg

from custsync_pipeline.config import load_sync_config
from custsync_pipeline.defs.golden.assets import build_golden_assets


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=build_golden_assets(load_sync_config()))
