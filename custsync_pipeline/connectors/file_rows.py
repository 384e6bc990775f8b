"""Reading CSV and JSON-lines exports so that every row is either kept or named.

The pandas C parser fails a whole file on one bad byte, one ragged row or one
unterminated quote, and cuts a field at a NUL. Here a file is decoded with
``surrogateescape`` (so one bad byte spoils one row, not the file) and split by
Python's C ``csv`` reader in strict mode; a row that cannot be decoded or parsed
stays in the frame with its line number and reason in the ``domain.received``
columns, and validation quarantines it. NUL and other control characters are kept
as received, never cut: validation's ``printable`` check quarantines them. Bytes
that do not decode become U+FFFD in the frame (the row is rejected either way,
and its payload stays text any store and Parquet can hold).

Clean files take a fast path (a CSV file of one record per line through Arrow's reader,
once the strict ``csv`` reader has agreed with every line holding a quote; JSON lines in
one ``json.loads`` call); the per-row bookkeeping only runs when something is wrong.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from custsync_pipeline.domain.received import (
    CHECK_COLUMN,
    ERROR_COLUMN,
    FILE_COLUMN,
    LINE_COLUMN,
    READ_CHECK_REASONS,
    TEXT_COLUMN,
)

# the data rows a file held before ``keep`` left some out (in the frame's attrs)
ROWS_IN_FILE = "custsync/rows_in_file"
# a column's name and which of its cells' rows to keep (``read_csv_text``)
RowFilter = tuple[str, Callable[[pd.Series], np.ndarray]]

# lone surrogates: undecodable bytes under surrogateescape, or a JSON "\udc80" escape
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # the same, escaped in JSON text


# a 10 MB cell is a value to validate (max_length), not a reason to fail the file;
# the limit is process-wide, so only ever raised
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))


class UnreadableFileError(ValueError):
    """The file as a whole cannot be read (empty, no header, unknown encoding)."""


def decode(data: bytes, encoding: str, source: str) -> str:
    """Text of ``data``; a byte the encoding refuses becomes a lone surrogate (one row, not the file)."""
    try:
        text = data.decode(encoding, errors="surrogateescape")
    except LookupError:
        raise UnreadableFileError(f"{source}: unknown encoding {encoding!r}") from None
    except UnicodeError as exc:  # encodings that cannot escape (utf-16 with an odd length …)
        raise UnreadableFileError(f"{source}: not readable as {encoding}: {exc.reason}") from None
    return text[1:] if text.startswith("\ufeff") else text


def _reason(source: str, line: int, check: str, detail: str = "") -> str:
    return f"{source} line {line}: {detail or READ_CHECK_REASONS[check]}"


def _undecodable_detail(value: str, encoding: str) -> str:
    bad = _SURROGATE.search(value)
    code = ord(bad.group(0)) if bad else 0
    if 0xDC80 <= code <= 0xDCFF:
        return f"byte 0x{code - 0xDC00:02x} is not valid {encoding} ({READ_CHECK_REASONS['undecodable']})"
    return f"a lone surrogate \\u{code:04x} is not text ({READ_CHECK_REASONS['undecodable']})"


def _flag_undecodable(
    frame: pd.DataFrame,
    errors: pd.Series,
    checks: pd.Series,
    where: Callable[[int], str],
    encoding: str,
    columns: list[str] | None = None,
) -> None:
    """Rows holding lone surrogates: named (if not already; ``where(pos)`` says which row) and
    the surrogates replaced by U+FFFD."""
    for col in frame.columns if columns is None else columns:
        if (
            col in (LINE_COLUMN, FILE_COLUMN, ERROR_COLUMN, CHECK_COLUMN)
            or frame[col].dtype != object
        ):
            continue
        text = frame[col].astype("string")
        hit = text.str.contains(_SURROGATE, regex=True).fillna(False).to_numpy(dtype=bool)
        if not hit.any():
            continue
        first = hit & errors.isna().to_numpy()
        for pos in np.flatnonzero(first):  # only the bad rows: a Python call each
            errors.iat[pos] = f"{where(pos)}: {_undecodable_detail(text.iat[pos], encoding)}"
            checks.iat[pos] = "undecodable"
        fixed = text[hit].str.replace(_SURROGATE, "\ufffd", regex=True)
        values = frame[col].to_numpy(dtype=object, copy=True)
        values[hit] = fixed.to_numpy(dtype=object)
        frame[col] = values


def flag_unencodable(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Name the rows of any connector's answer that hold text no store can take.

    A JSON ``"\\udc80"`` escape decodes to a lone surrogate, which neither UTF-8, Parquet
    nor a database can hold: such a row gets the ``domain.received`` error columns (check
    ``undecodable``; validation rejects it) and U+FFFD in place of the surrogate, instead
    of failing the lane. One Arrow conversion per text column decides; a frame without
    such text comes back as it is.
    """
    bad: list[str] = []
    for col in frame.columns:
        series = frame[col]
        if series.dtype != object or col in (LINE_COLUMN, FILE_COLUMN, ERROR_COLUMN, CHECK_COLUMN):
            continue
        try:
            pa.array(series, from_pandas=True)
        except UnicodeEncodeError:
            bad.append(col)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            # mixed values (the IO manager stores them as text): look at the strings only
            strings = series[series.map(lambda v: isinstance(v, str))].astype("string")
            if strings.str.contains(_SURROGATE, regex=True).any():
                bad.append(col)
    if not bad:
        return frame
    out = frame.copy()
    errors = out[ERROR_COLUMN].astype(object) if ERROR_COLUMN in out else None
    errors = pd.Series([None] * len(out), dtype=object) if errors is None else errors
    checks = out[CHECK_COLUMN].astype(object) if CHECK_COLUMN in out else None
    checks = pd.Series([None] * len(out), dtype=object) if checks is None else checks
    errors, checks = errors.reset_index(drop=True), checks.reset_index(drop=True)
    lines = out[LINE_COLUMN].to_numpy() if LINE_COLUMN in out else None

    def where(pos: int) -> str:
        return f"{source} line {lines[pos]}" if lines is not None else f"{source} record {pos + 1}"

    _flag_undecodable(out, errors, checks, where, "utf-8", bad)
    out[ERROR_COLUMN] = errors.to_numpy()
    out[CHECK_COLUMN] = checks.to_numpy()
    return out


