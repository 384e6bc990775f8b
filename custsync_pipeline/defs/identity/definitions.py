"""Builds the identity area's definitions from the sync config (the sync plan, parsed once per process)."""

import dagster as dg

from custsync_pipeline.config import current_plan
from custsync_pipeline.defs.identity.assets import build_identity_assets
from custsync_pipeline.defs.identity.checks import IDENTITY_CHECKS


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=build_identity_assets(current_plan()), asset_checks=IDENTITY_CHECKS
    )
