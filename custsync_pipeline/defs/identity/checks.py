"""Checks of the identity step, on ``identity_map`` (both WARN: they ask a steward to look,
they do not stop the run; their numbers are plotted in the UI):

* ``conflict_rate`` — links refused or in doubt (the review queue, ``identity_conflicts``)
  per source record, at most ``MAX_CONFLICT_RATE`` (5%). More means the identifiers
  collide (a shared family e-mail, a store's placeholder phone) more than matching can
  settle alone.
* ``largest_cluster`` — the most source records resolved to one golden id, at most
  ``MAX_CLUSTER_SIZE`` (25). A person has a record or two per system; a cluster far
  larger is an over-merge (a value many people share used as an identifier).
"""

import dagster as dg
import pandas as pd

from custsync_pipeline.defs.identity.assets import IDENTITY_CONFLICTS, IDENTITY_MAP

MAX_CONFLICT_RATE = 0.05
MAX_CLUSTER_SIZE = 25


def cluster_sizes(identity_map: pd.DataFrame) -> pd.Series:
    """Source records per golden id."""
    if identity_map.empty:
        return pd.Series(dtype="int64")
    return identity_map["golden_id"].value_counts(sort=False)


def _held_map(context: dg.AssetCheckExecutionContext, columns: list[str] | None) -> object:
    """``columns`` of the stored ``identity_map`` output (None: its row count): a check
    reads what it counts, not a million-row output through an input."""
    io = context.resources.io_manager
    read = getattr(io, "held_columns" if columns else "held_rows", None)
    held = None if read is None else read(IDENTITY_MAP, columns) if columns else read(IDENTITY_MAP)
    if held is None:
        raise dg.Failure(
            f"identity_map has no stored output to check ({type(io).__name__}): "
            "materialize identity_map first"
        )
    return held


@dg.asset_check(
    asset=IDENTITY_MAP,
    name="conflict_rate",
    additional_ins={"conflicts": dg.AssetIn(key=IDENTITY_CONFLICTS)},
    required_resource_keys={"io_manager"},
    description=f"Links refused or in doubt per source record <= {MAX_CONFLICT_RATE:.0%} "
    "(identity_conflicts, the steward review queue).",
)
def conflict_rate(
    context: dg.AssetCheckExecutionContext, conflicts: pd.DataFrame
) -> dg.AssetCheckResult:
    records = int(_held_map(context, None))
    rate = len(conflicts) / records if records else 0.0
    by_kind = conflicts["kind"].value_counts() if "kind" in conflicts and len(conflicts) else {}
    return dg.AssetCheckResult(
        passed=rate <= MAX_CONFLICT_RATE,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(conflicts)} conflicts over {records} source records ({rate:.1%}); "
        f"threshold {MAX_CONFLICT_RATE:.0%}",
        metadata={
            "conflict_rate": float(rate),
            "threshold": float(MAX_CONFLICT_RATE),
            "conflicts": len(conflicts),
            "source_records": records,
            **{f"conflicts_{k}": int(v) for k, v in dict(by_kind).items()},
        },
    )


@dg.asset_check(
    asset=IDENTITY_MAP,
    name="largest_cluster",
    required_resource_keys={"io_manager"},
    description=f"At most {MAX_CLUSTER_SIZE} source records share one golden id "
    "(a larger cluster is an over-merge).",
)
def largest_cluster(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    sizes = cluster_sizes(_held_map(context, ["golden_id"]))
    largest = int(sizes.max()) if len(sizes) else 0
    over = int((sizes > MAX_CLUSTER_SIZE).sum())
    return dg.AssetCheckResult(
        passed=largest <= MAX_CLUSTER_SIZE,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"largest golden id holds {largest} source records; "
        f"{over} golden ids above {MAX_CLUSTER_SIZE}",
        metadata={
            "largest_cluster": largest,
            "threshold": MAX_CLUSTER_SIZE,
            "clusters_over_threshold": over,
            "mean_cluster": float(sizes.mean()) if len(sizes) else 0.0,
            "golden_ids": len(sizes),
        },
    )


IDENTITY_CHECKS = [conflict_rate, largest_cluster]
