"""The reconciliation job and its nightly schedule.

``sync_job`` pulls incrementally (the changes since each lane's watermark); once a night
``reconciliation_job`` reads **full snapshots** of every connector (run tag
``custsync/full_snapshot``): what an incremental pull cannot see — a delete with no delete
feed (Voucherify), an edit that did not touch the change time, a window a missed run
skipped — is caught, the stored records are replaced, and the publish steps compare every
target's real state with the golden records: drift becomes corrective deltas, conflicts are
counted by the identity step, and each target's ``<t>/reconciliation_report`` (in sync,
drifted, corrected, missing, extra, pending deletes, dead letters, open conflicts) is the
night's drift report. A lane that fails does not stop the others: the
``continue_after_failed_lanes`` sensor watches this job too and resolves, publishes and
reports from the stored records of every lane.
"""

import dagster as dg

from custsync_pipeline.defs.extract.changes import unpartitioned_assets
from custsync_pipeline.defs.extract.pulls import FULL_SNAPSHOT_TAG

reconciliation_job = dg.define_asset_job(
    name="reconciliation_job",
    selection=unpartitioned_assets(),
    tags={FULL_SNAPSHOT_TAG: "true"},
    description=(
        "Full snapshots of every connector (not the changes since the watermark): stored "
        "records replaced, deletes without a feed caught, every target compared with the "
        "golden records and its drift sent as corrective deltas, conflicts counted; each "
        "target's reconciliation_report is the drift report."
    ),
)

nightly_reconciliation = dg.ScheduleDefinition(
    name="nightly_reconciliation",
    job=reconciliation_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        "02:00 UTC: reconciliation_job, full snapshots of every connector and corrective "
        "deltas for drift in every target (off by default)."
    ),
)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[reconciliation_job], schedules=[nightly_reconciliation])
