"""A Parquet IO manager for the DataFrames passed between assets (not pickles).

Nested vendor values (dicts, lists) that Arrow cannot type are stored as JSON
text, and a column mixing scalar types (an id sent as 5 here and "A5" there) as
text, so any connector's raw payload round-trips.

The step outputs hold personal data (raw payloads, canonical rows): every file is
written 0600 inside directories made 0700, whatever the umask, so only the user
running custsync can read them. ``purge_outputs`` removes a person's rows from
every stored output (``custsync forget``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from custsync_pipeline.store.bulk import ARROW_TEXT

FILE_MODE = 0o600
DIR_MODE = 0o700
# an input whose AssetIn metadata holds this key set to True is read with its text as
# Arrow-backed strings: a million-row map in a tenth of the time and memory of one
# Python string per value (for steps that treat text as text, not as Python objects)
ARROW_TEXT_INPUT = "custsync/arrow_text"
# ``held_shape``'s attrs key for the rows of an output it read no rows of
HELD_ROWS = "custsync/rows"


def storage_root(base_dir: str = "") -> Path:
    """Where step outputs live: ``base_dir``, else ``$DAGSTER_HOME/storage/custsync``,
    else ``.custsync/storage``."""
    if base_dir:
        return Path(base_dir)
    home = os.environ.get("DAGSTER_HOME")
    return Path(home, "storage", "custsync") if home else Path(".custsync", "storage")


def _private_dirs(root: Path, leaf_dir: Path) -> None:
    """Create ``leaf_dir`` and make it and every directory from ``root`` down 0700."""
    leaf_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    chain = [leaf_dir, *leaf_dir.parents]
    for directory in chain:
        if directory != root and root not in directory.parents:
            break
        if (directory.stat().st_mode & 0o777) != DIR_MODE:
            directory.chmod(DIR_MODE)  # also tightens a directory an older version left 0755


def _jsonify_nested(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype != object:
            continue
        kind = pd.api.types.infer_dtype(out[col], skipna=True)
        if kind in ("string", "empty"):
            continue
        if kind in ("bytes", "boolean", "integer", "floating", "decimal"):
            try:  # one Arrow type: stored as it is (unless an int outgrows int64)
                pa.array(out[col], from_pandas=True)
                continue
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                pass
        values = out[col].to_numpy(dtype=object)
        present = ~pd.isna(out[col]).to_numpy()
        nested = np.fromiter(
            (isinstance(v, dict | list) for v in values), dtype=bool, count=len(values)
        )
        text = np.where(
            nested,
            [json.dumps(v, default=str) if n else v for v, n in zip(values, nested, strict=True)],
            values,
        )
        # mixed scalars (5 and "A5", True and "yes") become text: Arrow needs one type per column
        mixed = present & ~nested
        if mixed.any():
            text[mixed] = [str(v) for v in text[mixed]]
        out[col] = pd.Series(text, index=out.index, dtype=object).where(present, None)
    return out


def write_private_parquet(frame: pd.DataFrame | pa.Table, path: Path, root: Path) -> None:
    """Write ``frame`` (a DataFrame, or an Arrow table as it is) to ``path`` atomically, the
    file 0600 and its directories 0700."""
    _private_dirs(root, path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)  # mkstemp creates it 0600: readable by no one else from the first byte
    try:
        if isinstance(frame, pa.Table):
            pq.write_table(frame, tmp)
        else:
            frame.to_parquet(tmp, index=False)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class ParquetIOManager(dg.ConfigurableIOManager):
    """Writes each asset's DataFrame to ``<base_dir>/<asset/key/path>.parquet`` (0600, dirs 0700)."""

    base_dir: str = ""

    def _root(self) -> Path:
        return storage_root(self.base_dir)

    def _path(self, context: dg.InputContext | dg.OutputContext) -> Path:
        return self.key_path(context.asset_key)

    def key_path(self, key: dg.AssetKey) -> Path:
        """Where the output of ``key`` lies (a test or a tool may look at it)."""
        return self._root().joinpath(*key.path[:-1], f"{key.path[-1]}.parquet")

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: expected a DataFrame, got {type(obj).__name__}"
            )
        frame = _jsonify_nested(obj).reset_index(drop=True)
        frame.columns = [str(c) for c in frame.columns]
        write_private_parquet(frame, self._path(context), self._root())

    def held_rows(self, key: dg.AssetKey) -> int | None:
        """Rows of the output of ``key`` on disk (None: there is none). A step whose inputs
        did not change leaves its last output in place; this tells it whether it can."""
        path = self.key_path(key)
        if not path.exists():
            return None
        try:
            return int(pq.read_metadata(path).num_rows)
        except (OSError, pa.ArrowInvalid):
            return None

    def held_output(self, key: dg.AssetKey) -> pd.DataFrame | None:
        """The output of ``key`` on disk as a later input reads it (None: there is none or
        it cannot be read): a step that changes a part of its last output starts from it."""
        path = self.key_path(key)
        try:
            return pd.read_parquet(path) if path.exists() else None
        except (OSError, pa.ArrowInvalid):
            return None

    def replace_rows(
        self,
        key: dg.AssetKey,
        column: str,
        values: Iterable[str],
        rows: pd.DataFrame,
        attrs: dict,
    ) -> pa.Table | None:
        """Rewrite the output of ``key`` on disk with its rows whose ``column`` is one of
        ``values`` left out and ``rows`` added, its ``attrs`` set: what a step that changed
        a part of its last output writes, without a Python object per value of the rest.
        Returns the table written; None (nothing written) when there is no such output or
        ``rows`` do not fit its columns and types: the caller then writes its output whole."""
        path = self.key_path(key)
        if not path.exists():
            return None
        try:
            held = pq.read_table(path)
            fresh = pa.Table.from_pandas(
                _jsonify_nested(rows).reset_index(drop=True), preserve_index=False
            )
            if set(fresh.column_names) != set(held.column_names):
                return None
            fresh = fresh.select(held.column_names).cast(held.schema)
            doomed = pa.array(sorted({str(v) for v in values}), pa.string())
            kept = held.filter(pc.invert(pc.is_in(held[column], value_set=doomed)))
            out = pa.concat_tables([kept, fresh])
        except (OSError, KeyError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return None
        meta = {**(held.schema.metadata or {}), b"PANDAS_ATTRS": json.dumps(attrs).encode()}
        out = out.replace_schema_metadata(meta)
        write_private_parquet(out, path, self._root())
        return out

    def held_shape(self, key: dg.AssetKey) -> pd.DataFrame | None:
        """The output of ``key`` on disk without its values: an empty frame of its columns
        and ``attrs`` (the pull it came from) and ``attrs["custsync/rows"]`` its row count,
        from the Parquet footer (None: there is none or it cannot be read)."""
        path = self.key_path(key)
        if not path.exists():
            return None
        try:
            meta = pq.read_metadata(path)
        except (OSError, pa.ArrowInvalid):
            return None
        schema = meta.schema.to_arrow_schema()
        frame = pd.DataFrame(columns=[c for c in schema.names if not c.startswith("__index")])
        attrs = (schema.metadata or {}).get(b"PANDAS_ATTRS")
        frame.attrs = {**(json.loads(attrs) if attrs else {}), HELD_ROWS: int(meta.num_rows)}
        return frame

    def held_columns(self, key: dg.AssetKey, columns: list[str]) -> pd.DataFrame | None:
        """Only ``columns`` of the output of ``key`` on disk, text as Arrow-backed strings
        (None: there is none, it cannot be read or it lacks a column): a check that counts
        one column of a million-row output reads that column, not the frame."""
        path = self.key_path(key)
        if not path.exists():
            return None
        mapper = {pa.string(): ARROW_TEXT, pa.large_string(): ARROW_TEXT}.get
        try:
            return pq.read_table(path, columns=columns).to_pandas(types_mapper=mapper)
        except (OSError, pa.ArrowInvalid, KeyError):  # unreadable, or without the columns
            return None

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        path = self._path(context)
        if not path.exists():
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()} has not been materialized yet ({path}); "
                "materialize it first"
            )
        if (context.definition_metadata or {}).get(ARROW_TEXT_INPUT):
            mapper = {pa.string(): ARROW_TEXT, pa.large_string(): ARROW_TEXT}.get
            return pq.read_table(path).to_pandas(types_mapper=mapper)
        return pd.read_parquet(path)


