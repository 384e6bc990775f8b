"""The file connector: CSV and JSON-lines customer exports (seed 002: "import your customer
database with a CSV file").

Reads one file or a glob of files with the same YAML field mapping as the
generic REST connector (``mapping``: column -> canonical column, where a
cross-system reference maps to the referenced system's column, e.g.
``Voyado_Id__c: voyado_id``, ``Customer_Number__c: customer_number``). Every
value is read as text, as received: only an empty cell is missing, so a
person called "Null" or a code "007" survives. A row that cannot be decoded or
parsed stays in the frame with its line number and the reason
(``connectors.file_rows``): validation quarantines it, the other rows go on. An
empty file, or one without a header row, is one error naming the file.
Incremental reads use an updated-at column when one is configured, else the
files' modification times. Writes upsert rows by id into ``write_path`` (atomically replaced).
"""

from __future__ import annotations

import glob
import os
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from custsync_pipeline.config import ConnectorConfig
from custsync_pipeline.connectors.base import ReadResult, ReadStats, WriteOp, WriteResult
from custsync_pipeline.connectors.common import (
    FieldMapping,
    check_options,
    column,
    is_missing,
    jsonable,
    mapping_from_options,
    overlap_from_options,
    overlap_start,
    parse_times,
    utc,
)
from custsync_pipeline.connectors.entries import (
    AspectMapping,
    parse_aspect_options,
    times_or_nat,
)
from custsync_pipeline.connectors.file_rows import (
    ROWS_IN_FILE,
    RowFilter,
    UnreadableFileError,
    decode,
    read_csv_text,
    read_jsonl_text,
)
from custsync_pipeline.connectors.http import ConnectorError
from custsync_pipeline.domain.aspects import empty_entries
from custsync_pipeline.domain.received import ERROR_COLUMN, READ_COLUMNS

_TRUE = {"1", "true", "yes", "y", "t"}


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


