"""Validation of one connector's canonical frame: what passes, what is quarantined and why.

``validate_customers(frame, connector, raw)`` splits a (normalized) canonical
frame into ``valid`` rows and ``rejected`` quarantine rows, one per failure.

Policy — nothing bad gets through, nothing good is lost:

* **row** failures reject the record: a missing, empty, over-long or
  unprintable ``connector`` / ``source_id`` (the record cannot be keyed);
  duplicates of a ``source_id`` (the copy with the newest ``updated_at`` is
  kept, the others are rejected); a record that names nobody — a person with
  neither a (valid) last name nor a (valid) email, a company with neither a
  name nor an email (deleted records are exempt).
* **field** failures keep the record and null only the bad value: an address
  email-validator refuses, a phone ``phonenumbers`` cannot make E.164, an
  unknown country or language, a timestamp before 1900 or in the future, a
  value that could not be coerced to its type, over-long or unprintable text,
  text that starts like a spreadsheet formula. The received email/phone stay
  in ``email_raw``/``phone_raw``.

Every failure, row or field, is one row of ``rejected`` with ``severity``
``"row"`` or ``"field"``, the check name and a sentence saying why. Values of
personal fields appear masked in reasons. ``raw_payload`` is the vendor row as
JSON text when ``raw`` (aligned by position) is given, else the canonical row.

A payload of the wrong shape altogether — a required column missing or renamed
— raises ``SchemaShapeError`` naming the column, so that connector's step fails
while the others carry on.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.engines import pandas_engine

from custsync_pipeline.domain.canonical import (
    DATETIME_COLUMNS,
    NUMERIC_COLUMNS,
    RAW_COLUMNS,
    STRING_COLUMNS,
    VALIDATED_COLUMNS,
)
from custsync_pipeline.domain.identity_keys import mask_value as mask_key
from custsync_pipeline.domain.normalize import (
    arrow_strings,
    email_or_reason,
    phone_or_reason,
    phone_region,
)
from custsync_pipeline.domain.received import (
    CHECK_COLUMN,
    ERROR_COLUMN,
    FILE_COLUMN,
    LINE_COLUMN,
    READ_FIELD,
    received_column,
)
from custsync_pipeline.domain.schemas import (
    CHECK_REASONS,
    PAYLOAD_FIELDS,
    PAYLOAD_OBJECT_COLUMN,
    PAYLOAD_SCHEMAS,
    ROW_FIELDS,
    canonical_schema,
    payload_schema_key,
    required_payload_columns,
)
from custsync_pipeline.domain.times import iso_utc

REJECTED_COLUMNS: tuple[str, ...] = (
    "connector",
    "source_id",
    "field",
    "check",
    "severity",
    "reason",
    "raw_payload",
)

# Fields whose values are personal data: reasons show them masked.
PERSONAL_FIELDS = frozenset(
    {
        "first_name",
        "last_name",
        "company_name",
        "full_name",
        "birth_date",
        "first_name_raw",
        "last_name_raw",
        "company_name_raw",
        "icomm_user_id",
        "email",
        "email_raw",
        "phone",
        "phone_raw",
        "street",
        "city",
        "postal_code",
    }
)


class SchemaShapeError(ValueError):
    """A connector's payload has the wrong shape altogether (missing or renamed column)."""


@dataclass
class ValidationResult:
    """Outcome of validating one connector's batch.

    ``valid_positions[i]`` is the input row of ``valid`` row ``i`` and
    ``rejected_positions[j]`` the input row of ``rejected`` row ``j`` (positions
    in the frame given to ``validate_customers``, aligned with ``raw``).
    """

    valid: pd.DataFrame
    rejected: pd.DataFrame
    rows_in: int = 0
    valid_positions: np.ndarray = dataclass_field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )
    rejected_positions: np.ndarray = dataclass_field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )

    @property
    def rows_rejected(self) -> int:
        """Records dropped entirely (row severity)."""
        return self.rows_in - len(self.valid)

    @property
    def field_issues(self) -> int:
        return int((self.rejected["severity"] == "field").sum()) if len(self.rejected) else 0

    @property
    def valid_rate(self) -> float:
        return len(self.valid) / self.rows_in if self.rows_in else 1.0


