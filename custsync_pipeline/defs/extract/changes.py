"""``<c>/changes``: one connector's changes by day, so a missed window can be re-pulled.

A separate, day-partitioned asset per connector (the lane's ``raw_customers`` /
``customers`` stay unpartitioned: the sync job's identity, golden and publish steps are
one state, not a state per day, and a job cannot mix the two). A partition ``2026-10-05``
reads the changes since 00:00 UTC of that day through the connector's incremental read,
keeps the records whose change time falls in ``[day, day + 1)`` and stores them as an
incremental pull does (upsert, entries of just those records, deletes reported,
quarantine for that batch). It never moves the watermark: a backfill of old days must not
make the next incremental pull skip anything.

A backfill over a date range is launched from the UI (the asset's Materialize → select the
days); its policy puts up to 7 days in one run, read with one incremental pull from the
first day's start (one listing instead of 7: APIs with a daily quota, as Exact Online's
5,000 calls, pay a week once), and each day partition shows that run's success or failure.
"""

import time

import dagster as dg
import pandas as pd

from custsync_pipeline.connectors.file_rows import flag_unencodable
from custsync_pipeline.connectors.http import ConnectorError
from custsync_pipeline.defs.extract import pulls
from custsync_pipeline.defs.extract.assets import (
    OWNERS,
    _fatal_message,
    _retry_may_help,
    canonical_table_schema,
    extract_retry,
    store_lane_pull,
)
from custsync_pipeline.defs.resources import connector_resource_key
from custsync_pipeline.domain.plan import ConnectorPlan, SyncPlan

CHANGES_START = "2023-01-01"
CHANGE_DAYS = dg.DailyPartitionsDefinition(start_date=CHANGES_START, timezone="UTC")
# a week per run: one listing pays for seven days of a quota-limited API, and a failure
# costs one week's retry, not the whole range's
CHANGES_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=7)


# the day-partitioned assets carry this tag: jobs of unpartitioned runs leave them out
WINDOW_TAG = ("custsync/pull", "window")


def unpartitioned_assets() -> dg.AssetSelection:
    """Every asset but the ``<c>/changes`` windows (a run has no day unless a backfill gives one)."""
    return dg.AssetSelection.all() - dg.AssetSelection.tag(*WINDOW_TAG)


def changes_key(connector: str) -> dg.AssetKey:
    return dg.AssetKey([connector, "changes"])


def change_times(connector: object, raw: pd.DataFrame) -> pd.Series:
    """Each row's change time: the canonical ``updated_at``, else ``created_at`` (UTC)."""
    canon = connector.to_canonical(raw)
    when = pd.to_datetime(canon["updated_at"], utc=True, errors="coerce")
    if "created_at" in canon:
        when = when.fillna(pd.to_datetime(canon["created_at"], utc=True, errors="coerce"))
    return pd.Series(when.to_numpy(), index=raw.index)


def in_window(
    connector: object, raw: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp
) -> pd.Series:
    """Rows whose change time (``change_times``) falls in ``[start, end)``; the connectors'
    reads are bounded below only."""
    if raw.empty:
        return pd.Series(False, index=raw.index)
    when = change_times(connector, raw)
    return pd.Series(((when >= start) & (when < end)).to_numpy(dtype=bool), index=raw.index)


def per_day(connector: object, raw: pd.DataFrame, days: list[str]) -> dict[str, int]:
    """Records of ``raw`` per day partition key (its change time's UTC date)."""
    if raw.empty:
        return dict.fromkeys(days, 0)
    day = pd.DatetimeIndex(change_times(connector, raw)).tz_convert("UTC").strftime("%Y-%m-%d")
    counts = pd.Series(day).value_counts()
    return {d: int(counts.get(d, 0)) for d in days}


def _changes_asset(
    name: str, conn: ConnectorPlan, aspects: tuple[str, ...], retry: dg.RetryPolicy
) -> dg.AssetsDefinition:
    api_key = connector_resource_key(name)

    @dg.asset(
        key=changes_key(name),
        group_name=name,
        partitions_def=CHANGE_DAYS,
        backfill_policy=CHANGES_BACKFILL,
        tags=dict([WINDOW_TAG]),
        kinds={"python", conn.type},
        owners=OWNERS,
        required_resource_keys={api_key, "state_db"},
        retry_policy=retry,
        pool=api_key,
        description=(
            f"{name} records changed on each day (UTC), stored like an incremental pull; "
            "backfill a date range to re-pull missed windows. Never moves the watermark."
        ),
    )
    def changes(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        window = context.partition_time_window  # the whole range in a multi-day run
        start, end = pd.Timestamp(window.start), pd.Timestamp(window.end)
        resource = getattr(context.resources, api_key)
        started = time.monotonic()
        try:
            connector = resource.connector()
            result = connector.read(since=start.to_pydatetime())
        except ConnectorError as exc:
            if _retry_may_help(exc):
                raise
            raise dg.Failure(
                description=_fatal_message(name, resource, exc), allow_retries=False
            ) from None
        records = flag_unencodable(result.records, name)
        keep = in_window(connector, records, start, end)
        raw = records[keep].reset_index(drop=True)
        pull = pulls.describe(start.to_pydatetime(), None, result.deleted_ids, window=(start, end))
        done = store_lane_pull(context, name, conn, aspects, connector, raw, pull)
        context.log.info(
            f"{name}: window {start:%Y-%m-%d}..{end:%Y-%m-%d}: {len(raw)} of "
            f"{len(records)} records read, {result.stats.requests} requests, "
            f"{time.monotonic() - started:.1f}s"
        )
        metadata = {
            **done.metadata,
            "window_start": dg.MetadataValue.timestamp(start.to_pydatetime()),
            "window_end": dg.MetadataValue.timestamp(end.to_pydatetime()),
            "records_read": len(records),
            "records_in_window": len(raw),
            "requests": result.stats.requests,
            "pages": result.stats.pages,
            "dagster/column_schema": canonical_table_schema(),
        }
        days = list(context.partition_keys)
        if len(days) > 1:
            # one run, one materialization per day with the same metadata: each day's own
            # count is in records_per_day; a row count of the whole run on every day would
            # add up to several times the records
            metadata.pop("dagster/row_count", None)
            metadata["days_in_run"] = len(days)
            metadata["records_per_day"] = dg.MetadataValue.json(per_day(connector, raw, days))
        return dg.MaterializeResult(metadata=metadata)

    return changes


def build_changes_assets(plan: SyncPlan) -> list[dg.AssetsDefinition]:
    return [
        _changes_asset(name, conn, plan.stored_aspects(name), extract_retry(plan))
        for name, conn in plan.connectors.items()
    ]