def kept_outputs(context: dg.AssetExecutionContext, expected: dict[dg.AssetKey, int]) -> bool:
    """Whether the run's IO manager still holds, for each key, the output with the expected
    rows: then a step that found nothing to do yields no value and those stay in place."""
    io = getattr(context.resources, "io_manager", None)
    held_rows = getattr(io, "held_rows", None)
    return held_rows is not None and all(held_rows(k) == n for k, n in expected.items())


def held_stamp(context: dg.AssetExecutionContext, key: dg.AssetKey, name: str) -> str | None:
    """The stamp ``name`` the output of ``key`` on disk was written with, from its footer
    (None: no such output or stamp, or an IO manager that cannot tell)."""
    io = getattr(context.resources, "io_manager", None)
    held_shape = getattr(io, "held_shape", None)
    shape = held_shape(key) if held_shape is not None else None
    return None if shape is None else shape.attrs.get(name)


# --------------------------------------------------------------------------- erasure

GOLDEN_ID_COLUMNS = ("golden_id", "golden_id_a", "golden_id_b", "merged_into")
SOURCE_PAIRS = (
    ("connector", "source_id"),
    ("connector_a", "source_id_a"),
    ("connector_b", "source_id_b"),
)


def person_rows(
    frame: pd.DataFrame,
    golden_ids: Iterable[str],
    records: Iterable[tuple[str, str]],
    id_parts: Iterable[tuple[str, ...]] = (),
) -> np.ndarray:
    """Which rows of ``frame`` belong to the person: a golden id of theirs, one of their
    (connector, source_id) records, or — a raw payload in vendor field names, without
    those columns — a row holding every part of one of their source ids (``id_parts``:
    ``("u123", "SE01")`` for a composite id) as a cell value."""
    hit = np.zeros(len(frame), dtype=bool)
    gids = list(golden_ids)
    for col in GOLDEN_ID_COLUMNS:
        if col in frame.columns:
            hit |= frame[col].astype("string").isin(gids).fillna(False).to_numpy(dtype=bool)
    recs = list(records)
    for conn_col, id_col in SOURCE_PAIRS:
        if recs and conn_col in frame.columns and id_col in frame.columns:
            keys = pd.MultiIndex.from_arrays(
                [frame[conn_col].astype("string"), frame[id_col].astype("string")]
            )
            hit |= keys.isin(recs)
    parts = [p for p in id_parts if p]
    # a raw payload has no (connector, source_id) pair: a vendor's own field of that name
    # (Voucherify's ``source_id``) is no connector's record id
    paired = any(c in frame.columns and i in frame.columns for c, i in SOURCE_PAIRS)
    if parts and not paired:
        texts = [
            frame[c].astype("string")
            for c in frame.columns
            if frame[c].dtype == object or isinstance(frame[c].dtype, pd.StringDtype)
        ]
        for wanted in parts:  # a person has a handful of records: a few vectorized passes
            row = np.ones(len(frame), dtype=bool)
            for part in wanted:
                has = np.zeros(len(frame), dtype=bool)
                for text in texts:
                    has |= (text == part).fillna(False).to_numpy(dtype=bool)
                row &= has
            hit |= row
    return hit