def empty_rejected() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="string") for c in REJECTED_COLUMNS})


# --------------------------------------------------------------------------- masking


def mask_value(field: str, value: object, limit: int = 40) -> str:
    """A value fit for a reason string: personal data masked, long values cut, controls escaped."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "<missing>"
    text = str(value)
    if field in PERSONAL_FIELDS or field.startswith("payload."):
        if "@" in text and field.startswith("email"):
            local, _, domain = text.rpartition("@")
            return repr(f"{local[:1]}***@{domain[:limit]}")
        return repr(f"{text[:1]}***") + f" ({len(text)} chars)"
    if "@" in text:  # an id that is an e-mail address (an Icomm UserId of a guest)
        return repr(mask_key(text[: limit * 4]))
    shown = text if len(text) <= limit else text[:limit] + "…"
    return repr(shown) + ("" if len(text) <= limit else f" ({len(text)} chars)")


# --------------------------------------------------------------------------- shape + coercion


def check_payload(raw: pd.DataFrame, connector: str, connector_type: str | None = None) -> None:
    """Raise ``SchemaShapeError`` naming the column when ``raw`` lacks a column its API always sends.

    Call it on the connector's raw frame before mapping it (``to_canonical``), so a
    renamed or vanished field stops this connector with a clear message.
    """
    if raw is None or len(raw) == 0:
        return
    ctype = connector_type or connector
    objects: list[str] | None = None
    if ctype in PAYLOAD_OBJECT_COLUMN:
        col, default = PAYLOAD_OBJECT_COLUMN[ctype]
        objects = sorted(map(str, raw[col].dropna().unique())) if col in raw.columns else [default]
    required = required_payload_columns(ctype, objects)
    missing = [c for c in required if c not in raw.columns]
    if not missing:
        return
    have = sorted(map(str, raw.columns))
    hints = []
    for m in missing:
        folded = m.lower().replace("_", "")
        near = [h for h in have if h.lower().replace("_", "") == folded]
        near += [h for h in difflib.get_close_matches(m, have, n=2, cutoff=0.75) if h not in near]
        if near:
            hints.append(f"'{m}' (found {near})")
    raise SchemaShapeError(
        f"{connector}: payload is missing required column(s) {missing}"
        + (f" — renamed? {'; '.join(hints)}" if hints else "")
        + f"; columns received: {have[:40]}"
    )


def check_shape(
    frame: pd.DataFrame, connector: str, raw: pd.DataFrame | None, connector_type: str | None
) -> None:
    """Raise ``SchemaShapeError`` when the batch cannot be validated row by row at all."""
    if "source_id" not in frame.columns:
        raise SchemaShapeError(
            f"{connector}: canonical frame has no 'source_id' column (columns: {sorted(map(str, frame.columns))[:20]})"
        )
    if raw is None or len(raw) == 0:
        return
    if len(raw) != len(frame):
        raise SchemaShapeError(
            f"{connector}: raw payload has {len(raw)} rows but the canonical frame {len(frame)}"
        )
    check_payload(raw, connector, connector_type)


def payload_failures(raw: pd.DataFrame, connector_type: str) -> pd.DataFrame:
    """Every failure case of the connector's Pandera payload model on ``raw``.

    One row per failure: ``pos`` (row of ``raw``), ``column`` (vendor name),
    ``check``, ``failure_case``, ``severity`` and ``field``. A failure in the
    record's own id or object type (a required, non-nullable column, or
    ``object``) is ``row`` severity on ``source_id``: the record cannot be keyed.
    Any other column is ``field`` severity on the canonical column it maps to
    (``schemas.PAYLOAD_FIELDS``) or ``payload.<column>`` when the mapping is not
    fixed. The model runs lazily per object type, once per distinct value for
    repetitive columns (``schema_failures``).
    """
    out: list[pd.DataFrame] = []
    if connector_type in PAYLOAD_OBJECT_COLUMN:
        col, default = PAYLOAD_OBJECT_COLUMN[connector_type]
        kinds = (
            raw[col].fillna(default).astype(str)
            if col in raw.columns
            else pd.Series(default, index=raw.index)
        )
    else:
        kinds = pd.Series("", index=raw.index)
    for kind, idx in kinds.groupby(kinds, sort=False).groups.items():
        key = payload_schema_key(connector_type, str(kind) or None)
        if key is None:
            continue
        schema = PAYLOAD_SCHEMAS[key]
        cols = [c for c in schema.columns if c in raw.columns]
        if not cols:
            continue
        decisive = {
            c for c, column in schema.columns.items() if column.required and not column.nullable
        } | {"object"}
        rows = np.asarray(idx, dtype=np.int64)
        # explicit coercion to text first: a container (dict/list) is no value of a
        # scalar field, and Pandera then sees one string dtype
        sub = pd.DataFrame(
            {c: _coerce_strings(raw[c].iloc[rows].reset_index(drop=True))[0] for c in cols}
        )
        fc = schema_failures(sub, schema.select_columns(cols))
        fc = fc[fc["pos"].notna()]
        if not len(fc):
            continue
        column = fc["column"].astype(str).to_numpy()
        fields = PAYLOAD_FIELDS.get(key, {})
        row_level = np.isin(column, list(decisive))
        # names per distinct column and check, broadcast: a vendor that changes one format
        # fails every row, and that must not cost a Python call per row
        col_code, col_uniq = pd.factorize(column)
        field = np.array([fields.get(c, f"payload.{c}") for c in col_uniq], dtype=object)
        chk_code, chk_uniq = pd.factorize(fc["check"].astype(str).to_numpy())
        check = np.array([_check_name(c) for c in chk_uniq], dtype=object)
        out.append(
            pd.DataFrame(
                {
                    "pos": rows[fc["pos"].astype("int64").to_numpy()],
                    "column": column,
                    "check": check[chk_code],
                    "failure_case": fc["failure_case"].to_numpy(),
                    "severity": np.where(row_level, "row", "field"),
                    "field": np.where(row_level, "source_id", field[col_code]),
                }
            )
        )
    if not out:
        return pd.DataFrame(columns=["pos", "column", "check", "failure_case", "severity", "field"])
    return pd.concat(out, ignore_index=True)


def _blank_text(series: pd.Series) -> pd.Series:
    """Which non-null values are empty or whitespace once written as text."""
    return series.astype("string").str.strip().eq("").fillna(False).astype(bool)


def _dropped(original: pd.Series, coerced: pd.Series) -> pd.Series:
    """Values present in ``original`` that coercion turned into a null (blank text is not a value)."""
    lost = coerced.isna().to_numpy() & original.notna().to_numpy()
    mask = pd.Series(lost, index=original.index)
    if lost.any():
        mask[lost] = ~_blank_text(original[lost]).to_numpy()
    return mask


def _coerce_strings(series: pd.Series) -> tuple[pd.Series, pd.Series | None]:
    """Strings; containers (dict/list) cannot be one value and are dropped."""
    if isinstance(series.dtype, pd.StringDtype):
        return series, None
    if series.dtype == object:
        if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
            return series.astype("string"), None  # plain text (C-level scan): nothing to drop
        kinds = series.map(type)  # one cheap call per row, only for untyped object columns
        bad = kinds.isin([dict, list, tuple, set, bytes])
        return series.mask(bad).astype("string"), bad if bad.any() else None
    return series.astype("string"), None


def _coerce_datetimes(series: pd.Series) -> tuple[pd.Series, pd.Series | None]:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        out = series.dt.tz_convert("UTC")
        return (
            out if out.dtype == "datetime64[ns, UTC]" else out.astype("datetime64[ns, UTC]")
        ), None
    if pd.api.types.is_datetime64_dtype(series.dtype):
        return series.dt.tz_localize("UTC").astype("datetime64[ns, UTC]"), None
    text = series.astype("string")
    fast = iso_utc(text)  # every value ISO 8601 alike: Arrow reads the column whole
    if fast is not None:
        return fast, _dropped(series, fast)
    # ISO 8601 is what every API here sends and parses fast; the slow mixed-format
    # parser only sees the distinct leftovers.
    out = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    left = (out.isna() & text.notna()).to_numpy()
    if left.any():
        uniques = text[left].unique()
        parsed = pd.to_datetime(pd.Series(uniques), utc=True, errors="coerce", format="mixed")
        lookup = pd.Series(parsed.to_numpy(), index=uniques)
        out = out.copy()
        out[left] = pd.to_datetime(text[left].map(lookup), utc=True)
    out = out.astype("datetime64[ns, UTC]")
    return out, _dropped(series, out)


def _coerce_numeric(series: pd.Series) -> tuple[pd.Series, pd.Series | None]:
    out = (
        series
        if series.dtype == "float64"
        else pd.to_numeric(series, errors="coerce").astype("float64")
    )
    finite = np.isfinite(out.to_numpy())
    if not finite.all():
        out = out.where(finite)
    return out, _dropped(series, out)


_TRUE = ["true", "1", "yes", "y", "t", "1.0"]
_FALSE = ["false", "0", "no", "n", "f", "0.0", ""]


def _coerce_bool(series: pd.Series) -> tuple[pd.Series, pd.Series | None]:
    if series.dtype == bool:
        return series, None
    low = series.astype("string").str.strip().str.lower()
    true = low.isin(_TRUE).fillna(False).astype(bool)
    false = (low.isin(_FALSE).fillna(False) | series.isna()).astype(bool)
    return true, ~(true | false)


def coerce_canonical(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, pd.Series]]]:
    """Explicit coercion to canonical dtypes; returns the frame and, per column, the values it had to drop.

    ``frame`` must have a RangeIndex. Columns already of the canonical dtype are
    used as they are (no copy).
    """
    n = len(frame)
    index = pd.RangeIndex(n)
    data: dict[str, pd.Series] = {}
    dropped: list[tuple[str, pd.Series]] = []
    for col in VALIDATED_COLUMNS:
        if col not in frame.columns:
            if col in STRING_COLUMNS or col in RAW_COLUMNS:
                data[col] = pd.Series(pd.NA, index=index, dtype="string")
            elif col in DATETIME_COLUMNS:
                data[col] = pd.Series(pd.NaT, index=index, dtype="datetime64[ns, UTC]")
            elif col in NUMERIC_COLUMNS:
                data[col] = pd.Series(np.nan, index=index, dtype="float64")
            else:
                data[col] = pd.Series(False, index=index, dtype="bool")
            continue
        src = frame[col]
        if col in STRING_COLUMNS or col in RAW_COLUMNS:
            out, failed = _coerce_strings(src)
        elif col in DATETIME_COLUMNS:
            out, failed = _coerce_datetimes(src)
        elif col in NUMERIC_COLUMNS:
            out, failed = _coerce_numeric(src)
        else:
            out, failed = _coerce_bool(src)
        data[col] = out
        if failed is not None and failed.any():
            dropped.append((col, src[failed.to_numpy()]))
    return pd.DataFrame(data, index=index, copy=False), dropped


# --------------------------------------------------------------------------- Pandera, once per value


def _all_missing(series: pd.Series) -> bool:
    """Whether every value is missing; a present first value answers without a scan."""
    if len(series) and not pd.isna(series.iloc[0]):
        return False
    return bool(series.isna().all())


def _sample_is_diverse(series: pd.Series, size: int = 2000) -> bool:
    """Cheap cardinality guess: most of a strided sample distinct -> deduplication would not pay."""
    step = max(1, len(series) // size)
    sample = series.iloc[::step]
    return sample.nunique(dropna=False) > 0.5 * len(sample)


def _typed_already(schema: pa.DataFrameSchema, df: pd.DataFrame, cols: list[str]) -> list[str]:
    """Columns of ``cols`` whose dtype already is the schema's (Pandera's own comparison).

    Pandera 0.35 answers a string column's dtype check element-wise and then formats a
    message holding the repr of its (empty) failure cases: about 2 ms a column, more than
    all of the column's value checks on a small frame. ``coerce_canonical`` set every
    dtype, so the check is dropped where it would pass and kept where it would not.
    """
    engine = pandas_engine.Engine
    return [
        c
        for c in cols
        if schema.columns[c].dtype is not None
        # Pandera takes an object column for text when it is not shown the values: such a
        # column keeps its dtype check (and, in a schema that coerces, its coercion)
        and df[c].dtype != object
        and schema.columns[c].dtype.check(engine.dtype(df[c].dtype)) is True
    ]


def schema_failures(
    df: pd.DataFrame, schema: pa.DataFrameSchema, dedupe_min_rows: int = 5000
) -> pd.DataFrame:
    """Every failure case of ``schema`` on ``df`` as (pos, column, check, failure_case);
    ``pos`` is the row's index label, its position when ``df`` has a RangeIndex (as
    every caller gives it), missing for a failure of no one row.

    The canonical model's checks are all element-wise, so a column with few
    distinct values is validated on its distinct values only (the same model,
    each check once per value) and the failures are broadcast back to the rows;
    columns of mostly distinct values are validated as they are. A schema with a
    frame-wide rule (the aspects' ``unique`` entry key, a unique column) is validated whole.
    """
    n = len(df)
    # a frame-wide rule (``unique`` over columns, a check of the whole frame) needs its
    # columns whole and as they are: no column of it is left out or deduplicated
    unique = [schema.unique] if isinstance(schema.unique, str) else list(schema.unique or ())
    unique += [c for c, column in schema.columns.items() if column.unique]
    whole = set(schema.columns) if schema.checks else set(unique)
    # most canonical columns are empty for a given connector: a nullable column with no
    # value cannot fail an element-wise check (Pandera skips missing values) and its dtype
    # is the coerced one, so it is left out (each column costs Pandera a few milliseconds
    # a check, most of a small frame's validation)
    cols = [
        c
        for c, column in schema.columns.items()
        if c in whole or not (column.nullable and c in df and _all_missing(df[c]))
    ]
    small: dict[str, tuple[np.ndarray, pd.Series]] = {}
    if n >= dedupe_min_rows and not whole:
        for col in cols:
            s = df[col]
            if _sample_is_diverse(s):
                continue
            codes, uniques = pd.factorize(s, use_na_sentinel=False)
            if len(uniques) <= n // 4:
                small[col] = (codes, pd.Series(uniques, dtype=s.dtype))
    big = [c for c in cols if c not in small]
    found: list[pd.DataFrame] = []

    def run(sub_schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame | None:
        try:
            sub_schema.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as err:
            return err.failure_cases
        return None

    if big:
        # mostly-distinct string columns go to Pandera Arrow-backed: its string checks then run
        # in Arrow's C++ kernels without converting the column once per check
        strings = [c for c in big if isinstance(df[c].dtype, pd.StringDtype)]
        arrow_dtype = pd.StringDtype("pyarrow")
        big_frame = df[big].copy(deep=False)
        for c in strings:  # direct conversion: DataFrame.astype takes a much slower path
            arr = arrow_strings(df[c])
            big_frame[c] = pd.Series(pd.arrays.ArrowStringArray(arr), index=df.index)
        typed = set(_typed_already(schema, df, big))
        big_schema = schema.select_columns(big).update_columns(
            {c: {"dtype": arrow_dtype} for c in strings if c not in typed}
            | {c: {"dtype": None} for c in typed}
        )
        fc = run(big_schema, big_frame)
        if fc is not None:
            found.append(fc.assign(pos=fc["index"]))
    if small:
        length = max(len(u) for _, u in small.values())
        frame = pd.DataFrame(
            {
                c: u.take(
                    np.r_[np.arange(len(u)), np.zeros(length - len(u), dtype=np.int64)]
                ).reset_index(drop=True)
                for c, (_, u) in small.items()
            }
        )
        typed = _typed_already(schema, df, list(small))
        fc = run(
            schema.select_columns(list(small)).update_columns({c: {"dtype": None} for c in typed}),
            frame,
        )
        if fc is not None:
            unique_level = fc[fc["index"].isna()]
            fc = fc[fc["index"].notna()]
            for (col, check), grp in fc.groupby(["column", "check"], sort=False):
                codes, uniques = small[str(col)]
                bad = np.zeros(len(uniques), dtype=bool)
                idx = grp["index"].astype("int64").to_numpy()
                bad[idx[idx < len(uniques)]] = True
                rows = np.flatnonzero(bad[codes])
                found.append(
                    pd.DataFrame(
                        {
                            "pos": rows,
                            "column": col,
                            "check": check,
                            "failure_case": uniques.to_numpy()[codes[rows]],
                            "index": rows,
                        }
                    )
                )
            if len(unique_level):
                found.append(unique_level.assign(pos=np.nan))
    if not found:
        return pd.DataFrame(columns=["pos", "column", "check", "failure_case", "index"])
    return pd.concat(found, ignore_index=True)


# --------------------------------------------------------------------------- validate


def validate_customers(
    frame: pd.DataFrame,
    connector: str,
    raw: pd.DataFrame | None = None,
    *,
    connector_type: str | None = None,
    now: pd.Timestamp | None = None,
    default_region: str | None = None,
    market_regions: Mapping[str, str] | None = None,
) -> ValidationResult:
    """Split a normalized canonical frame into valid rows and quarantine rows (see module doc).

    ``raw`` is the connector's payload in vendor field names, row ``i`` belonging
    to canonical row ``i``; ``connector_type`` picks the payload's required
    columns when the connector name differs from its type. ``default_region`` and
    ``market_regions`` are the ones normalization read phones with (for the reasons).
    """
    frame = _positional(frame)
    raw = None if raw is None else _positional(raw)
    check_shape(frame, connector, raw, connector_type)
    rows_in = len(frame)

    df, dropped = coerce_canonical(frame)
    if df["connector"].isna().any():
        df["connector"] = df["connector"].fillna(connector)

    issues: list[pd.DataFrame] = []

    def add(
        pos: np.ndarray, field: str, check: str, details: list[str] | None, severity: str
    ) -> None:
        if len(pos) == 0:
            return
        base = CHECK_REASONS.get(check, check)
        if details is None:
            reasons: object = f"{field} {base}"
        else:
            reasons = [f"{field} {d} {base}" for d in details]
        issues.append(
            pd.DataFrame(
                {
                    "pos": pos,
                    "field": field,
                    "check": check,
                    "severity": severity,
                    "reason": reasons,
                }
            )
        )

    # rows a file connector could not decode or parse: rejected with file, line and reason
    if raw is not None and ERROR_COLUMN in raw.columns:
        unread = raw[ERROR_COLUMN].notna().to_numpy()
        if unread.any():
            pos = np.flatnonzero(unread)
            issues.append(
                pd.DataFrame(
                    {
                        "pos": pos,
                        "field": READ_FIELD,
                        "check": raw[CHECK_COLUMN].to_numpy()[pos],
                        "severity": "row",
                        "reason": raw[ERROR_COLUMN].to_numpy()[pos],
                    }
                )
            )

    # timestamps the mapping could not parse, as received (an impossible date is no NULL)
    for col in DATETIME_COLUMNS:
        text = frame[received_column(col)] if received_column(col) in frame.columns else None
        if text is None:
            continue
        lost = (df[col].isna().to_numpy() & text.notna().to_numpy()) & ~_blank_text(text).to_numpy()
        if lost.any():
            pos = np.flatnonzero(lost)
            add(pos, col, "timestamp", _details(col, text.iloc[pos]), _severity(col))

    for col, values in dropped:
        check = "timestamp" if col in DATETIME_COLUMNS else "coerce"
        add(
            values.index.to_numpy(),
            col,
            check,
            [mask_value(col, v) for v in values],
            _severity(col),
        )

    # email/phone that normalization could not keep: say why, once per distinct value
    for col, fn in (("email", _email_reason), ("phone", _phone_reason)):
        raw_col = f"{col}_raw"
        lost = _dropped(df[raw_col], df[col])
        if lost.any():
            pos = np.flatnonzero(lost.to_numpy())
            sub = df.loc[lost, [raw_col]]
            if col == "phone":
                sub["region"] = phone_region(df.loc[lost], default_region, market_regions)
            reasons = fn(sub)
            add(pos, col, "email_syntax" if col == "email" else "e164", reasons, "field")

    # the Pandera model: every failure case, split by row position
    fc = schema_failures(df, canonical_schema(now))
    if len(fc):
        frame_level = fc[fc["pos"].isna()]
        frame_level = frame_level[
            ~frame_level["check"].astype(str).str.startswith(("dtype(", "coerce_dtype("))
        ]
        if len(frame_level):
            cols = sorted(set(map(str, frame_level["column"].dropna())))
            raise SchemaShapeError(
                f"{connector}: canonical frame fails frame-level checks on column(s) {cols}"
            )
        fc = fc[fc["pos"].notna()]
        for (col, check), grp in fc.groupby(["column", "check"], sort=False):
            pos = grp["pos"].astype("int64").to_numpy()
            details = _details(str(col), grp["failure_case"])
            add(pos, str(col), _check_name(str(check)), details, _severity(str(col)))

    # the vendor's payload model, per object type: a malformed id rejects the record,
    # any other column's failure drops the canonical value it maps to
    if raw is not None and len(raw):
        pf = payload_failures(raw, connector_type or connector)
        for (column, field, check, severity), grp in pf.groupby(
            ["column", "field", "check", "severity"], sort=False
        ):
            pos = grp["pos"].to_numpy()
            shown = _details(str(field), grp["failure_case"])
            details = [f"(payload {column}) {d}" for d in shown]
            add(pos, str(field), str(check), details, str(severity))

    # duplicated source ids: keep the newest copy, reject the others
    ids = df["source_id"]
    maybe = ids.duplicated(keep=False).to_numpy() & ids.notna().to_numpy()
    if maybe.any():
        sub = df.loc[maybe, ["source_id", "updated_at"]].sort_values(
            "updated_at", ascending=False, na_position="last", kind="stable"
        )
        dup = sub["source_id"].duplicated(keep="first").to_numpy()
        add(np.sort(sub.index[dup].to_numpy()), "source_id", "unique_source_id", None, "row")

    # a name the connector split from a full name shares its verdict: the parts of a
    # quarantined full name ("Nils" / "calc'!A0" of "Nils =cmd|' /C calc'!A0") would
    # otherwise travel on as a clean name
    if issues and "full_name" in df.columns:
        for part, pos in _parts_of_bad_full_names(df, pd.concat(issues, ignore_index=True)):
            add(pos, part, "from_full_name", None, "field")

    # field failures null the value (a new column: the caller's frame is never modified)
    valid = df
    if issues:
        found = pd.concat(issues, ignore_index=True)
        for field, grp in found[found["severity"] == "field"].groupby("field", sort=False):
            if field not in valid.columns:  # payload.<column>: no canonical value to drop
                continue
            bad = np.zeros(len(df), dtype=bool)
            bad[grp["pos"].to_numpy()] = True
            col = valid[field]
            valid[field] = col.mask(bad, False) if col.dtype == bool else col.mask(bad)

    # a record must name someone: a person a last name or an email, a company its name or an email
    alive = ~valid["is_deleted"].to_numpy(dtype=bool)
    no_email = valid["email"].isna().to_numpy()
    company = (valid["kind"] == "company").fillna(False).to_numpy(dtype=bool)
    for name_field, who in (("last_name", ~company), ("company_name", company)):
        nobody = alive & who & no_email & valid[name_field].isna().to_numpy()
        if nobody.any():
            pos = np.flatnonzero(nobody)
            add(pos, name_field, "name_or_email", None, "row")
            add(pos, "email", "name_or_email", None, "row")

    if not issues:
        return ValidationResult(
            valid=df, rejected=empty_rejected(), rows_in=rows_in, valid_positions=np.arange(rows_in)
        )
    found = pd.concat(issues, ignore_index=True).drop_duplicates(["pos", "field", "check"])
    if raw is not None and ERROR_COLUMN in raw.columns:
        # a row that could not be read has one reason: what else its fields "fail" is noise
        unread = raw[ERROR_COLUMN].notna().to_numpy()[found["pos"].to_numpy()]
        found = found[~unread | (found["field"] == READ_FIELD).to_numpy()]
    row_bad = np.zeros(len(df), dtype=bool)
    row_bad[found.loc[found["severity"] == "row", "pos"].to_numpy()] = True
    if row_bad.any():
        valid = valid[~row_bad]  # a new frame: relabel it in place, no second copy
        valid.index = pd.RangeIndex(len(valid))

    found = found.sort_values(["pos", "severity", "field"], kind="stable").reset_index(drop=True)
    positions = found["pos"].to_numpy()
    reasons = found["reason"].astype("string")
    if raw is not None and LINE_COLUMN in raw.columns and FILE_COLUMN in raw.columns:
        # a row of a file says where it is (an unreadable row's reason does already)
        where = (
            " ("
            + raw[FILE_COLUMN].astype("string").iloc[positions].reset_index(drop=True)
            + " line "
            + raw[LINE_COLUMN].astype("string").iloc[positions].reset_index(drop=True)
            + ")"
        )
        read = (found["field"] == READ_FIELD).to_numpy()
        reasons = reasons.where(read | where.isna().to_numpy(), reasons + where)
    rejected = pd.DataFrame(
        {
            "connector": connector,
            "source_id": df["source_id"].to_numpy()[positions],
            "field": found["field"].to_numpy(),
            "check": found["check"].to_numpy(),
            "severity": found["severity"].to_numpy(),
            "reason": reasons.to_numpy(),
            "raw_payload": _payloads(raw if raw is not None else frame, positions),
        }
    ).astype("string")
    return ValidationResult(
        valid=valid,
        rejected=rejected,
        rows_in=rows_in,
        valid_positions=np.flatnonzero(~row_bad),
        rejected_positions=positions,
    )


def _parts_of_bad_full_names(df: pd.DataFrame, found: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """(name field, row positions) of first and last names read from a full name that
    failed a field check: a part equal (case and spacing aside) to what splitting that
    full name gives came from it; names a record holds beside it stay."""
    from custsync_pipeline.domain.identity_names import split_full_names

    hit = (found["field"] == "full_name") & (found["severity"] == "field")
    pos = np.unique(found.loc[hit, "pos"].to_numpy(dtype=np.int64))
    if len(pos) == 0:
        return []
    full = df["full_name"].to_numpy(dtype=object, na_value=None)[pos]
    first, last, _ = split_full_names(full)

    def folded(values: object) -> pd.Series:
        text = pd.Series(values, dtype=object).fillna("").astype(str)
        return text.str.split().str.join(" ").str.casefold()

    out = []
    for part, split in (("first_name", first), ("last_name", last)):
        if part not in df.columns:
            continue
        held = folded(df[part].to_numpy(dtype=object, na_value=None)[pos])
        same = (held != "").to_numpy() & (held == folded(split)).to_numpy()
        if same.any():
            out.append((part, pos[same]))
    return out


def _positional(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a 0..n-1 index, without copying its columns (reset_index copies them all)."""
    if isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1:
        return frame
    return frame.set_axis(pd.RangeIndex(len(frame)), axis=0, copy=False)


def _details(field: str, values: pd.Series) -> list[str]:
    """Masked value per failure, computed once per distinct value."""
    codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=False)
    shown = np.array([mask_value(field, u) for u in uniques], dtype=object)
    return shown[codes].tolist()


