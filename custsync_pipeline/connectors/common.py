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

import numpy as np
import pandas as pd

from custsync_pipeline.config import ConnectorConfig
from custsync_pipeline.connectors.base import ReadStats
from custsync_pipeline.connectors.http import HttpClient, HttpSettings
from custsync_pipeline.domain.times import iso_utc

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


# the largest millisecond count pandas' nanosecond timestamps hold (year 2262)
_MAX_MS = pd.Timestamp.max.value // 1_000_000


def parse_times(values: pd.Series) -> pd.Series:
    """Vendor timestamps -> UTC, vectorized: ISO 8601 (any offset) and OData ``/Date(ms)/``."""
    text = values.astype("string")
    odata = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    dated = text.str.contains("/Date(", regex=False).fillna(False).to_numpy(dtype=bool)
    ms = pd.Series(np.nan, index=values.index)
    if dated.any():
        found = text[dated].str.extract(r"/Date\((-?\d+)", expand=False)
        ms[dated] = pd.to_numeric(found, errors="coerce").astype("float64")
    # only real counts reach pandas, as int64: its float path reads uninitialized memory
    # under missing values and can raise FloatingPointError (seen intermittently on an
    # all-ISO column); an absurd count (a garbled value) is no time either
    has = (ms.abs() < _MAX_MS).to_numpy()
    if has.any():
        odata[has] = pd.to_datetime(ms[has].astype("int64"), unit="ms", utc=True)
    rest = text.where(ms.isna())
    iso = iso_utc(rest)
    if iso is None:  # a value Arrow's ISO 8601 reader refuses: pandas, value by value
        iso = pd.to_datetime(rest, utc=True, errors="coerce", format="mixed")
    return odata.fillna(iso)


def newest(values: pd.Series | None, floor: datetime | None = None) -> datetime | None:
    """The newest timestamp in ``values`` (the new watermark), or None when there is none.

    A read that returned nothing keeps the old watermark: the caller gets None.
    ``floor`` (the previous watermark) is never moved backwards.
    """
    if values is None or len(values) == 0:
        return None
    ts = parse_times(values).max()
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


# sandbox_system: which emulator a config entry points at (read by the demo and tests only)
COMMON_OPTIONS = frozenset({"overlap_minutes", "http", "sandbox_system"})


def check_options(connector: str, options: Mapping[str, Any], known: frozenset[str] | None) -> None:
    """A misspelt option is an error naming it, not a silently ignored setting."""
    if known is None:
        return
    unknown = sorted(set(options) - known - COMMON_OPTIONS)
    if unknown:
        from custsync_pipeline.connectors.http import ConnectorError

        raise ConnectorError(
            connector,
            f"unknown option(s) {', '.join('options.' + k for k in unknown)}; "
            f"known: {', '.join(sorted(known | COMMON_OPTIONS))}",
        )


