"""Jobs, schedules and sensors of the sync.

- ``sync_job``: every asset in dependency order (extract → identity → golden → publish);
  scheduled every 15 minutes (off by default).
- ``resolve_and_publish_job``: identity, golden records and publishing only, from the
  stored source records — the last good snapshot of every lane.
- ``continue_after_failed_lanes``: Dagster skips every step downstream of a failed one,
  so one connector that is down (or a feed blocked by its valid-row check) would stop
  identity, golden records and publishing for all the others. When a ``sync_job`` run
  failed only in extraction lanes, this sensor runs ``resolve_and_publish_job`` so the
  healthy connectors' changes still flow; the failed lane counts with its last good
  snapshot (a blocked feed never replaced it).
"""

from collections.abc import Iterable

import dagster as dg

from custsync_pipeline.config import SyncConfig, load_sync_config

DOWNSTREAM_GROUPS = ("identity", "golden", "publish")

sync_job = dg.define_asset_job(
    name="sync_job",
    selection=dg.AssetSelection.all(),
    description="Extract every connector, validate, resolve identities, merge golden records, publish deltas.",
)

resolve_and_publish_job = dg.define_asset_job(
    name="resolve_and_publish_job",
    selection=dg.AssetSelection.groups(*DOWNSTREAM_GROUPS),
    description=(
        "Resolve identities, merge golden records and publish deltas from the stored source "
        "records (every lane's last good snapshot), without extracting."
    ),
)

sync_schedule = dg.ScheduleDefinition(
    name="sync_every_15_minutes",
    job=sync_job,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)


def downstream_step_keys(cfg: SyncConfig) -> set[str]:
    """Step keys of the identity, golden and publish assets for this config."""
    from custsync_pipeline.defs.golden.assets import build_golden_assets
    from custsync_pipeline.defs.identity.assets import build_identity_assets
    from custsync_pipeline.defs.publish.assets import build_publish_assets

    assets = [*build_identity_assets(cfg), *build_golden_assets(cfg), *build_publish_assets(cfg)]
    return {a.node_def.name for a in assets}


def only_lanes_failed(failed_step_keys: Iterable[str], cfg: SyncConfig) -> bool:
    """True when some steps failed and none of them is downstream of extraction.

    A failure in identity, golden or publish is not retried here: running the same
    steps again on the same state would fail the same way (publish failures are
    retried from the outbox instead).
    """
    failed = set(failed_step_keys)
    return bool(failed) and not (failed & downstream_step_keys(cfg))


@dg.run_failure_sensor(
    name="continue_after_failed_lanes",
    monitored_jobs=[sync_job],
    request_job=resolve_and_publish_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "When a sync_job run failed only in extraction lanes, resolve and publish from the "
        "stored records so the healthy connectors' changes still flow."
    ),
)
def continue_after_failed_lanes(context: dg.RunFailureSensorContext):
    failed = sorted({e.step_key for e in context.get_step_failure_events() if e.step_key})
    if not only_lanes_failed(failed, load_sync_config()):
        return dg.SkipReason(
            f"run {context.dagster_run.run_id} failed downstream of extraction "
            f"({', '.join(failed) or 'no step failure'}): nothing to continue"
        )
    context.log.info(f"lanes failed in run {context.dagster_run.run_id}: {', '.join(failed)}")
    return dg.RunRequest(
        run_key=f"continue-{context.dagster_run.run_id}",
        tags={"custsync/continues_run": context.dagster_run.run_id},
    )


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        jobs=[sync_job, resolve_and_publish_job],
        schedules=[sync_schedule],
        sensors=[continue_after_failed_lanes],
    )
