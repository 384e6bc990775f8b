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

from custsync_pipeline.domain.aspects import ADDRESS_TYPES, CONTACT_DETAIL_TYPES
from custsync_pipeline.domain.canonical import RAW_COLUMNS
from custsync_pipeline.domain.normalize import arrow_strings, iso_countries, iso_languages

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
# a full name is split into name cells: a word starting with = + or @ would start one
FORMULA_WORD_RE = r"^(?:.*\s)?[=+@]"

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
    "salesforce_id": "is not a 15- or 18-character Salesforce id (of this object type)",
    "voucherify_id": "is not a Voucherify customer id (cust_…)",
    "voyado_id": "is not a Voyado contact id (a GUID)",
    "exact_id": "is not an Exact Online id (a GUID)",
    "icomm_user_id": "is not an Icomm UserId (1-255 printable characters)",
    "store_code": "is not an Icomm StoreCode",
    "object_type": "is not the object type this API returns",
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
    "api_timestamp": "is not in the timestamp format this API sends",
    "exact_account_id": "is not an Exact Online account id (a GUID)",
    "dtype": "has the wrong type",
    "address_type": "is not an address type (mailing, billing, shipping, visiting, other)",
    "contact_kind": "is not a contact detail type (email, phone, mobile, fax, website)",
    "url": "is not a reference (http, https, s3 or file URL)",
    "orphan": "belongs to an address or contact person its record does not have",
    "from_full_name": "was read from a full name that was quarantined",
}


def _isin(values: list[str], name: str) -> pa.Check:
    allowed = frozenset(values)
    return pa.Check(lambda s: s.isin(allowed), name=name)


# Large string columns are checked with Arrow's C++ kernels (RE2 regexes); the
# patterns used here mean the same in RE2 and Python's re.
_ARROW_MIN_ROWS = 20_000


def _arrow(s: pd.Series) -> pyarrow.Array:
    return arrow_strings(s)


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


def _no_nul() -> pa.Check:
    return pa.Check(lambda s: _str_match(s, r"^[^\x00]*$"), name="printable")


def _no_formula() -> pa.Check:
    return pa.Check(lambda s: ~_str_match(s, FORMULA_RE), name="no_formula")


def _no_formula_word() -> pa.Check:
    return pa.Check(lambda s: ~_str_match(s, FORMULA_WORD_RE), name="no_formula")


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
            # split into name cells later: no word of it may start like a formula
            "full_name": pa.Column(
                "string", [_max_len(255), _printable(), _no_formula_word()], nullable=True
            ),
            "birth_date": _text(32),
            "email": pa.Column(
                "string",
                [
                    _max_len(254),
                    _matches(EMAIL_RE, name="email_syntax"),
                    pa.Check(lambda s: s == s.str.lower(), name="lower_case"),
                ],
                nullable=True,
            ),
            # as received, but never a NUL: no state DB (PostgreSQL text) can hold one
            "email_raw": pa.Column("string", [_max_len(1000), _no_nul()], nullable=True),
            "phone": pa.Column("string", _matches(E164_RE, name="e164"), nullable=True),
            "phone_raw": pa.Column("string", [_max_len(1000), _no_nul()], nullable=True),
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
            "sms_consent_at": _timestamp(now),
            "loyalty_points": pa.Column(
                "float64",
                pa.Check(lambda s: (s >= 0) & (s < 1e12), name="not_negative"),
                nullable=True,
            ),
            "is_deleted": pa.Column("bool"),
            # received values, kept beside the normalized ones: typed, not judged (the
            # normalized field carries the verdict; one failure is reported once)
            **{c: pa.Column("string", nullable=True) for c in RAW_COLUMNS},
        },
        strict=True,
        ordered=False,
        name="canonical_customers",
    )