def _finish(
    frame: pd.DataFrame,
    errors: pd.Series,
    checks: pd.Series,
    text: str,
    source: str,
    encoding: str,
) -> pd.DataFrame:
    if _SURROGATE.search(text) or _SURROGATE_ESCAPE.search(text):
        lines = frame[LINE_COLUMN].to_numpy()
        _flag_undecodable(frame, errors, checks, lambda p: f"{source} line {lines[p]}", encoding)
    frame[ERROR_COLUMN] = errors.astype(object).where(errors.notna(), None)
    frame[CHECK_COLUMN] = checks.astype(object).where(checks.notna(), None)
    return frame


# --------------------------------------------------------------------------- CSV


def _parse_tracked(
    lines: list[str], delimiter: str
) -> tuple[list[list[str]], list[int], dict[int, str]]:
    """Rows, the line each starts on (1-based) and a check name per row that failed to parse.

    A parse error inside a row that spans several lines blames the row's first line
    only (an opening quote that never closes swallows the lines after it) and parsing
    starts again on the next line, so one stray quote costs one row.
    """
    rows: list[list[str]] = []
    starts: list[int] = []
    failed: dict[int, str] = {}
    i, n = 0, len(lines)
    while i < n:
        reader = csv.reader(itertools.islice(lines, i, None), delimiter=delimiter, strict=True)
        prev = 0
        try:
            for row in reader:
                rows.append(row)
                starts.append(i + prev + 1)
                prev = reader.line_num
            break
        except csv.Error as exc:
            start, end = i + prev, i + reader.line_num  # 0-based first line, lines consumed
            eof = "end of data" in str(exc)
            failed[len(rows)] = "unterminated_quote" if eof else "malformed_quote"
            # the fields as far as they can be read (the id, for the quarantine row)
            rows.append(_lenient(lines[start], delimiter))
            starts.append(start + 1)
            i = start + 1 if (eof or end - start > 1) else end
    return rows, starts, failed


