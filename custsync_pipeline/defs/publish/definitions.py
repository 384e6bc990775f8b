"""Builds the publish area's definitions from the sync config (lanes follow the configured connectors)."""

import dagster as dg

from custsync_pipeline.config import load_sync_config
from custsync_pipeline.defs.publish.assets import build_publish_assets


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=build_publish_assets(load_sync_config()))