# --------------------------------------------------------------------------- payloads
#
# What each API returns, in the vendor's own (flattened) field names. Columns
# marked required must be present (their absence means the API or the mapping
# changed shape: ``validate.SchemaShapeError``); the id column's format is
# checked per record (a wrong one rejects the record); timestamps must parse.
# Other vendor fields are judged after mapping, by the canonical model.

GUID_RE = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
ISO_TS_RE = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?$"
ODATA_DATE_RE = r"^/Date\(-?\d+(?:[+-]\d{4})?\)/$"


def _text_col(required: bool = False, *checks: pa.Check, nullable: bool = True) -> pa.Column:
    return pa.Column("string", list(checks), nullable=nullable, required=required, coerce=True)


def _id_col(pattern: str, name: str) -> pa.Column:
    return pa.Column(
        "string", [_matches(pattern, name)], nullable=False, required=True, coerce=True
    )


def _ts_col(required: bool = False, pattern: str = ISO_TS_RE) -> pa.Column:
    return pa.Column(
        "string",
        [_matches(pattern, "api_timestamp")],
        nullable=True,
        required=required,
        coerce=True,
    )


def _salesforce(prefix: str, name: str, extra: dict[str, pa.Column]) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            "Id": _id_col(rf"^{prefix}[A-Za-z0-9]{{12}}(?:[A-Za-z0-9]{{3}})?$", "salesforce_id"),
            "CreatedDate": _ts_col(),
            "LastModifiedDate": _ts_col(required=True),
            "Custsync_Id__c": _text_col(False, _max_len(255)),
            **extra,
        },
        strict=False,
        name=f"salesforce_{name}",
    )


_SF_PERSON = {
    "FirstName": _text_col(False, _max_len(40)),
    "LastName": _text_col(False, _max_len(80)),
    "Email": _text_col(True, _max_len(80)),
    "Phone": _text_col(False, _max_len(40)),
}

PAYLOAD_SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "salesforce.Contact": _salesforce(
        "003",
        "contact",
        {
            **_SF_PERSON,
            "MailingCountry": _text_col(False, _max_len(80)),
            "Voyado_Id__c": _text_col(False, _max_len(255)),
        },
    ),
    "salesforce.Account": _salesforce("001", "account", {"Name": _text_col(True, _max_len(255))}),
    "salesforce.Lead": _salesforce(
        "00Q", "lead", {**_SF_PERSON, "Company": _text_col(False, _max_len(255))}
    ),
    "voucherify": pa.DataFrameSchema(
        {
            "id": _id_col(r"^cust_[0-9A-Za-z]{8,64}$", "voucherify_id"),
            "source_id": _text_col(True, _max_len(255)),
            "email": _text_col(True, _max_len(320)),
            "object": _text_col(False, _isin(["customer"], "object_type")),
            "created_at": _ts_col(),
            "updated_at": _ts_col(),
        },
        strict=False,
        name="voucherify_customer",
    ),
    "voyado": pa.DataFrameSchema(
        {
            "id": _id_col(GUID_RE, "voyado_id"),
            "email": _text_col(True, _max_len(320)),
            "mobilePhone": _text_col(False, _max_len(40)),
            "createdDate": _ts_col(),
            "lastModified": _ts_col(),
        },
        strict=False,
        name="voyado_contact",
    ),
    "exact.Account": pa.DataFrameSchema(
        {
            "ID": _id_col(GUID_RE, "exact_id"),
            "Code": _text_col(False, _max_len(18)),
            "Name": _text_col(True, _max_len(100)),
            "Created": _ts_col(pattern=ODATA_DATE_RE),
            "Modified": _ts_col(required=True, pattern=ODATA_DATE_RE),
        },
        strict=False,
        name="exact_account",
    ),
    "exact.Contact": pa.DataFrameSchema(
        {
            "ID": _id_col(GUID_RE, "exact_id"),
            "Account": _text_col(False, _matches(GUID_RE, "exact_account_id")),
            "Created": _ts_col(pattern=ODATA_DATE_RE),
            "Modified": _ts_col(required=True, pattern=ODATA_DATE_RE),
        },
        strict=False,
        name="exact_contact",
    ),
    "icomm": pa.DataFrameSchema(
        {
            # UserId is the shop's customer id, or the email where there is none (seed 003)
            "UserId": _id_col(r"^[^\x00-\x1f\x7f]{1,255}$", "icomm_user_id"),
            "StoreCode": _id_col(r"^[A-Za-z0-9_.-]{1,64}$", "store_code"),
            "Email": _text_col(False, _max_len(320)),
            "CreatedAt": _ts_col(),
            "UpdatedAt": _ts_col(),
        },
        strict=False,
        name="icomm_customer",
    ),
}

