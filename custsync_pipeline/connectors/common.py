"""Helpers shared by the connector modules: watermarks and overlap, stats, batching, dotted paths.

Nothing here talks HTTP itself (that is ``http.py``); these are the small
pieces every connector would otherwise repeat.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pandas as pd

from custsync_pipeline.config import ConnectorConfig
from custsync_pipeline.connectors.base import ReadStats
from custsync_pipeline.connectors.http import HttpClient, HttpSettings

T = TypeVar("T")

DEFAULT_OVERLAP = timedelta(minutes=10)


def utc(ts: datetime) -> datetime:
    """``ts`` as an aware UTC datetime (a naive one is taken to be UTC)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def overlap_start(since: datetime | None, overlap: timedelta) -> datetime | None:
    """Where an incremental read starts: the watermark minus the overlap window.

    The overlap catches records committed late with an older change time;
    the duplicates it brings back are removed downstream by key + content hash.
    """
    return None if since is None else utc(since) - overlap


def overlap_from_options(options: Mapping[str, Any]) -> timedelta:
    minutes = options.get("overlap_minutes", DEFAULT_OVERLAP.total_seconds() / 60)
    return timedelta(minutes=float(minutes))


def newest(values: pd.Series | None, floor: datetime | None = None) -> datetime | None:
    """The newest timestamp in ``values`` (the new watermark), or None when there is none.

    A read that returned nothing keeps the old watermark: the caller gets None.
    ``floor`` (the previous watermark) is never moved backwards.
    """
    if values is None or len(values) == 0:
        return None
    ts = pd.to_datetime(values, utc=True, errors="coerce", format="mixed").max()
    if pd.isna(ts):
        return None
    out = ts.to_pydatetime()
    if floor is not None and out < utc(floor):
        return utc(floor)
    return out


def iso_z(ts: datetime, *, millis: bool = True) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix, e.g. ``2024-05-01T10:00:00.000Z``."""
    ts = utc(ts)
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if millis:
        text += f".{ts.microsecond // 1000:03d}"
    return text + "Z"


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def get_path(obj: Any, dotted: str) -> Any:
    """``obj["a"]["b"]`` for ``"a.b"``; None when any step is missing."""
    cur = obj
    for part in dotted.split("."):
        if isinstance(cur, Mapping):
            cur = cur.get(part)
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return None
        if cur is None:
            return None
    return cur


def set_path(obj: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``obj["a"]["b"] = value`` for ``"a.b"``, creating the dicts on the way."""
    parts = dotted.split(".")
    cur = obj
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value


def is_missing(value: Any) -> bool:
    """True for None, NaN/NaT/<NA> and empty or blank strings (never sent as a value)."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def jsonable(value: Any) -> Any:
    """A value a JSON body can carry: timestamps as ISO strings, numpy scalars as Python."""
    if isinstance(value, pd.Timestamp | datetime):
        return iso_z(value)
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    return value


def records_frame(records: list[dict[str, Any]], *, flatten: bool = True) -> pd.DataFrame:
    """Vendor records as a frame; nested objects flattened to dotted columns (``address.city``)."""
    if not records:
        return pd.DataFrame()
    if flatten:
        return pd.json_normalize(records, sep=".")
    return pd.DataFrame.from_records(records)


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """``frame[name]``, or an all-missing column when the payload lacks it."""
    if name in frame.columns:
        return frame[name]
    return pd.Series(pd.NA, index=frame.index, dtype="object")


class HttpConnectorBase:
    """State every HTTP connector keeps: its name, config, options and ``HttpClient``.

    Subclasses set ``DEFAULT_RATE_PER_S`` (the API's documented rate) and
    build ``self.http`` in ``__init__`` via ``_client``.
    """

    DEFAULT_RATE_PER_S: float | None = None

    def __init__(self, name: str, cfg: ConnectorConfig, env: Mapping[str, str]) -> None:
        self.name = name
        self.cfg = cfg
        self.options: dict[str, Any] = dict(cfg.options)
        self.env = env
        self.overlap = overlap_from_options(self.options)
        self.http: HttpClient

    def _settings(self) -> HttpSettings:
        return HttpSettings.from_options(self.options, self.DEFAULT_RATE_PER_S)

    @contextmanager
    def measure(self) -> Iterator[ReadStats]:
        """Stats of the block: requests and retries made by ``self.http``, elapsed seconds."""
        stats = ReadStats()
        start = time.perf_counter()
        req0, ret0 = self.http.counters.requests, self.http.counters.retries
        try:
            yield stats
        finally:
            stats.requests = self.http.counters.requests - req0
            stats.retries = self.http.counters.retries - ret0
            stats.elapsed_s = time.perf_counter() - start

    def close(self) -> None:
        self.http.close()