def _lenient(line: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:
        return []


def _header(names: list[str]) -> list[str]:
    """Column names as pandas would give them: blanks named, duplicates numbered."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        name = name if name.strip() else f"Unnamed: {i}"
        base = name
        while name in seen:
            seen[base] += 1
            name = f"{base}.{seen[base]}"
        seen[name] = 0
        out.append(name)
    return out


def _arrow_csv(
    text: str, delimiter: str, source: str, keep: RowFilter | None = None
) -> pd.DataFrame | None:
    """A clean file read by Arrow's CSV reader (a few times faster than the ``csv``
    module at a million rows), or None when the file is not clean in the way the careful
    path would see it: a row spanning lines, a blank or ragged line, a quote the strict
    ``csv`` reader refuses (Arrow would take ``"b"c`` as ``bc``), a byte that did not
    decode, a header that is not the first line. ``keep``: ``read_csv_text``."""
    if len(delimiter) != 1 or ("\\u" in text and _SURROGATE_ESCAPE.search(text)):
        return None
    try:
        # a byte that did not decode is a lone surrogate, which UTF-8 refuses: found in C
        # (a regular expression over the text took a third of a second per 60 MB)
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    # lines found in the bytes (UTF-8 has no newline byte inside a character): no list of
    # a million lines, no Python look at each
    body = data[:-1] if data.endswith(b"\n") else data
    raw = np.frombuffer(body, dtype=np.uint8)
    breaks = np.flatnonzero(raw == ord("\n"))
    n_lines = len(breaks) + 1
    starts, ends = np.r_[0, breaks + 1], np.r_[breaks, len(body)]
    first = body[: ends[0]].decode("utf-8")
    if n_lines < 2 or not first.strip():
        return None
    try:
        header = next(csv.reader([first], delimiter=delimiter, strict=True))
        # lines with a quote: the strict reader must take each as one whole row
        at = np.unique(np.searchsorted(breaks, np.flatnonzero(raw == ord('"'))))
        quoted = [body[starts[i] : ends[i]].decode("utf-8") for i in at]
        for row in csv.reader(quoted, delimiter=delimiter, strict=True):
            if not row:
                return None
        names = [f"c{i}" for i in range(len(header))]
        import pyarrow.csv as pa_csv  # noqa: PLC0415 - only this path needs it

        table = pa_csv.read_csv(
            io.BytesIO(data),
            read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except (csv.Error, pa.ArrowInvalid, StopIteration):
        return None
    if table.num_rows != n_lines - 1:  # a blank line was skipped, or a row spans lines
        return None
    columns = _header(header)
    line_numbers = np.arange(2, n_lines + 1, dtype=np.int64)
    if keep is not None and keep[0] in columns:
        # rows the caller would drop are dropped while they are Arrow's: past the filter's
        # own column, a Python object is made only for the cells of the rows it keeps
        picked = keep[1](pd.Series(_cells(table.column(names[columns.index(keep[0])]))))
        picked = np.asarray(picked, dtype=bool)
        table, line_numbers = table.filter(pa.array(picked)), line_numbers[picked]
    frame = pd.DataFrame({c: _cells(table.column(c)) for c in names}, dtype=object)
    frame.columns = columns
    if keep is not None:
        frame.attrs[ROWS_IN_FILE] = n_lines - 1  # (a file none of whose rows is kept)
    frame[LINE_COLUMN] = line_numbers
    frame[FILE_COLUMN] = source
    frame[ERROR_COLUMN] = None
    frame[CHECK_COLUMN] = None
    return frame


def _cells(column: pa.ChunkedArray) -> np.ndarray:
    """One column's cells as str objects, NaN for a missing cell (as the careful path has
    them), found by Arrow's null bitmap rather than a look at every object."""
    values = column.to_numpy(zero_copy_only=False).astype(object, copy=False)
    if column.null_count:
        values[column.is_null().to_numpy(zero_copy_only=False)] = np.nan
    return values


