"""Asset checks of each extraction lane: one check per quality dimension, built per connector.

``build_extract_checks(connector, ...)`` returns four checks:

* ``valid_row_rate`` on ``<c>/customers`` (validity) — share of received rows
  that passed validation, against ``min_valid_rate``; **blocking** with ERROR
  severity, so a broken feed stops the run before identity and golden records.
* ``duplicate_source_ids`` on ``<c>/customers`` (uniqueness) — ids the
  connector returned more than once (from the quarantine's
  ``unique_source_id`` rows) and a guard that the valid frame has none; WARN.
* ``newest_record_freshness`` on ``<c>/customers`` (timeliness) — age of the
  newest ``updated_at`` against ``max_age_hours``; WARN.
* ``schema_drift`` on ``<c>/raw_customers`` (consistency) — payload columns
  added or gone since the last run; the last column set lives in the state DB
  (``payload_columns``); WARN. Fields custsync writes itself (``metadata.custsync_id``,
  ``Custsync_Id__c``) and the connectors' own bookkeeping columns (``__resource``,
  ``_custsync.error``) are not the vendor's schema and are left out. An incremental pull
  holds only the columns its few records carry: it can add columns, not remove them.
  It also fails when a full read lacks a column the connector's config reads (a file
  connector's ``options.mapping`` or time field: ``absent_columns``), first run
  included.

The numbers come from ``domain.quality``; every result carries numeric
metadata so the UI plots it over time. No personal data in metadata. The checks read
what they count from the lane's stored outputs through the IO manager (``held_shape``:
rows, columns and the pull from the Parquet footer; ``held_columns``: one column), never
the million-row frames as inputs.
"""

import re

import dagster as dg
import pandas as pd

from custsync_pipeline.defs.extract.pulls import absent_of, pull_of
from custsync_pipeline.defs.io import HELD_ROWS
from custsync_pipeline.domain import quality
from custsync_pipeline.store.quarantine import load_payload_columns, save_payload_columns


def _key(connector: str, name: str) -> dg.AssetKey:
    # same keys as defs.extract.assets (kept local so this module never imports it)
    return dg.AssetKey([connector, name])


def _unheld(context: dg.AssetCheckExecutionContext, key: dg.AssetKey) -> dg.Failure:
    io = context.resources.io_manager
    return dg.Failure(
        f"{key.to_user_string()} has no readable stored output to check ({type(io).__name__}: "
        f"missing or unreadable): materialize {key.to_user_string()} first"
    )


def held_shape(context: dg.AssetCheckExecutionContext, key: dg.AssetKey) -> pd.DataFrame:
    """The stored output of ``key`` as its columns and attrs, no rows (``HELD_ROWS``: how
    many it has)."""
    held = getattr(context.resources.io_manager, "held_shape", None)
    frame = held(key) if held is not None else None
    if frame is None:
        raise _unheld(context, key)
    return frame


def held_column(context: dg.AssetCheckExecutionContext, key: dg.AssetKey, column: str) -> pd.Series:
    """One column of the stored output of ``key`` (missing values when it has none)."""
    shape = held_shape(context, key)
    if column not in shape.columns:
        return pd.Series(pd.NA, index=pd.RangeIndex(shape.attrs[HELD_ROWS]), dtype=object)
    frame = context.resources.io_manager.held_columns(key, [column])
    if frame is None:
        raise _unheld(context, key)
    return frame[column]


def build_valid_rate_check(
    connector: str, *, min_valid_rate: float = 0.95, min_rows: int = 0
) -> dg.AssetChecksDefinition:
    """Blocking: fails (ERROR) when fewer than ``min_valid_rate`` of the received rows are valid."""

    @dg.asset_check(
        asset=_key(connector, "customers"),
        name="valid_row_rate",
        blocking=True,
        required_resource_keys={"io_manager"},
        additional_deps=[_key(connector, "raw_customers")],
        description=f"Share of {connector} rows that passed validation >= {min_valid_rate:.0%} "
        "(blocking: a broken feed must not reach golden records).",
    )
    def valid_row_rate(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        raw = held_shape(context, _key(connector, "raw_customers"))
        received = raw.attrs[HELD_ROWS]
        valid = held_shape(context, _key(connector, "customers")).attrs[HELD_ROWS]
        rate = quality.valid_rate(received, valid)
        # an incremental pull that found no change is fine: min_rows guards snapshots
        floor = 0 if pull_of(raw).incremental else min_rows
        passed = quality.valid_rate_passes(received, valid, min_valid_rate, floor)
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                f"{valid} of {received} rows valid ({rate:.1%}); threshold {min_valid_rate:.0%}"
                + ("" if received >= floor else f"; fewer than the {floor} rows expected")
            ),
            metadata={
                "valid_rate": float(rate),
                "threshold": float(min_valid_rate),
                "received": received,
                "valid": valid,
                "rejected_records": received - valid,
            },
        )

    return valid_row_rate


