"""Incremental pulls of an extraction lane: which read a run makes, what it carries from
the raw step to the canonical step, and how the canonical step stores it.

* **full snapshot** (``read(since=None)``): on a lane's first run (no stored watermark)
  or when the run asks for one (run tag ``custsync/full_snapshot: "true"``, set by the
  reconciliation job). The stored source records and aspect entries are replaced.
* **incremental** (``read(since=watermark)``, the connector subtracts its documented
  overlap): the changed records are upserted, the entries of just those records replaced,
  the deleted ids the delete feed reported removed, the quarantine updated for this batch
  only. An incremental pull that finds nothing is no failure: the ``min_rows`` gate is
  for snapshots (an empty snapshot must not wipe a lane).
* **window** (a day partition of ``<c>/changes``): the records whose change time falls
  in ``[start, end)``, stored as an incremental pull; the watermark is never moved by it.

The watermark moves only in the canonical step, after the changes are stored, so a run
that fails in between pulls the same changes again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

import pandas as pd
from sqlalchemy.engine import Engine

from custsync_pipeline.store import core
from custsync_pipeline.store.golden import replace_source_entries, upsert_source_entries

FULL_SNAPSHOT_TAG = "custsync/full_snapshot"
PULL_ATTR = "custsync_pull"  # DataFrame.attrs key: Parquet keeps attrs between the steps

FULL = "full"
INCREMENTAL = "incremental"
WINDOW = "window"


@dataclass
class Pull:
    """What a raw step read, handed to the canonical step with the records."""

    mode: str = FULL
    since: str | None = None  # ISO time the read started from (before the overlap)
    watermark: str | None = None  # the newest change time read (ISO), to store after
    deleted_ids: list[str] = field(default_factory=list)
    window: tuple[str, str] | None = None

    @property
    def incremental(self) -> bool:
        return self.mode != FULL

    def attach(self, records: pd.DataFrame) -> pd.DataFrame:
        records.attrs[PULL_ATTR] = asdict(self)
        return records


ABSENT_ATTR = "custsync_absent_columns"  # attrs key: mapped columns the payload lacks


def mark_absent(records: pd.DataFrame, absent: list[str]) -> pd.DataFrame:
    """Note on ``records`` the columns the connector's config reads that it lacks."""
    records.attrs[ABSENT_ATTR] = list(absent)
    return records


def absent_of(raw: pd.DataFrame) -> list[str]:
    """The mapped columns a raw frame lacked (``mark_absent``); none when not noted."""
    return [str(c) for c in raw.attrs.get(ABSENT_ATTR) or []]


def pull_of(raw: pd.DataFrame) -> Pull:
    """The pull a raw frame came from (a frame without one is a full snapshot that moves no
    watermark: the behaviour before incremental pulls)."""
    info = raw.attrs.get(PULL_ATTR)
    if not isinstance(info, dict):
        return Pull()
    window = info.get("window")
    return Pull(
        mode=str(info.get("mode") or FULL),
        since=info.get("since"),
        watermark=info.get("watermark"),
        deleted_ids=[str(i) for i in info.get("deleted_ids") or []],
        window=tuple(window) if window else None,
    )


def full_snapshot_requested(tags: dict[str, str]) -> bool:
    return str(tags.get(FULL_SNAPSHOT_TAG, "")).strip().lower() in ("1", "true", "yes")


def pull_start(engine: Engine, connector: str, tags: dict[str, str]) -> datetime | None:
    """Where this run reads from: the stored watermark, or None (a full snapshot)."""
    if full_snapshot_requested(tags):
        return None
    return core.get_watermark(engine, connector)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else pd.Timestamp(value).isoformat()


def describe(
    since: datetime | None, watermark: datetime | None, deleted: list[str], window=None
) -> Pull:
    mode = WINDOW if window else (FULL if since is None else INCREMENTAL)
    return Pull(
        mode=mode,
        since=_iso(since),
        watermark=_iso(watermark),
        deleted_ids=[str(i) for i in deleted],
        window=None if window is None else (_iso(window[0]), _iso(window[1])),
    )


def entry_source_ids(
    engine: Engine, connector: str, pull: Pull, valid: pd.DataFrame, entries: pd.DataFrame
) -> pd.Series:
    """Records an entry of ``entries`` may belong to: the valid ones of this pull, and on
    an incremental pull also the stored ones the entries name (a Contact pulled alone is
    a contact person of its stored Account); only those are looked up, not every stored
    record of the connector."""
    ids = valid["source_id"].astype(str)
    if not pull.incremental or "source_id" not in entries.columns:
        return ids
    named = set(entries["source_id"].dropna().astype(str)) - set(ids) - set(pull.deleted_ids)
    stored = core.stored_source_ids(engine, connector, named)
    return pd.Series(sorted(set(ids) | stored), dtype=object)


def store_pull(
    engine: Engine, connector: str, pull: Pull, valid: pd.DataFrame, entries: pd.DataFrame
) -> dict[str, int]:
    """Store a pull that passed its gate, then move the watermark (snapshots and
    incremental pulls only). Returns counts for the step's metadata."""
    if pull.incremental:
        stored, deleted = core.upsert_source_records(engine, connector, valid, pull.deleted_ids)
        upsert_source_entries(
            engine, connector, entries, valid["source_id"].astype(str), pull.deleted_ids
        )
    else:
        stored, deleted = core.replace_source_records(engine, connector, valid), 0
        replace_source_entries(engine, connector, entries)
    # only after the changes are stored: a crash before this line re-reads them
    moved = move_watermark(engine, connector, pull)
    return {"stored": stored, "deleted_removed": deleted, "watermark_moved": moved}


def move_watermark(engine: Engine, connector: str, pull: Pull) -> int:
    """Store the pull's watermark (snapshots and incremental pulls, never a day window);
    1 when it moved."""
    if pull.mode == WINDOW or pull.watermark is None:
        return 0
    core.set_watermark(engine, connector, pd.Timestamp(pull.watermark).to_pydatetime())
    return 1
