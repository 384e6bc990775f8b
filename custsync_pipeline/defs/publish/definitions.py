"""Builds the publish area's definitions from the sync config (the sync plan, parsed once per process)."""

import dagster as dg

from custsync_pipeline.config import current_plan
from custsync_pipeline.defs.publish.assets import build_publish_assets
from custsync_pipeline.defs.publish.checks import build_publish_checks
from custsync_pipeline.defs.publish.reconciliation import build_report_assets


@dg.definitions
def defs() -> dg.Definitions:
    plan = current_plan()
    return dg.Definitions(
        assets=[*build_publish_assets(plan), *build_report_assets(plan)],
        asset_checks=build_publish_checks(plan),
    )
