"""Jobs, schedules and sensors of the sync.

- ``sync_job``: every asset in dependency order (extract → identity → golden → publish);
  scheduled every 15 minutes (off by default).
- ``resolve_and_publish_job``: identity, golden records, publishing and transactions
  only, from the stored source records — the last good snapshot of every lane.
- ``nightly_reconciliation`` / ``reconciliation_job``: in ``reconciliation.py`` (full
  snapshots at 02:00 UTC); the per-connector change sensors: in ``change_sensors.py``.
- ``publish_pending_deltas``: the outbox sensor. Deltas still pending or failed (a crash
  mid-publish, a 5xx that outlived the retries) are sent again by ``publish_job`` without
  waiting for the next sync; it stays quiet while a sync or publish run is in flight, but
  never waits on a dead one (a run left STARTED by a killed process: no event for
  ``runs.stale_run_s`` and no live state lease).
- ``continue_after_failed_lanes``: Dagster skips every step downstream of a failed one,
  so one connector that is down (or a feed blocked by its valid-row check) would stop
  identity, golden records and publishing for all the others. When a ``sync_job`` or
  ``reconciliation_job`` run failed only in extraction lanes, this sensor runs
  ``resolve_and_publish_job`` (which ends with every target's reconciliation report) so
  the healthy connectors' changes still flow; the failed lane counts with its last good
  snapshot (a blocked feed never replaced it).
"""

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg

from custsync_pipeline.config import current_config, current_plan
from custsync_pipeline.defs.automation.reconciliation import reconciliation_job
from custsync_pipeline.defs.extract.changes import unpartitioned_assets
from custsync_pipeline.defs.resources import StateDBResource
from custsync_pipeline.domain.plan import SyncPlan

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )
    from dagster._core.storage.dagster_run import RunRecord

# (transactions: the shop's orders, linked through the map and sent to the targets)
DOWNSTREAM_GROUPS = ("identity", "golden", "publish", "transactions")

sync_job = dg.define_asset_job(
    name="sync_job",
    # every asset but the day windows of <c>/changes (backfilled on their own)
    selection=unpartitioned_assets(),
    description="Extract every connector, validate, resolve identities, merge golden records, publish deltas.",
)

resolve_and_publish_job = dg.define_asset_job(
    name="resolve_and_publish_job",
    selection=dg.AssetSelection.groups(*DOWNSTREAM_GROUPS),
    description=(
        "Resolve identities, merge golden records and publish deltas from the stored source "
        "records (every lane's last good snapshot), without extracting customers; then the "
        "transactions (the shop's orders) when configured."
    ),
)

sync_schedule = dg.ScheduleDefinition(
    name="sync_every_15_minutes",
    job=sync_job,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        "Every 15 minutes: sync_job, each lane pulling the changes since its watermark, "
        "then identity, golden records and publishing (off by default)."
    ),
)


def publish_job_for(plan: SyncPlan) -> "UnresolvedAssetJobDefinition":
    """Sends what the outbox holds for every publish target (``<t>/published`` only)."""
    from custsync_pipeline.defs.publish.assets import published_key

    keys = [published_key(t.connector) for t in plan.publish]
    return dg.define_asset_job(
        name="publish_job",
        selection=dg.AssetSelection.assets(*keys),
        description="Send the outbox's pending and failed deltas (no extraction, no resolution).",
    )


IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def run_is_alive(
    instance: dg.DagsterInstance,
    record: "RunRecord",
    state_db: StateDBResource,
    stale_after_s: float,
) -> bool:
    """An in-flight run shows signs of life: an event (or a status change) in the last
    ``stale_after_s`` seconds, or the state lease held by it and not expired. A run whose
    process was killed does neither for long: its lease expires after the TTL."""
    from custsync_pipeline.defs.state_lease import LEASE_OWNER_TAG
    from custsync_pipeline.store import lease

    run = record.dagster_run
    last = record.update_timestamp.timestamp()
    events = instance.get_records_for_run(run_id=run.run_id, ascending=False, limit=1).records
    if events:
        last = max(last, events[0].event_log_entry.timestamp)
    if time.time() - last < stale_after_s:
        return True
    holder = lease.current(state_db.engine)
    owner = run.tags.get(LEASE_OWNER_TAG) or run.run_id
    return bool(holder and holder.owner == owner and holder.expires_at > datetime.now(UTC))