# Vendor column -> the canonical column the connector maps it to, where that mapping is
# fixed (a payload failure then nulls that canonical value). Columns not listed here
# (a mapping that depends on options, or none) are quarantined under ``payload.<column>``
# and nothing is nulled.
_SF_TIMES = {"CreatedDate": "created_at", "LastModifiedDate": "updated_at"}
PAYLOAD_FIELDS: dict[str, dict[str, str]] = {
    "salesforce.Contact": {
        **_SF_TIMES,
        "Id": "source_id",
        "FirstName": "first_name",
        "LastName": "last_name",
        "Email": "email",
        "MailingCountry": "country",
        "Voyado_Id__c": "voyado_id",
        "Custsync_Id__c": "custsync_id",
    },
    "salesforce.Account": {
        **_SF_TIMES,
        "Id": "source_id",
        "Name": "company_name",
        "Custsync_Id__c": "custsync_id",
    },
    "salesforce.Lead": {
        **_SF_TIMES,
        "Id": "source_id",
        "FirstName": "first_name",
        "LastName": "last_name",
        "Email": "email",
        "Company": "company_name",
        "Custsync_Id__c": "custsync_id",
    },
    "voucherify": {
        "id": "source_id",
        "email": "email",
        "object": "object_type",
        "created_at": "created_at",
        "updated_at": "updated_at",
    },
    "voyado": {
        "id": "source_id",
        "email": "email",
        "mobilePhone": "phone",
        "createdDate": "created_at",
        "lastModified": "updated_at",
    },
    "exact.Account": {"ID": "source_id", "Created": "created_at", "Modified": "updated_at"},
    "exact.Contact": {"ID": "source_id", "Created": "created_at", "Modified": "updated_at"},
    "icomm": {
        "UserId": "icomm_user_id",
        "StoreCode": "store_code",
        "Email": "email",
        "CreatedAt": "created_at",
        "UpdatedAt": "updated_at",
    },
}

# Which payload model a raw row follows: connector type, plus the object-type column
# when one connector returns several objects.
PAYLOAD_OBJECT_COLUMN: dict[str, tuple[str, str]] = {
    "salesforce": ("attributes.type", "Contact"),
    "exact": ("__resource", "Accounts"),
}
_OBJECT_KEYS = {"Accounts": "Account", "Contacts": "Contact"}


def payload_schema_key(connector_type: str, object_type: str | None) -> str | None:
    """The ``PAYLOAD_SCHEMAS`` key for one raw row's connector type and object type."""
    if connector_type in PAYLOAD_OBJECT_COLUMN:
        obj = (
            _OBJECT_KEYS.get(object_type or "", object_type)
            or PAYLOAD_OBJECT_COLUMN[connector_type][1]
        )
        obj = _OBJECT_KEYS.get(obj, obj)
        key = f"{connector_type}.{obj}"
    else:
        key = connector_type
    return key if key in PAYLOAD_SCHEMAS else None


