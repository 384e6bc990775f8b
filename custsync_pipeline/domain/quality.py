"""Data-quality measures of one connector's batch: pure functions behind the asset checks.

Each returns plain numbers (and short lists of names) so the Dagster layer can
put them as numeric metadata on a materialization or an ``AssetCheckResult``
and the UI can plot them over time. No personal data appears in the output:
only counts, rates, column names and ages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from custsync_pipeline.domain.validate import ValidationResult


def validation_metrics(result: ValidationResult) -> dict[str, float | int]:
    """Counts and rates of a validation run, flat and numeric (``check/<name>`` per failing check)."""
    rej = result.rejected
    row_rej = rej[rej["severity"] == "row"] if len(rej) else rej
    metrics: dict[str, float | int] = {
        "received": int(result.rows_in),
        "valid": len(result.valid),
        "rejected_records": int(result.rows_in - len(result.valid)),
        "rejected_rows": len(rej),
        "row_failures": len(row_rej),
        "field_failures": int(len(rej) - len(row_rej)),
        "records_with_field_failures": int(
            rej.loc[rej["severity"] == "field", "source_id"].nunique()
        )
        if len(rej)
        else 0,
        "valid_rate": round(float(result.valid_rate), 6),
    }
    if len(rej):
        for check, n in rej["check"].value_counts().sort_index().items():
            metrics[f"check/{check}"] = int(n)
    return metrics


def valid_rate(rows_in: int, rows_valid: int) -> float:
    """Share of received records that passed (1.0 for an empty batch: nothing was lost)."""
    return rows_valid / rows_in if rows_in else 1.0


def valid_rate_passes(
    rows_in: int, rows_valid: int, min_valid_rate: float, min_rows: int = 0
) -> bool:
    """The valid-row gate: the lane may replace its stored records only when this holds.

    One function for the extract asset (which keeps the last good records when it
    fails) and the blocking ``valid_row_rate`` check (which then stops downstream).
    """
    return valid_rate(rows_in, rows_valid) >= min_valid_rate and rows_in >= min_rows


@dataclass(frozen=True)
class SchemaDrift:
    """Columns added to or gone from a payload since the previous run."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    baseline: bool  # True when there was no previous column set to compare with

    @property
    def drifted(self) -> bool:
        return bool(self.added or self.removed)


def schema_drift(previous: Iterable[str] | None, current: Iterable[str]) -> SchemaDrift:
    """Compare two column sets (order does not matter)."""
    now = {str(c) for c in current}
    if previous is None:
        return SchemaDrift(added=(), removed=(), baseline=True)
    before = {str(c) for c in previous}
    return SchemaDrift(
        added=tuple(sorted(now - before)), removed=tuple(sorted(before - now)), baseline=False
    )


@dataclass(frozen=True)
class Duplicates:
    ids: int  # distinct source ids that occur more than once
    extra_rows: int  # rows beyond the first copy of each id
    rows: int

    @property
    def rate(self) -> float:
        return self.extra_rows / self.rows if self.rows else 0.0


def duplicate_ids(ids: pd.Series) -> Duplicates:
    """Source ids that occur more than once (missing ids are not counted as duplicates)."""
    present = ids.dropna()
    counts = present.value_counts()
    repeated = counts[counts > 1]
    return Duplicates(ids=len(repeated), extra_rows=int((repeated - 1).sum()), rows=len(ids))


@dataclass(frozen=True)
class Freshness:
    newest: pd.Timestamp | None
    age_hours: float | None  # None when no record carries a timestamp


def freshness(updated_at: pd.Series, now: pd.Timestamp) -> Freshness:
    """Age of the newest record's ``updated_at`` relative to ``now`` (UTC)."""
    stamps = pd.to_datetime(updated_at, utc=True, errors="coerce").dropna()
    if stamps.empty:
        return Freshness(newest=None, age_hours=None)
    newest = stamps.max()
    now = (
        pd.Timestamp(now).tz_convert("UTC")
        if pd.Timestamp(now).tzinfo
        else pd.Timestamp(now, tz="UTC")
    )
    return Freshness(newest=newest, age_hours=round((now - newest).total_seconds() / 3600.0, 3))


def nameless_golden(golden: pd.DataFrame) -> pd.Series:
    """True for golden records with no first name, last name or company name."""
    cols = [c for c in ("first_name", "last_name", "company_name") if c in golden]
    if golden.empty or not cols:
        return pd.Series(False, index=golden.index)
    return golden[cols].isna().all(axis=1)


def entries_without_provenance(entries: pd.DataFrame, sources: pd.DataFrame) -> int:
    """Golden aspect entries that no connector is recorded as holding (should be none)."""
    if entries.empty:
        return 0
    key = ["golden_id", "aspect", "entry_key"]
    held = sources[key].drop_duplicates() if not sources.empty else pd.DataFrame(columns=key)
    joined = entries[key].merge(held, on=key, how="left", indicator=True)
    return int((joined["_merge"] == "left_only").sum())
