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


def _missing_map(context: dg.AssetCheckExecutionContext) -> dg.Failure:
    io = context.resources.io_manager
    return dg.Failure(
        f"identity_map has no readable stored output to check ({type(io).__name__}: "
        "missing or unreadable): materialize identity_map first"
    )


def _held_map_rows(context: dg.AssetCheckExecutionContext) -> int:
    """Rows of the stored ``identity_map`` output (its Parquet metadata, not its rows)."""
    held = getattr(context.resources.io_manager, "held_rows", None)
    rows = held(IDENTITY_MAP) if held is not None else None
    if rows is None:
        raise _missing_map(context)
    return int(rows)


def _held_golden_ids(context: dg.AssetCheckExecutionContext) -> pd.DataFrame:
    """The golden-id column of the stored ``identity_map`` output alone: a check reads what
    it counts, not a million-row output through an input."""
    held = getattr(context.resources.io_manager, "held_columns", None)
    frame = held(IDENTITY_MAP, ["golden_id"]) if held is not None else None
    if frame is None:
        raise _missing_map(context)
    return frame


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
    records = _held_map_rows(context)
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
    sizes = cluster_sizes(_held_golden_ids(context))
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
