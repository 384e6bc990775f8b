"""Checks of each publishing lane (both WARN; their numbers are plotted in the UI):

* ``no_dead_letters`` on ``<t>/published`` — outbox rows of the target that its API
  refused for good (``dead``: a 4xx no retry fixes; a 401/403 only when it was about that
  record alone — one refusing custsync's credential leaves the row queued). Each is a golden
  record the target does not hold as it should; the reasons are in the state DB's outbox
  (``last_error``).
* ``held_back_share`` on ``<t>/outbound_deltas`` — golden records the target does not take
  (a kind it does not serve, a required field missing, a market it does not serve, a key
  another record holds), at most ``MAX_HELD_BACK_SHARE`` (50%) of the golden records. A
  share above that is most often a target's ``kinds``/``required_fields`` set wrong.
"""

import dagster as dg

from custsync_pipeline.defs.golden.assets import GOLDEN_CUSTOMERS
from custsync_pipeline.defs.publish.assets import deltas_key, published_key
from custsync_pipeline.domain.plan import SyncPlan
from custsync_pipeline.store import core

MAX_HELD_BACK_SHARE = 0.5


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey, name: str) -> int:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return 0
    value = event.asset_materialization.metadata.get(name)
    return int(getattr(value, "value", value) or 0)


def _dead_letters_check(target: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=published_key(target),
        name="no_dead_letters",
        required_resource_keys={"state_db"},
        description=f"No {target} delta refused for good (dead-lettered) in the outbox.",
    )
    def no_dead_letters(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        counts = core.outbox_status_counts(context.resources.state_db.engine)
        mine = counts[counts["target"] == target]
        by_status = dict(zip(mine["status"], mine["n"].astype(int), strict=True))
        dead = int(by_status.get("dead", 0))
        return dg.AssetCheckResult(
            passed=dead == 0,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{dead} {target} deltas dead-lettered (reasons in the outbox)",
            metadata={
                "dead_lettered": dead,
                "failed": int(by_status.get("failed", 0)),
                "pending": int(by_status.get("pending", 0)),
                "sending": int(by_status.get("sending", 0)),
                "acked": int(by_status.get("acked", 0)),
            },
        )

    return no_dead_letters


def _held_back_check(target: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=deltas_key(target),
        name="held_back_share",
        description=f"Golden records {target} does not take <= {MAX_HELD_BACK_SHARE:.0%} "
        "of all golden records.",
    )
    def held_back_share(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        held = _latest(context.instance, deltas_key(target), "held_back")
        golden = _latest(context.instance, GOLDEN_CUSTOMERS, "dagster/row_count")
        share = held / golden if golden else 0.0
        return dg.AssetCheckResult(
            passed=share <= MAX_HELD_BACK_SHARE,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{held} of {golden} golden records held back from {target} "
            f"({share:.0%}); threshold {MAX_HELD_BACK_SHARE:.0%}",
            metadata={
                "held_back": held,
                "golden_records": golden,
                "held_back_share": float(share),
                "threshold": float(MAX_HELD_BACK_SHARE),
            },
        )

    return held_back_share


def build_publish_checks(plan: SyncPlan) -> list[dg.AssetChecksDefinition]:
    return [
        check
        for target in plan.publish
        for check in (_dead_letters_check(target.connector), _held_back_check(target.connector))
    ]