def read_csv_text(
    text: str,
    *,
    delimiter: str = ",",
    source: str = "",
    encoding: str = "utf-8",
    arrow: bool = True,
    keep: RowFilter | None = None,
) -> pd.DataFrame:
    """Every row of a CSV text as strings (an empty cell is missing), with the ``received``
    columns; a clean file through Arrow's reader unless ``arrow`` is False.

    ``keep``: (column, rows to keep given that column's cells): a clean file's other rows
    are left out (an incremental read's rows older than its watermark). Only a hint: a
    file read the careful way comes whole, and the caller filters again."""
    if not text.strip():
        raise UnreadableFileError(f"{source}: the file is empty (no header row)")
    fast = _arrow_csv(text, delimiter, source, keep) if arrow else None
    if fast is not None:
        return fast
    lines = list(io.StringIO(text, newline=""))
    failed: dict[int, str] = {}
    try:
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        rows = list(reader)
        starts: list[int] | None = (
            None if len(rows) != len(lines) else list(range(1, len(rows) + 1))
        )
    except csv.Error:
        rows, starts, failed = _parse_tracked(lines, delimiter)
    if starts is None:  # a quoted field spans lines: count where each row starts
        rows, starts, failed = _parse_tracked(lines, delimiter)
    # leading blank lines are not the header
    skip = 0
    while skip < len(rows) and not any(f.strip() for f in rows[skip]):
        skip += 1
    if skip == len(rows) or skip in failed:
        raise UnreadableFileError(
            f"{source}: no header row (the first line is not a list of column names)"
        )
    header = _header(rows[skip])
    width = len(header)
    body, body_starts = rows[skip + 1 :], starts[skip + 1 :]
    lens = np.fromiter(map(len, body), dtype=np.int64, count=len(body))
    blank = lens == 0
    if width > 1:  # a line of spaces is no record either
        one = np.flatnonzero(lens == 1)
        blank[one] = [not body[p][0].strip() for p in one]
    frame = pd.DataFrame(body, columns=None, dtype=object) if body else pd.DataFrame()
    frame = frame.reindex(columns=range(max(width, frame.shape[1])))
    frame = frame.iloc[:, :width]
    frame.columns = header
    frame = frame.mask(frame == "")  # only an empty cell is missing: "Null" and "007" stay
    frame[LINE_COLUMN] = np.asarray(body_starts, dtype=np.int64)
    frame[FILE_COLUMN] = source
    errors = pd.Series([None] * len(frame), dtype=object)
    checks = pd.Series([None] * len(frame), dtype=object)
    for pos, check in failed.items():
        if pos > skip:
            errors.iat[pos - skip - 1] = _reason(source, starts[pos], check)
            checks.iat[pos - skip - 1] = check
    ragged = np.flatnonzero((lens != width) & ~blank & errors.isna().to_numpy())
    for pos in ragged:  # only the bad rows
        errors.iat[pos] = _reason(
            source,
            int(body_starts[pos]),
            "ragged_row",
            f"{lens[pos]} fields, the header has {width} ({READ_CHECK_REASONS['ragged_row']})",
        )
        checks.iat[pos] = "ragged_row"
    keep = ~blank
    frame = _finish(frame, errors, checks, text, source, encoding)
    return frame if keep.all() else frame[keep].reset_index(drop=True)


# --------------------------------------------------------------------------- JSON lines


def read_jsonl_text(text: str, *, source: str = "", encoding: str = "utf-8") -> pd.DataFrame:
    """One row per JSON object line (nested objects flattened to dotted columns), with the ``received`` columns."""
    if not text.strip():
        raise UnreadableFileError(f"{source}: the file is empty (no records)")
    lines = text.split("\n")
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    objs: list[object]
    try:  # fast path: json.loads mapped over the lines, no Python loop body
        objs = list(map(json.loads, (line for _, line in numbered)))
    except (ValueError, RecursionError):
        objs = []
        for _, line in numbered:  # per line: only a file with a broken line gets here
            try:
                objs.append(json.loads(line))
            except json.JSONDecodeError as exc:  # where in the line, not "line 1"
                objs.append(_NotJson(f"{exc.msg} at column {exc.colno}"))
            except (ValueError, RecursionError):
                objs.append(_NotJson("nested too deeply or not text"))
    records: list[dict[str, object]] = []
    for (line_no, line), obj in zip(numbered, objs, strict=True):
        if isinstance(obj, dict):
            records.append(obj)
            continue
        check = "not_json" if isinstance(obj, _NotJson) else "not_object"
        detail = f"{READ_CHECK_REASONS[check]}" + (
            f" ({obj.message})" if isinstance(obj, _NotJson) else ""
        )
        records.append(
            {
                ERROR_COLUMN: _reason(source, line_no, check, detail),
                CHECK_COLUMN: check,
                TEXT_COLUMN: line.rstrip("\r"),
            }
        )
    try:
        frame = pd.json_normalize(records, sep=".") if records else pd.DataFrame()
    except RecursionError:
        raise UnreadableFileError(f"{source}: objects nested too deeply to read") from None
    frame = frame.astype(object).where(frame.notna(), None) if len(frame.columns) else frame
    frame[LINE_COLUMN] = np.asarray([n for n, _ in numbered], dtype=np.int64)
    frame[FILE_COLUMN] = source
    for col in (ERROR_COLUMN, CHECK_COLUMN):
        if col not in frame.columns:
            frame[col] = None
    errors = frame.pop(ERROR_COLUMN).astype(object)
    checks = frame.pop(CHECK_COLUMN).astype(object)
    return _finish(frame, errors, checks, text, source, encoding)


class _NotJson:
    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message
