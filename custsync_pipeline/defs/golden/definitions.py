"""Builds the golden area's definitions from the sync config (the sync plan, parsed once per process)."""

import dagster as dg

from custsync_pipeline.config import current_plan
from custsync_pipeline.defs.golden.assets import build_golden_assets


@dg.definitions
def defs() -> dg.Definitions:
    defs_ = build_golden_assets(current_plan())
    return dg.Definitions(
        assets=[d for d in defs_ if not isinstance(d, dg.AssetChecksDefinition)],
        asset_checks=[d for d in defs_ if isinstance(d, dg.AssetChecksDefinition)],
    )