def build_outbox_sensor(job: "UnresolvedAssetJobDefinition") -> dg.SensorDefinition:
    @dg.sensor(
        name="publish_pending_deltas",
        job=job,
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends outbox deltas still pending or failed, between syncs.",
    )
    def publish_pending_deltas(context: dg.SensorEvaluationContext, state_db: StateDBResource):
        from custsync_pipeline.defs.publish.assets import published_key
        from custsync_pipeline.store import core

        records = context.instance.get_run_records(
            filters=dg.RunsFilter(statuses=IN_FLIGHT), limit=50
        )
        records = [
            r
            for r in records
            if r.dagster_run.job_name in ("sync_job", "resolve_and_publish_job", job.name)
        ]
        stale_after = current_config().runs.stale_run_s
        busy = [r for r in records if run_is_alive(context.instance, r, state_db, stale_after)]
        if busy:
            run = busy[0].dagster_run
            return dg.SkipReason(f"run {run.run_id} ({run.job_name}) is in flight")
        for r in records:  # a run whose process died stays STARTED: it is not waited on
            context.log.warning(
                f"run {r.dagster_run.run_id} ({r.dagster_run.job_name}) is "
                f"{r.dagster_run.status.value} but silent for over {stale_after} s with no "
                "live state lease: treated as dead (run monitoring will mark it)"
            )
        counts = core.outbox_status_counts(state_db.engine)
        waiting = counts[counts["status"].isin(core.QUEUED)]
        targets = sorted(set(waiting["target"]) & {t.connector for t in current_plan().publish})
        if not targets:
            return dg.SkipReason("nothing pending or failed in the outbox")
        n = int(waiting.loc[waiting["target"].isin(targets), "n"].sum())
        return dg.RunRequest(
            asset_selection=[published_key(t) for t in targets],
            tags={"custsync/outbox_rows": str(n)},
        )

    return publish_pending_deltas


def downstream_step_keys(plan: SyncPlan) -> set[str]:
    """Step keys of the identity, golden and publish assets for this config."""
    from custsync_pipeline.defs.golden.assets import build_golden_assets
    from custsync_pipeline.defs.identity.assets import build_identity_assets
    from custsync_pipeline.defs.publish.assets import build_publish_assets
    from custsync_pipeline.defs.publish.reconciliation import build_report_assets

    assets = [
        *build_identity_assets(plan),
        *build_golden_assets(plan),
        *build_publish_assets(plan),
        *build_report_assets(plan),
    ]
    return {a.node_def.name for a in assets if not isinstance(a, dg.AssetChecksDefinition)}


def only_lanes_failed(failed_step_keys: Iterable[str], plan: SyncPlan) -> bool:
    """True when some steps failed and none of them is downstream of extraction.

    A failure in identity, golden or publish is not retried here: running the same
    steps again on the same state would fail the same way (publish failures are
    retried from the outbox instead).
    """
    failed = set(failed_step_keys)
    return bool(failed) and not (failed & downstream_step_keys(plan))


@dg.run_failure_sensor(
    name="continue_after_failed_lanes",
    monitored_jobs=[sync_job, reconciliation_job],
    request_job=resolve_and_publish_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "When a sync_job or reconciliation_job run failed only in extraction lanes, resolve "
        "and publish from the stored records so the healthy connectors' changes still flow."
    ),
)
def continue_after_failed_lanes(context: dg.RunFailureSensorContext):
    failed = sorted({e.step_key for e in context.get_step_failure_events() if e.step_key})
    if not only_lanes_failed(failed, current_plan()):
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
    publish_job = publish_job_for(current_plan())
    return dg.Definitions(
        jobs=[sync_job, resolve_and_publish_job, publish_job],
        schedules=[sync_schedule],
        sensors=[continue_after_failed_lanes, build_outbox_sensor(publish_job)],
    )
