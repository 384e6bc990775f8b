"""Builds the transactions area's definitions from the sync config (parsed once per process)."""

import dagster as dg

from custsync_pipeline.config import current_config
from custsync_pipeline.defs.transactions.assets import build_transaction_assets


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=build_transaction_assets(current_config()))
