"""The canonical customer model: column names, dtypes and the identifier columns.

Every connector maps its payload onto these columns (``to_canonical``); every
later step (normalization, validation, identity, survivorship, deltas) reads
and writes frames with these columns only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Single-valued fields of one source record. Cross-system references map onto
# the same column as the referenced system's own id (a Salesforce
# ``Customer_Number__c`` and an Exact Online ``Code`` both land in
# ``customer_number``), so identity keys need no per-pair wiring.
STRING_COLUMNS: tuple[str, ...] = (
    "connector",  # connector name from the sync config, e.g. "salesforce"
    "source_id",  # the record's id in its own system (Salesforce Id, Voucherify id ...)
    "object_type",  # Contact / Account / Lead / customer / contact ...
    "kind",  # "person" | "company"
    "first_name",
    "last_name",
    "company_name",
    "full_name",  # a whole name in one field (Voucherify name, Exact Name); identity splits it
    "birth_date",  # YYYY-MM-DD as received (identity compares its digits)
    "email",  # normalized (trimmed, lower-cased, syntax-checked) or <NA>
    "email_raw",  # as received
    "phone",  # E.164 or <NA>
    "phone_raw",  # as received
    "country",  # ISO 3166-1 alpha-2 (the record's market)
    "language",  # ISO 639-1
    "store_code",
    "city",
    "postal_code",
    "street",
    # identifiers and cross-system references
    "salesforce_id",
    "voyado_id",
    "voucherify_id",
    "voucherify_source_id",
    "customer_number",  # Exact Online Account Code
    "exact_id",
    "web_user_id",
    "icomm_user_id",  # Icomm UserId (combined with store_code into one key)
    "katana_id",
    "custsync_id",  # golden id stamped into a target by a previous publish
    # consents (yes / no / <NA>) and loyalty
    "email_consent",
    "sms_consent",
    "loyalty_tier",
    "loyalty_status",
)
DATETIME_COLUMNS: tuple[str, ...] = (
    "updated_at",
    "created_at",
    "email_consent_at",
    "sms_consent_at",
)
NUMERIC_COLUMNS: tuple[str, ...] = ("loyalty_points",)
BOOL_COLUMNS: tuple[str, ...] = ("is_deleted",)

CANONICAL_COLUMNS: tuple[str, ...] = (
    STRING_COLUMNS + DATETIME_COLUMNS + NUMERIC_COLUMNS + BOOL_COLUMNS
)

# Received values of normalized text fields, kept beside the normalized ones in a
# lane's validated frame (``<c>/customers``) and in the quarantine's raw payload. The
# state DB's ``source_records`` keeps ``email_raw``/``phone_raw`` only (its columns are
# ``CANONICAL_COLUMNS``); these stay out of it until it has a migration path.
RAW_COLUMNS: tuple[str, ...] = (
    "first_name_raw",
    "last_name_raw",
    "company_name_raw",
    "country_raw",
)
# Columns of a validated frame: the canonical ones, then the received values.
VALIDATED_COLUMNS: tuple[str, ...] = CANONICAL_COLUMNS + RAW_COLUMNS

# Columns a golden record carries (everything but per-source bookkeeping).
GOLDEN_FIELDS: tuple[str, ...] = (
    "kind",
    "first_name",
    "last_name",
    "company_name",
    "email",
    "phone",
    "country",
    "language",
    "store_code",
    "city",
    "postal_code",
    "street",
    "customer_number",
    "web_user_id",
    "email_consent",
    "email_consent_at",  # when the owner recorded the consent
    "sms_consent",
    "sms_consent_at",
    "loyalty_tier",
    "loyalty_status",
    "loyalty_points",
)
# Consent fields and the column of the time each was given or withdrawn.
CONSENT_TIMES: dict[str, str] = {
    "email_consent": "email_consent_at",
    "sms_consent": "sms_consent_at",
}


def empty_canonical(n: int = 0) -> pd.DataFrame:
    """A canonical frame of ``n`` all-missing rows with the right dtypes."""
    # one scalar broadcast per column (a list of n missing values costs ~0.1 s a million)
    rows = pd.RangeIndex(n)
    data: dict[str, pd.Series] = {}
    for col in STRING_COLUMNS:
        data[col] = pd.Series(pd.NA, index=rows, dtype="string")
    for col in DATETIME_COLUMNS:
        data[col] = pd.Series(pd.NaT, index=rows, dtype="datetime64[ns, UTC]")
    for col in NUMERIC_COLUMNS:
        data[col] = pd.Series(np.nan, index=rows, dtype="float64")
    for col in BOOL_COLUMNS:
        data[col] = pd.Series(False, index=rows, dtype="bool")
    return pd.DataFrame(data)


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with every canonical column present, in order, with canonical dtypes.

    Missing columns are added empty; extra columns are dropped. Values are not
    normalized here (that is ``domain.normalize``), only typed.
    """
    out = empty_canonical(len(frame))
    out.index = frame.index
    for col in CANONICAL_COLUMNS:
        if col not in frame.columns:
            continue
        src = frame[col]
        if col in STRING_COLUMNS:
            out[col] = src.astype("string")
        elif col in DATETIME_COLUMNS:
            out[col] = pd.to_datetime(src, utc=True, errors="coerce", format="mixed")
        elif col in NUMERIC_COLUMNS:
            out[col] = pd.to_numeric(src, errors="coerce").astype("float64")
        else:
            out[col] = src.fillna(False).astype("bool")
    return out.reset_index(drop=True)