def build_duplicate_ids_check(
    connector: str, *, max_duplicate_rate: float = 0.0
) -> dg.AssetChecksDefinition:
    """WARN when the connector returned one source id more than once (beyond ``max_duplicate_rate``)."""

    @dg.asset_check(
        asset=_key(connector, "customers"),
        name="duplicate_source_ids",
        additional_ins={"rejected": dg.AssetIn(key=_key(connector, "rejected_customers"))},
        required_resource_keys={"io_manager"},
        description=f"Source ids {connector} returned more than once (the newest copy is kept).",
    )
    def duplicate_source_ids(
        context: dg.AssetCheckExecutionContext, rejected: pd.DataFrame
    ) -> dg.AssetCheckResult:
        dup_rows = rejected[rejected["check"] == "unique_source_id"] if len(rejected) else rejected
        extra = len(dup_rows)
        ids = int(dup_rows["source_id"].nunique()) if extra else 0
        source_ids = held_column(context, _key(connector, "customers"), "source_id")
        left = quality.duplicate_ids(source_ids)  # must be 0 after validation
        received = len(source_ids) + extra
        rate = extra / received if received else 0.0
        passed = left.extra_rows == 0 and rate <= max_duplicate_rate
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.WARN
            if left.extra_rows == 0
            else dg.AssetCheckSeverity.ERROR,
            description=f"{ids} source ids returned more than once ({extra} extra rows quarantined)",
            metadata={
                "duplicated_ids": ids,
                "extra_rows": extra,
                "duplicate_rate": float(rate),
                "duplicates_in_valid": left.extra_rows,
            },
        )

    return duplicate_source_ids


def build_freshness_check(
    connector: str, *, max_age_hours: float = 7 * 24.0
) -> dg.AssetChecksDefinition:
    """WARN when the newest ``updated_at`` is older than ``max_age_hours`` (or none is known)."""

    @dg.asset_check(
        asset=_key(connector, "customers"),
        name="newest_record_freshness",
        required_resource_keys={"io_manager"},
        description=f"The newest {connector} record changed within {max_age_hours:g} hours.",
    )
    def newest_record_freshness(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        stamps = held_column(context, _key(connector, "customers"), "updated_at")
        fresh = quality.freshness(stamps, pd.Timestamp.now(tz="UTC"))
        if fresh.age_hours is None:
            return dg.AssetCheckResult(
                passed=len(stamps) == 0,
                severity=dg.AssetCheckSeverity.WARN,
                description="no record carries an updated_at timestamp",
                metadata={"records": len(stamps), "max_age_hours": float(max_age_hours)},
            )
        return dg.AssetCheckResult(
            passed=fresh.age_hours <= max_age_hours,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"newest record changed {fresh.age_hours:.1f} h ago (limit {max_age_hours:g} h)",
            metadata={
                "age_hours": float(fresh.age_hours),
                "max_age_hours": float(max_age_hours),
                "newest_updated_at": dg.MetadataValue.timestamp(fresh.newest.to_pydatetime()),
            },
        )

    return newest_record_freshness


# fields custsync writes into a system (its golden id) and columns its connectors add
_OWN_COLUMN = re.compile(r"custsync|^__", re.IGNORECASE)


def vendor_columns(columns: list[str]) -> list[str]:
    """The payload's own columns: without the ones custsync writes or adds itself."""
    return [c for c in columns if not _OWN_COLUMN.search(c)]


def build_schema_drift_check(
    connector: str, *, state_db_key: str = "state_db"
) -> dg.AssetChecksDefinition:
    """WARN when payload columns were added or removed since the last run; records the new set."""

    @dg.asset_check(
        asset=_key(connector, "raw_customers"),
        name="schema_drift",
        required_resource_keys={state_db_key, "io_manager"},
        description=f"Columns of the {connector} payload added or gone since the last run.",
    )
    def schema_drift(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        engine = getattr(context.resources, state_db_key).engine
        raw_customers = held_shape(context, _key(connector, "raw_customers"))
        columns = vendor_columns([str(c) for c in raw_customers.columns])
        rows = raw_customers.attrs[HELD_ROWS]
        if not columns or (not rows and pull_of(raw_customers).incremental):
            # an empty page has no columns: that says nothing about the shape
            return dg.AssetCheckResult(passed=True, description="empty payload: nothing to compare")
        before = load_payload_columns(engine, connector)
        if before is not None:
            before = vendor_columns(list(before))
        drift = quality.schema_drift(before, columns)
        if pull_of(raw_customers).incremental and before is not None:
            # a few changed records lack the columns none of them fills: only additions count
            drift = quality.SchemaDrift(added=drift.added, removed=(), baseline=False)
            columns = sorted(set(columns) | set(before))
        save_payload_columns(engine, connector, columns)
        absent = absent_of(raw_customers)
        if drift.baseline:
            description = f"first run: {len(columns)} columns recorded"
        elif drift.drifted:
            description = f"added: {list(drift.added)[:20]}; gone: {list(drift.removed)[:20]}"
        else:
            description = f"{len(columns)} columns, unchanged"
        if absent:
            description += f"; read by the config but not in the payload: {absent[:20]}"
        return dg.AssetCheckResult(
            passed=not drift.drifted and not absent,
            severity=dg.AssetCheckSeverity.WARN,
            description=description,
            metadata={
                "columns": len(columns),
                "columns_added": len(drift.added),
                "columns_removed": len(drift.removed),
                "added": dg.MetadataValue.json(list(drift.added)),
                "removed": dg.MetadataValue.json(list(drift.removed)),
                "mapped_absent": dg.MetadataValue.json(absent),
            },
        )

    return schema_drift


def build_extract_checks(
    connector: str,
    *,
    min_valid_rate: float = 0.95,
    min_rows: int = 0,
    max_duplicate_rate: float = 0.0,
    max_age_hours: float = 7 * 24.0,
    state_db_key: str = "state_db",
) -> list[dg.AssetChecksDefinition]:
    """The four checks of one connector's lane (see module docstring)."""
    return [
        build_valid_rate_check(connector, min_valid_rate=min_valid_rate, min_rows=min_rows),
        build_duplicate_ids_check(connector, max_duplicate_rate=max_duplicate_rate),
        build_freshness_check(connector, max_age_hours=max_age_hours),
        build_schema_drift_check(connector, state_db_key=state_db_key),
    ]
