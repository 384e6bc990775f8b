"""``<target>/reconciliation_report``: how each target stands against the golden records
after its publish step, as numeric metadata the Dagster UI plots over runs.

Counts, per target (its writable records only: Salesforce Contacts, not Leads):

- ``in_sync``: members of golden records it takes that matched the golden values;
- ``drifted``: members that differed (a hand edit there, or a golden change) and got a
  corrective update this run; ``corrected``: of those, acknowledged by the target;
- ``missing``: golden records it takes with no record there (queued as creates);
  ``created``: of those, acknowledged; ``deleted_there``: golden records someone deleted
  there, never created again (one custsync deleted is created again when the person is
  back at the source);
- ``extra``: records beyond one per golden record (duplicates), or of a golden record
  that no longer lives;
- ``pending_deletes``: golden records gone from the source of truth, inside the grace
  period, still held there; ``deletes_due``: past it and still held, the delete or archive
  not acknowledged (queued or failed; an archived record stays held by design, and a record
  deleted this run was read before the delete);
- ``dead_letters``: outbox rows the target refused for good; ``failed``: retried ones;
- ``conflicts_open``: target-side changes waiting in the review queue.

Part of ``sync_job`` and of the nightly ``reconciliation_job`` (which reads full
snapshots, so its report sees every target's real state).
"""

import dagster as dg
import pandas as pd

from custsync_pipeline.defs.golden.assets import GOLDEN_CUSTOMERS
from custsync_pipeline.defs.identity.assets import IDENTITY_MAP
from custsync_pipeline.defs.publish.assets import (
    SOURCE_DELETIONS,
    deleted_by_custsync,
    deltas_key,
    published_key,
)
from custsync_pipeline.defs.resources import connector_resource_key
from custsync_pipeline.domain.deltas import hold_back
from custsync_pipeline.domain.plan import PublishPolicy, SyncPlan
from custsync_pipeline.store import conflicts as conflict_store
from custsync_pipeline.store import core, presence

REPORT_COUNTS = (
    "in_sync",
    "drifted",
    "corrected",
    "missing",
    "created",
    "deleted_there",
    "extra",
    "pending_deletes",
    "deletes_due",
    "dead_letters",
    "failed",
    "conflicts_open",
)


def report_key(target: str) -> dg.AssetKey:
    return dg.AssetKey([target, "reconciliation_report"])


def reconciliation_counts(
    golden: pd.DataFrame,
    members: pd.DataFrame,
    deltas: pd.DataFrame,
    outbox: pd.DataFrame,
    target: PublishPolicy,
    gone_in_target: set[str],
    source_gone: pd.Series,
    grace_runs: int,
    conflicts_open: int,
    write_object: str | None = None,
    holders: pd.Series | None = None,
) -> dict[str, int]:
    """The report's counts (see the module docstring) from frames: ``members`` are the
    target's writable records with their golden ids, as this run read them; ``deltas``
    what this run queued; ``outbox`` the target's rows now (after publishing).
    ``members`` may hold records of other types (a Lead): they count as holding their golden
    record (it is not missing there), not as records custsync writes."""
    takes, _ = hold_back(golden, target.kinds, target.required_fields)
    # someone else's deletes (``holders``: the record the target last held of each)
    gone_in_target = gone_in_target - deleted_by_custsync(outbox, holders)
    due = set(source_gone.index[source_gone >= grace_runs])
    pending = set(source_gone.index[source_gone < grace_runs])
    taken = set(takes["golden_id"].astype(str)) - due
    live = set(golden["golden_id"].astype(str))
    held_any = set(members["golden_id"].astype(str))  # a Lead holds its golden record too
    if "object_type" in members and write_object is not None:
        members = members[members["object_type"] == write_object]
    gids = members["golden_id"].astype(str)
    per_golden = gids.value_counts()
    held = set(per_golden.index)
    status = outbox.set_index("entity_key")["status"] if len(outbox) else pd.Series(dtype=str)
    keys = deltas["entity_key"].astype(str) if len(deltas) else pd.Series(dtype=str)
    archive = (
        deltas["payload_hash"].astype(str).str.startswith("archive:")
        if len(deltas)
        else pd.Series(dtype=bool)
    )
    is_update = (
        (~keys.str.startswith("new:") & (deltas["op"] == "upsert") & ~archive)
        if len(deltas)
        else pd.Series(dtype=bool)
    )
    updates = keys[is_update]
    creates = keys[keys.str.startswith("new:")]
    acked = set(status.index[status == "acked"])
    # golden records whose delete or archive the target acknowledged: no longer due
    done = set()
    if len(outbox):
        gone_op = (outbox["op"] == "delete") | outbox["payload_hash"].astype(str).str.startswith(
            "archive:"
        )
        done = set(outbox.loc[gone_op & (outbox["status"] == "acked"), "golden_id"].astype(str))
    held_taken = held & taken
    drifted = int(updates.isin(list(members["source_id"].astype(str))).sum())
    return {
        "in_sync": max(len(held_taken) - drifted, 0),
        "drifted": drifted,
        "corrected": int(updates.isin(acked).sum()),
        "missing": len(taken - held_any - gone_in_target),
        "created": int(creates.isin(acked).sum()),
        "deleted_there": len(gone_in_target & taken),
        "extra": int((per_golden[per_golden.index.isin(live)] - 1).clip(lower=0).sum())
        + int((~gids.isin(live)).sum()),
        "pending_deletes": len(pending & held),
        "deletes_due": len((due & held) - done),
        "dead_letters": int((outbox["status"] == "dead").sum()) if len(outbox) else 0,
        "failed": int((outbox["status"] == "failed").sum()) if len(outbox) else 0,
        "conflicts_open": int(conflicts_open),
    }