def purge_outputs(
    root: Path,
    golden_ids: Iterable[str],
    records: Iterable[tuple[str, str]],
    id_parts: Iterable[tuple[str, ...]] = (),
) -> dict[str, int]:
    """Rewrite every stored step output under ``root`` without the person's rows, and a
    lane's output (``<connector>/...``) without their source ids among the ids its pull
    noted as deleted there (``deleted_ids`` in the frame's attrs).

    Returns rows removed per file (relative path; 0: only noted ids); files without such
    rows or ids are left alone.
    """
    gids, recs, vals = list(golden_ids), list(records), list(id_parts)
    removed: dict[str, int] = {}
    if not root.exists():
        return removed
    for path in sorted(root.rglob("*.parquet")):
        frame = pd.read_parquet(path)
        hit = person_rows(frame, gids, recs, vals)
        lane = path.relative_to(root).parts[0]
        noted = _forget_noted_ids(frame.attrs, {str(s) for c, s in recs if str(c) == lane})
        if hit.any() or noted:
            out = frame[~hit].reset_index(drop=True)
            out.attrs = frame.attrs
            write_private_parquet(out, path, root)
            removed[str(path.relative_to(root))] = int(hit.sum())
    return removed


def _forget_noted_ids(attrs: dict, ids: set[str]) -> int:
    """Drop ``ids`` from every ``deleted_ids`` list in ``attrs`` (in place); how many."""
    gone = 0
    for value in attrs.values():
        if isinstance(value, dict) and isinstance(value.get("deleted_ids"), list):
            kept = [i for i in value["deleted_ids"] if str(i) not in ids]
            gone += len(value["deleted_ids"]) - len(kept)
            value["deleted_ids"] = kept
    return gone
