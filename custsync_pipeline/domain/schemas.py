"""Pandera models of custsync: the canonical customer frame, each connector's payload, the aspects.

* ``canonical_schema(now)``: the canonical ``customers`` frame after
  normalization (types, lengths, email syntax, E.164 phones, ISO countries and
  languages, UTC timestamps not in the future, id formats, no control
  characters or spreadsheet-formula prefixes in free text).
* ``PAYLOAD_SCHEMAS``: what each connector's API returns, in the vendor's own
  field names; ``REQUIRED_PAYLOAD_COLUMNS`` the columns whose absence means the
  feed changed shape (``validate.SchemaShapeError``).
* ``ROW_FIELDS``: the canonical columns whose failure rejects the whole row;
  a failure in any other column only drops that value (see ``domain.validate``).

Every check carries a short ``name``; ``CHECK_REASONS`` turns it into the
sentence stored in the quarantine.
"""

from __future__ import annotations

import re

import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc

from custsync_pipeline.domain.normalize import iso_countries, iso_languages

# Failing one of these rejects the record: without them it cannot be keyed.
ROW_FIELDS: frozenset[str] = frozenset({"connector", "source_id"})

MIN_TIMESTAMP = pd.Timestamp("1900-01-01", tz="UTC")
# Clock skew between a vendor and us: a little future is tolerated, more is a bad value.
FUTURE_TOLERANCE = pd.Timedelta(days=1)

EMAIL_RE = r"^[^@ \t\n\r\f\v]{1,64}@[^@ \t\n\r\f\v]+\.[^@ \t\n\r\f\v]+$"
E164_RE = r"^\+[1-9][0-9]{6,14}$"
SALESFORCE_ID_RE = r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$"
# Printable: no C0/C1 controls, DEL, zero-width or bidi overrides.
PRINTABLE_RE = r"^[^\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]*$"
# OWASP CSV injection: a cell starting with one of these runs as a formula in a spreadsheet.
FORMULA_RE = r"^[=+\-@\t\r]"

CHECK_REASONS: dict[str, str] = {
    "not_null": "is required but missing",
    "max_length": "is longer than allowed",
    "not_empty": "is empty",
    "printable": "contains control or invisible characters",
    "no_formula": "starts with a spreadsheet formula character (=, +, -, @)",
    "email_syntax": "is not a syntactically valid email address",
    "e164": "is not an E.164 phone number",
    "iso_country": "is not an ISO 3166-1 alpha-2 country code",
    "iso_language": "is not an ISO 639-1 language code",
    "kind": "is neither 'person' nor 'company'",
    "consent": "is not a consent value (yes / no)",
    "salesforce_id": "is not a 15- or 18-character Salesforce id",
    "lower_case": "is not lower-cased",
    "not_negative": "is negative or not finite",
    "utc": "is not a UTC timestamp",
    "not_before_1900": "is before 1900-01-01",
    "not_in_future": "is in the future",
    "unique_source_id": "duplicates another record's source id (the newest copy is kept)",
    "name_or_email": "is missing, and so is the other: the record names nobody (a person needs a "
    "last name or an email, a company a name or an email)",
    "coerce": "has a value of the wrong type that could not be converted",
    "timestamp": "is not a parseable timestamp between 1677 and 2262",
    "dtype": "has the wrong type",
}


def _isin(values: list[str], name: str) -> pa.Check:
    allowed = frozenset(values)
    return pa.Check(lambda s: s.isin(allowed), name=name)


# Large string columns are checked with Arrow's C++ kernels (RE2 regexes); the
# patterns used here mean the same in RE2 and Python's re.
_ARROW_MIN_ROWS = 20_000


def _arrow(s: pd.Series) -> pyarrow.Array:
    return pyarrow.array(s.to_numpy(dtype=object, na_value=None), type=pyarrow.string())


def _re2(pattern: str) -> str:
    """The same pattern for RE2: anchored like ``re.match``; ``\\uXXXX`` spelled ``\\x{XXXX}``."""
    pattern = re.sub(r"\\u([0-9a-fA-F]{4})", r"\\x{\1}", pattern)
    return pattern if pattern.startswith("^") else "^(?:" + pattern + ")"


def _arrow_of(s: pd.Series) -> pyarrow.Array | pyarrow.ChunkedArray:
    if isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow":
        return s.array._pa_array  # already Arrow: no conversion
    return _arrow(s)


def _str_match(s: pd.Series, pattern: str) -> pd.Series:
    if len(s) < _ARROW_MIN_ROWS and not (
        isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow"
    ):
        # RE2's "$" is the end of the text; Python's also matches before a final newline
        return s.str.fullmatch(pattern[:-1]) if pattern.endswith("$") else s.str.match(pattern)
    hit = pc.match_substring_regex(_arrow_of(s), _re2(pattern))
    return pd.Series(hit.to_numpy(zero_copy_only=False), index=s.index)