def _report_asset(plan: SyncPlan, target: PublishPolicy) -> dg.AssetsDefinition:
    name = target.connector
    api_key = connector_resource_key(name)

    @dg.asset(
        key=report_key(name),
        group_name="publish",
        ins={
            "golden_customers": dg.AssetIn(key=GOLDEN_CUSTOMERS),
            "identity_map": dg.AssetIn(key=IDENTITY_MAP),
            "outbound_deltas": dg.AssetIn(key=deltas_key(name)),
        },
        deps=[published_key(name), SOURCE_DELETIONS],
        required_resource_keys={"state_db", api_key},
        kinds={"pandas"},
        owners=["team:custsync"],
        description=f"How {name} stands against the golden records after publishing: in "
        "sync, drifted, corrected, missing, extra, pending deletes, dead letters, conflicts.",
    )
    def reconciliation_report(
        context: dg.AssetExecutionContext,
        golden_customers: pd.DataFrame,
        identity_map: pd.DataFrame,
        outbound_deltas: pd.DataFrame,
    ) -> dg.MaterializeResult:
        engine = context.resources.state_db.engine
        connector = getattr(context.resources, api_key).connector()
        write_object = getattr(connector, "write_object", None)
        members = core.load_source_records(
            engine, [name], columns=["connector", "source_id", "object_type"]
        ).merge(
            identity_map[["connector", "source_id", "golden_id"]], on=["connector", "source_id"]
        )
        source_gone = pd.Series(dtype="int64")
        if not plan.uses_current_data:
            source_gone = presence.gone_runs(engine, presence.SOURCE_PREFIX + plan.source)
        gone_there = set(presence.gone_runs(engine, name).index)
        counts = reconciliation_counts(
            golden_customers,
            members,
            outbound_deltas,
            core.load_outbox(engine, name),
            target,
            gone_there,
            source_gone,
            plan.delete_grace_runs,
            len(conflict_store.load_field_conflicts(engine, name)),
            write_object=write_object,
            holders=presence.holders_of(engine, name, gone_there),
        )
        context.log.info(
            f"{name} reconciliation: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        )
        return dg.MaterializeResult(metadata={k: dg.IntMetadataValue(v) for k, v in counts.items()})

    return reconciliation_report


def build_report_assets(plan: SyncPlan) -> list[dg.AssetsDefinition]:
    return [_report_asset(plan, target) for target in plan.publish]
