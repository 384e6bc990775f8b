"""Builds the extract area's definitions from the sync config (lanes follow the configured connectors)."""

import dagster as dg

from custsync_pipeline.config import load_sync_config
from custsync_pipeline.defs.extract.assets import build_extract_assets


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=build_extract_assets(load_sync_config()))