def _str_len(s: pd.Series) -> pd.Series:
    if len(s) < _ARROW_MIN_ROWS and not (
        isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow"
    ):
        return s.str.len()
    return pd.Series(pc.utf8_length(_arrow_of(s)).to_numpy(zero_copy_only=False), index=s.index)


def _matches(pattern: str, name: str) -> pa.Check:
    return pa.Check(lambda s: _str_match(s, pattern), name=name)


def _max_len(n: int) -> pa.Check:
    return pa.Check(lambda s: _str_len(s) <= n, name="max_length")


def _printable() -> pa.Check:
    return pa.Check(lambda s: _str_match(s, PRINTABLE_RE), name="printable")


def _no_formula() -> pa.Check:
    return pa.Check(lambda s: ~_str_match(s, FORMULA_RE), name="no_formula")


def _not_empty() -> pa.Check:
    return pa.Check(lambda s: _str_len(s) > 0, name="not_empty")


def _text(n: int) -> pa.Column:
    """Free text a human types: bounded, printable, never a spreadsheet formula."""
    return pa.Column("string", [_max_len(n), _printable(), _no_formula()], nullable=True)


def _code(n: int, *extra: pa.Check, nullable: bool = True) -> pa.Column:
    """An identifier or code: bounded, printable, non-empty."""
    return pa.Column("string", [_max_len(n), _not_empty(), _printable(), *extra], nullable=nullable)


def _timestamp(now: pd.Timestamp) -> pa.Column:
    latest = now + FUTURE_TOLERANCE
    return pa.Column(
        "datetime64[ns, UTC]",
        [
            pa.Check(lambda s: s >= MIN_TIMESTAMP, name="not_before_1900"),
            pa.Check(lambda s: s <= latest, name="not_in_future"),
        ],
        nullable=True,
    )


def canonical_schema(now: pd.Timestamp | None = None) -> pa.DataFrameSchema:
    """The canonical ``customers`` model; ``now`` bounds timestamps (defaults to the current UTC time)."""
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now).tz_convert("UTC")
    countries = sorted(iso_countries())
    languages = sorted(iso_languages())
    consent = pa.Column("string", _isin(["yes", "no"], name="consent"), nullable=True)
    return pa.DataFrameSchema(
        {
            "connector": _code(64, nullable=False),
            "source_id": _code(255, nullable=False),
            "object_type": _code(64),
            "kind": pa.Column("string", _isin(["person", "company"], name="kind"), nullable=True),
            "first_name": _text(255),
            "last_name": _text(255),
            "company_name": _text(255),
            "email": pa.Column(
                "string",
                [
                    _max_len(254),
                    _matches(EMAIL_RE, name="email_syntax"),
                    pa.Check(lambda s: s == s.str.lower(), name="lower_case"),
                ],
                nullable=True,
            ),
            "email_raw": pa.Column("string", _max_len(1000), nullable=True),
            "phone": pa.Column("string", _matches(E164_RE, name="e164"), nullable=True),
            "phone_raw": pa.Column("string", _max_len(1000), nullable=True),
            "country": pa.Column("string", _isin(countries, name="iso_country"), nullable=True),
            "language": pa.Column("string", _isin(languages, name="iso_language"), nullable=True),
            "store_code": _code(64),
            "city": _text(255),
            "postal_code": _code(20),
            "street": _text(255),
            "salesforce_id": _code(18, _matches(SALESFORCE_ID_RE, name="salesforce_id")),
            "voyado_id": _code(255),
            "voucherify_id": _code(255),
            "voucherify_source_id": _code(255),
            "customer_number": _code(255),
            "exact_id": _code(255),
            "web_user_id": _code(255),
            "icomm_user_id": _code(255),
            "katana_id": _code(255),
            "custsync_id": _code(255),
            "email_consent": consent,
            "sms_consent": consent,
            "loyalty_tier": _code(64),
            "loyalty_status": _code(64),
            "updated_at": _timestamp(now),
            "created_at": _timestamp(now),
            "email_consent_at": _timestamp(now),
            "loyalty_points": pa.Column(
                "float64",
                pa.Check(lambda s: (s >= 0) & (s < 1e12), name="not_negative"),
                nullable=True,
            ),
            "is_deleted": pa.Column("bool"),
        },
        strict=True,
        ordered=False,
        name="canonical_customers",
    )


# --------------------------------------------------------------------------- payloads

# Columns a connector's raw frame must have (vendor field names). A missing one
# means the API (or the connector's mapping) changed shape: the whole batch stops.
REQUIRED_PAYLOAD_COLUMNS: dict[str, tuple[str, ...]] = {
    "salesforce": ("Id", "LastModifiedDate"),
    "voucherify": ("id", "source_id", "email"),
    "voyado": ("id", "email"),
    "exact": ("ID", "Modified"),
    "icomm": ("UserId", "StoreCode"),
}

PAYLOAD_SCHEMAS: dict[str, pa.DataFrameSchema] = {}