def required_payload_columns(
    connector_type: str, object_types: list[str] | None = None
) -> tuple[str, ...]:
    """Columns the connector's payload must carry (for every object type it returned)."""
    if connector_type in PAYLOAD_OBJECT_COLUMN:
        keys = {payload_schema_key(connector_type, o) for o in (object_types or [None])}
    else:
        keys = {payload_schema_key(connector_type, None)}
    cols: list[str] = []
    for key in sorted(k for k in keys if k):
        for name, col in PAYLOAD_SCHEMAS[key].columns.items():
            if col.required and name not in cols:
                cols.append(name)
    return tuple(cols)


# Kept for callers of the first version: the columns every payload of a type needs.
REQUIRED_PAYLOAD_COLUMNS: dict[str, tuple[str, ...]] = {
    "salesforce": ("Id", "LastModifiedDate"),
    "voucherify": required_payload_columns("voucherify"),
    "voyado": required_payload_columns("voyado"),
    "exact": ("ID", "Modified"),
    "icomm": required_payload_columns("icomm"),
}


# --------------------------------------------------------------------------- aspects
#
# Multi-valued aspects (seed 001): one entries frame (``domain.aspects.ENTRY_COLUMNS``),
# validated per aspect on the columns that aspect uses, after ``normalize_entries``.


def _aspect(name: str, columns: dict[str, pa.Column]) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {
            "connector": _code(64, nullable=False),
            "source_id": _code(255, nullable=False),
            "entry_key": _code(64, nullable=False),
            **columns,
        },
        unique=["connector", "source_id", "entry_key"],
        coerce=True,
        name=f"aspect_{name}",
    )


def _detail_columns() -> dict[str, pa.Column]:
    return {
        "type": pa.Column("string", _isin(list(CONTACT_DETAIL_TYPES), "contact_kind")),
        # a phone is E.164 by now (a leading "+" is no formula here): printable, bounded
        "value": pa.Column("string", [_max_len(320), _printable()], nullable=False),
    }


def _parent() -> dict[str, pa.Column]:
    # a nested entry whose parent is not in its record cannot be placed
    return {"parent_key": pa.Column("string", nullable=False)}


_EMAIL = pa.Column("string", [_max_len(254), _matches(EMAIL_RE, "email_syntax")], nullable=True)
_PHONE = pa.Column("string", _matches(E164_RE, "e164"), nullable=True)
_COUNTRY = pa.Column("string", _isin(sorted(iso_countries()), "iso_country"), nullable=True)

ASPECT_SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "addresses": _aspect(
        "addresses",
        {
            "type": pa.Column("string", _isin(list(ADDRESS_TYPES), "address_type")),
            "street": _text(255),
            "postal_code": _code(20),
            "city": _text(255),
            "country": _COUNTRY,
        },
    ),
    "contact_persons": _aspect(
        "contact_persons",
        {
            "first_name": _text(255),
            "last_name": _text(255),
            "role": _text(255),
            "email": _EMAIL,
            "phone": _PHONE,
            "person_id": _code(255),
        },
    ),
    "customer_attributes": _aspect(
        "customer_attributes", {"name": _code(255, nullable=False), "value": _text(4000)}
    ),
    "address_attributes": _aspect(
        "address_attributes",
        {**_parent(), "name": _code(255, nullable=False), "value": _text(4000)},
    ),
    "contact_person_attributes": _aspect(
        "contact_person_attributes",
        {**_parent(), "name": _code(255, nullable=False), "value": _text(4000)},
    ),
    "customer_contact_details": _aspect("customer_contact_details", _detail_columns()),
    "address_contact_details": _aspect(
        "address_contact_details", {**_parent(), **_detail_columns()}
    ),
    "contact_person_contact_details": _aspect(
        "contact_person_contact_details", {**_parent(), **_detail_columns()}
    ),
    "attachments": _aspect(
        "attachments",
        {
            "name": _text(255),
            "reference": pa.Column(
                "string", _matches(r"^(https?|s3|file)://[^\s]+$", "url"), nullable=False
            ),
            "content_type": _code(255),
            "size": pa.Column("float64", pa.Check.ge(0, name="not_negative"), nullable=True),
        },
    ),
}
