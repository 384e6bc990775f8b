"""Builds the extract area's definitions from the sync config (lanes follow the configured connectors).

Each lane gets its assets and its four asset checks (valid-row rate, duplicate
source ids, freshness, schema drift) with the thresholds of
``connectors.<name>.quality``.
"""

import dagster as dg

from custsync_pipeline.config import current_plan
from custsync_pipeline.defs.extract.assets import build_extract_assets
from custsync_pipeline.defs.extract.changes import build_changes_assets
from custsync_pipeline.defs.extract.checks import build_extract_checks
from custsync_pipeline.domain.plan import SyncPlan


def build_lane_checks(plan: SyncPlan) -> list[dg.AssetChecksDefinition]:
    """The asset checks of every enabled connector's lane, thresholds from its ``quality``."""
    checks: list[dg.AssetChecksDefinition] = []
    for name, conn in plan.connectors.items():
        q = conn.quality
        checks += build_extract_checks(
            name,
            min_valid_rate=q.min_valid_rate,
            min_rows=q.min_rows,
            max_duplicate_rate=q.max_duplicate_rate,
            max_age_hours=q.max_age_hours,
        )
    return checks


@dg.definitions
def defs() -> dg.Definitions:
    plan = current_plan()
    return dg.Definitions(
        assets=[*build_extract_assets(plan), *build_changes_assets(plan)],
        asset_checks=build_lane_checks(plan),
    )