class HttpConnectorBase:
    """State every HTTP connector keeps: its name, config, options and ``HttpClient``.

    Subclasses set ``DEFAULT_RATE_PER_S`` (the API's documented rate) and
    build ``self.http`` in ``__init__`` via ``_client``.
    """

    DEFAULT_RATE_PER_S: float | None = None
    # option keys the connector reads; None = not checked (the REST connector validates its own)
    OPTIONS: frozenset[str] | None = None

    def __init__(self, name: str, cfg: ConnectorConfig, env: Mapping[str, str]) -> None:
        self.name = name
        self.cfg = cfg
        self.options: dict[str, Any] = dict(cfg.options)
        check_options(name, self.options, self.OPTIONS)
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

    def __enter__(self) -> HttpConnectorBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FieldMapping:
    """A YAML field mapping: vendor field (dotted path) -> canonical column, used both ways.

    ``mapping`` pairs a vendor path with a canonical column; cross-system
    references simply map to the referenced system's column (``Voyado_Id__c:
    voyado_id``). ``static`` sets constant canonical values (``kind: person``).
    ``read_only`` lists canonical columns never written back.
    """

    def __init__(
        self,
        connector: str,
        mapping: Mapping[str, str],
        *,
        id_fields: Sequence[str],
        updated_field: str | None = None,
        created_field: str | None = None,
        static: Mapping[str, Any] | None = None,
        read_only: Sequence[str] = (),
    ) -> None:
        from custsync_pipeline.domain.canonical import CANONICAL_COLUMNS

        unknown = sorted(set(mapping.values()) - set(CANONICAL_COLUMNS))
        if unknown:
            raise ValueError(f"options.mapping: unknown canonical column(s) {unknown}")
        unknown = sorted(set(static or {}) - set(CANONICAL_COLUMNS))
        if unknown:
            raise ValueError(f"options.static: unknown canonical column(s) {unknown}")
        if not id_fields:
            raise ValueError("options.id_field: name the field that identifies a record")
        self.connector = connector
        self.mapping = dict(mapping)
        self.id_fields = list(id_fields)
        self.updated_field = updated_field
        self.created_field = created_field
        self.static = dict(static or {})
        self.read_only = set(read_only) | {"connector", "source_id", "updated_at", "created_at"}

    def source_ids(self, raw: pd.DataFrame) -> pd.Series:
        """The record id: one field, or several joined with ``|`` (a composite key)."""
        parts = [column(raw, f).astype("string") for f in self.id_fields]
        out = parts[0]
        for part in parts[1:]:
            out = out + "|" + part
        return out

    def to_canonical(self, raw: pd.DataFrame) -> pd.DataFrame:
        from custsync_pipeline.domain.canonical import conform
        from custsync_pipeline.domain.received import received_column

        if len(raw) == 0:  # not raw.empty: records without one field ([{}]) are rows too
            return conform(pd.DataFrame())
        out = pd.DataFrame(index=raw.index)
        out["connector"] = self.connector
        out["source_id"] = self.source_ids(raw)
        for path, canon in self.mapping.items():
            values = column(raw, path)
            # two vendor fields may feed one column (Phone, MobilePhone): first wins
            out[canon] = out[canon].where(out[canon].notna(), values) if canon in out else values
        for canon, value in self.static.items():
            out[canon] = value
        received: dict[str, pd.Series] = {}
        for canon, field in (
            ("updated_at", self.updated_field),
            ("created_at", self.created_field),
        ):
            if field:
                text = column(raw, field)
                out[canon] = parse_times(text)
                # a date that does not parse (30 February, year 9999) is kept as received
                # beside the column, so validation quarantines it instead of a silent NULL
                lost = out[canon].isna() & text.notna()
                if lost.any():
                    received[received_column(canon)] = text.astype("string").where(lost)
        result = conform(out)
        for col, values in received.items():
            result[col] = values.to_numpy()
        return result

    def from_canonical(self, golden: pd.DataFrame) -> list[dict[str, Any]]:
        reverse: dict[str, str] = {}
        for path, canon in self.mapping.items():
            if canon not in self.read_only and canon not in reverse and canon in golden.columns:
                reverse[canon] = path
        payloads: list[dict[str, Any]] = []
        for row in golden[list(reverse)].to_dict("records"):
            body: dict[str, Any] = {}
            for canon, path in reverse.items():
                value = row[canon]
                if not is_missing(value):  # an empty value would overwrite the stored one
                    set_path(body, path, jsonable(value))
            payloads.append(body)
        return payloads


def mapping_from_options(connector: str, options: Mapping[str, Any]) -> FieldMapping:
    """A ``FieldMapping`` from the ``mapping``/``id_field``/``updated_field``/... options."""
    id_field = options.get("id_field", "id")
    id_fields = [id_field] if isinstance(id_field, str) else list(id_field)
    return FieldMapping(
        connector,
        options.get("mapping") or {},
        id_fields=id_fields,
        updated_field=options.get("updated_field"),
        created_field=options.get("created_field"),
        static=options.get("static"),
        read_only=options.get("read_only") or (),
    )
