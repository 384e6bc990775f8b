"""Jobs and schedules: the sync job (every asset, in dependency order) on a schedule."""

import dagster as dg

sync_job = dg.define_asset_job(
    name="sync_job",
    selection=dg.AssetSelection.all(),
    description="Extract every connector, validate, resolve identities, merge golden records, publish deltas.",
)

sync_schedule = dg.ScheduleDefinition(
    name="sync_every_15_minutes",
    job=sync_job,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[sync_job], schedules=[sync_schedule])