def _severity(field: str) -> str:
    return "row" if field in ROW_FIELDS else "field"


def _check_name(check: str) -> str:
    if check.startswith("coerce_dtype("):
        return "coerce"
    if check.startswith("dtype("):
        return "dtype"
    if check == "not_nullable":
        return "not_null"
    return check


def _email_reason(sub: pd.DataFrame) -> list[str]:
    values = sub["email_raw"]
    reasons = {v: email_or_reason(str(v))[1] or "is not an address" for v in values.unique()}
    return [f"{mask_value('email', v)}: {reasons[v]};" for v in values]


def _phone_reason(sub: pd.DataFrame) -> list[str]:
    pairs = list(zip(sub["phone_raw"], sub["region"].fillna(""), strict=True))
    reasons = {
        p: phone_or_reason(str(p[0]), p[1] or None)[1] or "is not a number" for p in set(pairs)
    }
    return [f"{mask_value('phone', p[0])}: {reasons[p]};" for p in pairs]


def _payloads(source: pd.DataFrame, positions: np.ndarray) -> list[str]:
    """JSON text of the source rows at ``positions`` (one serialization per distinct row)."""
    unique_pos = np.unique(positions)
    rows = source.iloc[unique_pos]
    lines = rows.to_json(
        orient="records", lines=True, date_format="iso", force_ascii=False, default_handler=str
    )
    texts = lines.rstrip("\n").split("\n") if len(rows) else []
    if len(texts) != len(rows):  # rows without a single column ([{}] answers) print as nothing
        texts = ["{}"] * len(rows) if not len(rows.columns) else texts
    lookup = dict(zip(unique_pos.tolist(), texts, strict=True))
    return [lookup[p] for p in positions.tolist()]