class FileConnector:
    """CSV / JSON-lines exports (``options``: path, format, delimiter, encoding, mapping, ...)."""

    OPTIONS = frozenset(
        {
            "path", "base_dir", "format", "delimiter", "encoding", "deleted_field",
            "incremental", "write_path", "id_field", "updated_field", "created_field",
            "mapping", "static", "read_only", "aspects",
        }
    )  # fmt: skip

    def __init__(self, name: str, cfg: ConnectorConfig, env: Mapping[str, str]) -> None:
        self.name = name
        self.cfg = cfg
        self.options: dict[str, Any] = dict(cfg.options)
        check_options(name, self.options, self.OPTIONS)
        self.pattern = str(self.options.get("path") or "")
        if not self.pattern:
            raise ConnectorError(name, "options.path: name the export file (or a glob)")
        base_dir = self.options.get("base_dir")
        if base_dir and not os.path.isabs(self.pattern):
            self.pattern = str(Path(base_dir) / self.pattern)
        self.format = self.options.get("format") or (
            "jsonl" if self.pattern.endswith((".jsonl", ".ndjson", ".json")) else "csv"
        )
        if self.format not in ("csv", "jsonl"):
            raise ConnectorError(name, f"options.format: {self.format!r} is not csv or jsonl")
        self.delimiter = self.options.get("delimiter", ",")
        self.encoding = self.options.get("encoding", "utf-8")
        self.deleted_field: str | None = self.options.get("deleted_field")
        self.incremental = self.options.get("incremental", "auto")
        if self.incremental not in ("auto", "mtime", "column"):
            raise ConnectorError(name, "options.incremental: one of auto, mtime, column")
        try:
            self.fields: FieldMapping = mapping_from_options(name, self.options)
            # multi-valued aspects from flattened columns or JSON-lines lists (entries.py)
            self.aspect_map = AspectMapping(name, parse_aspect_options(self.options.get("aspects")))
        except ValueError as exc:
            raise ConnectorError(name, str(exc)) from None
        if self.incremental == "column" and not self.fields.updated_field:
            raise ConnectorError(name, "options.incremental: column needs options.updated_field")
        self.overlap = overlap_from_options(self.options)
        self.write_path = self.options.get("write_path") or (
            self.pattern if not glob.has_magic(self.pattern) else None
        )

    # -- read -----------------------------------------------------------------

    def _files(self) -> list[str]:
        files = sorted(glob.glob(self.pattern))
        if not files:
            raise ConnectorError(self.name, f"no file matches options.path {self.pattern!r}")
        return files

    def _load(self, path: str, keep: RowFilter | None = None) -> pd.DataFrame:
        """Every row of one file (but those ``keep`` leaves out: ``read_csv_text``; a hint,
        rows it refuses may still come), a row that cannot be decoded or parsed named in
        the ``domain.received`` columns (validation quarantines it); the others go on."""
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            text = decode(data, self.encoding, path)
            if self.format == "jsonl":
                return read_jsonl_text(text, source=path, encoding=self.encoding)
            frame = read_csv_text(
                text, delimiter=self.delimiter, source=path, encoding=self.encoding, keep=keep
            )
        except UnreadableFileError as exc:
            raise ConnectorError(self.name, str(exc)) from None
        except (OSError, ValueError) as exc:
            raise ConnectorError(self.name, f"cannot read {path}: {exc}") from None
        missing = [f for f in self.fields.id_fields if f not in frame.columns]
        if missing:  # the first line is data, or another file's header: say so, not its cells
            raise ConnectorError(
                self.name,
                f"{path}: no header row naming the id column(s) {missing} (options.id_field); "
                f"the first line has {sum(c not in READ_COLUMNS for c in frame.columns)} cells",
            )
        return frame

    def read(self, since: datetime | None = None) -> ReadResult:
        started = time.perf_counter()
        start = overlap_start(since, self.overlap)
        by_column = self.incremental == "column" or (
            self.incremental == "auto" and self.fields.updated_field is not None
        )
        files = self._files()
        mtimes = {f: datetime.fromtimestamp(os.path.getmtime(f), UTC) for f in files}
        if start is not None and not by_column:
            files = [f for f in files if mtimes[f] > start]
        since_start = None
        if by_column and start is not None:

            def recent(updated: pd.Series) -> np.ndarray:
                # rows without a parseable time are kept: never lose a record silently
                return ((updated >= pd.Timestamp(start)) | updated.isna()).to_numpy(bool)

            since_start = (
                self.fields.updated_field or "",
                lambda cells: recent(parse_times(cells)),
            )
        # a file with no data row adds nothing; one whose rows are all older than the
        # watermark still gives its columns
        frames = []
        for path in files:
            frame = self._load(path, since_start)
            held = frame.attrs.pop(ROWS_IN_FILE, 0)  # (not copied into the records read)
            if held or not frame.empty:
                frames.append(frame)
        raw = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        watermark: datetime | None = None
        if not raw.empty:
            if by_column:
                updated = parse_times(column(raw, self.fields.updated_field or ""))
                if start is not None:
                    keep = recent(updated)
                    raw, updated = raw[keep].reset_index(drop=True), updated[keep]
                top = updated.max()
                watermark = None if pd.isna(top) else top.to_pydatetime()
            else:
                watermark = max(mtimes[f] for f in files)
        if watermark is not None and since is not None and watermark < utc(since):
            watermark = utc(since)  # rows only from the overlap window: never go backwards
        deleted: list[str] = []
        if self.deleted_field and self.deleted_field in raw.columns and not raw.empty:
            gone = raw[self.deleted_field].astype("string").str.strip().str.lower().isin(_TRUE)
            # a row that could not be read says nothing reliable, not even that it is deleted
            gone &= raw[ERROR_COLUMN].isna()
            deleted = self.fields.source_ids(raw[gone]).dropna().astype(str).tolist()
            raw = raw[~gone].reset_index(drop=True)
        stats = ReadStats(pages=len(files), elapsed_s=time.perf_counter() - started)
        return ReadResult(records=raw, deleted_ids=deleted, watermark=watermark, stats=stats)

    def absent_columns(self, raw: pd.DataFrame) -> list[str]:
        """The columns the config reads (``options.mapping``, the time fields) that the
        files do not have: a misspelt or renamed column, which would otherwise read as a
        value missing in every row. (``deleted_field`` may be absent when nothing is
        deleted: a JSON-lines export names it on deleted rows only.)"""
        if raw.empty:
            return []
        wanted = [*self.fields.mapping, self.fields.updated_field, self.fields.created_field]
        return sorted({w for w in wanted if w and w not in raw.columns})

    # -- mapping --------------------------------------------------------------

    def to_canonical(self, raw: pd.DataFrame) -> pd.DataFrame:
        return self.fields.to_canonical(raw)

    def to_aspects(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Entries of ``options.aspects`` (rows that could not be read give none)."""
        if raw.empty:
            return empty_entries()
        if ERROR_COLUMN in raw.columns:
            raw = raw[raw[ERROR_COLUMN].isna()]
        return self.aspect_map.to_aspects(
            raw, self.fields.source_ids(raw), times_or_nat(raw, self.fields.updated_field)
        )

    def from_canonical(self, golden: pd.DataFrame) -> list[dict[str, Any]]:
        return self.fields.from_canonical(golden)

    # -- write ----------------------------------------------------------------

    def write(self, ops: list[WriteOp]) -> list[WriteResult]:
        """Upsert rows by id into ``write_path`` (a create gets the golden id as its id)."""
        if not self.write_path:
            return [
                WriteResult(op.golden_id, op.target_id, False, "options.write_path is not set")
                for op in ops
            ]
        if len(self.fields.id_fields) != 1:
            return [
                WriteResult(op.golden_id, op.target_id, False, "writes need a single id_field")
                for op in ops
            ]
        id_field = self.fields.id_fields[0]
        path = Path(self.write_path)
        current = self._load(str(path)) if path.exists() else pd.DataFrame()
        current = current.drop(columns=[c for c in READ_COLUMNS if c in current.columns])
        if id_field not in current.columns:
            current[id_field] = pd.Series(dtype="string")
        current = current.set_index(id_field, drop=False)
        results: list[WriteResult] = []
        rows: dict[str, dict[str, Any]] = {}
        drop: set[str] = set()
        for op in ops:
            key = op.target_id or op.golden_id
            if op.op == "delete":
                drop.add(key)
                rows.pop(key, None)
            elif op.op == "upsert":
                row = {k: jsonable(v) for k, v in _flatten(op.payload).items() if not is_missing(v)}
                row[id_field] = key
                rows[key] = {**rows.get(key, {}), **row}
                drop.discard(key)
            else:
                results.append(
                    WriteResult(op.golden_id, op.target_id, False, f"unknown op {op.op!r}")
                )
                continue
            results.append(WriteResult(op.golden_id, key, True))
        if rows:
            updates = pd.DataFrame.from_records(list(rows.values())).astype("string")
            updates = updates.set_index(id_field, drop=False)
            # partial update: cells not in the payload keep their stored value
            merged = updates.combine_first(current)
            current = merged[list(dict.fromkeys([*current.columns, *updates.columns]))]
        current = current[~current.index.isin(drop)]
        self._save(path, current.reset_index(drop=True))
        return results

    def _save(self, path: Path, frame: pd.DataFrame) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            if self.format == "csv":
                frame.to_csv(tmp, index=False, sep=self.delimiter, encoding=self.encoding)
            else:
                frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
            os.replace(tmp, path)  # atomic: a reader never sees half a file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def close(self) -> None:
        return None

    def __enter__(self) -> FileConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
