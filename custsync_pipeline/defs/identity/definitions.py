"""Builds the identity area's definitions from the sync config (lanes follow the configured connectors)."""

import dagster as dg

from custsync_pipeline.config import load_sync_config
from custsync_pipeline.defs.identity.assets import build_identity_assets


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=build_identity_assets(load_sync_config()))
