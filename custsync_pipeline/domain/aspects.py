"""The aspects of a customer (seed 001) and their multi-valued entries.

Single-valued fields live on the customer row (``domain.canonical``);
``ASPECT_FIELDS`` says which of them each aspect carries. Every multi-valued
aspect is a long table of *entries*, one frame for all aspects with the
columns ``ENTRY_COLUMNS`` (a column an aspect does not use stays empty):

=============================== ===========================================================
aspect                          columns (besides connector, source_id, aspect, keys)
=============================== ===========================================================
addresses                       type (mailing/billing/shipping/visiting/other), street,
                                postal_code, city, country
contact_persons                 first_name, last_name, role, email, phone, person_id
customer_contact_details        type (email/phone/mobile/fax/website), value
address_contact_details         the same, under an address (``parent_key``)
contact_person_contact_details  the same, under a contact person
customer_attributes             name, value
address_attributes              name, value, under an address
contact_person_attributes       name, value, under a contact person
attachments                     name, reference, content_type, size
=============================== ===========================================================

A connector gives entries with a ``local_id`` (its own id of the entry within
the record: an Exact contact's ID, an address type) and, for nested aspects,
``parent_local_id``. :func:`key_entries` turns them into ``entry_key`` (a hash of
the **natural key**: the same address typed two ways, or held by two systems,
gets one key) and ``parent_key`` (the parent's entry key).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

import numpy as np
import pandas as pd

from custsync_pipeline.domain.hashing import hex16, row_hashes64

# Which single-valued golden fields each aspect carries (latest connector wins).
ASPECT_FIELDS: dict[str, tuple[str, ...]] = {
    "name": ("kind", "first_name", "last_name", "company_name"),
    "customer_contact_details": ("email", "phone"),
    "addresses": ("country", "city", "postal_code", "street"),
    "customer_attributes": ("language", "store_code", "customer_number", "web_user_id"),
    "consents": ("email_consent", "sms_consent"),
    "loyalty": ("loyalty_tier", "loyalty_status", "loyalty_points"),
}

# Multi-valued aspects: a long table each, merged as "multiple connectors".
ENTRY_ASPECTS: tuple[str, ...] = (
    "contact_persons",
    "addresses",
    "customer_attributes",
    "address_attributes",
    "contact_person_attributes",
    "customer_contact_details",
    "address_contact_details",
    "contact_person_contact_details",
    "attachments",
)
# Every aspect a flow step may name: seed 001's ten, plus consents and loyalty (seed 004).
ASPECTS: tuple[str, ...] = ("name", *ENTRY_ASPECTS, "consents", "loyalty")

# Derived aspects: computed from a golden record's linked transactions, never given by a
# flow step (seed 000's order history): one row per (golden id, currency) with provenance
# (source connector, the transactions counted, when). ``domain.transactions.order_history``.
DERIVED_ASPECTS: dict[str, tuple[str, ...]] = {
    "order_history": ("orders_count", "first_order_at", "last_order_at", "total_spend"),
}

# Nested aspects and the aspect their parent belongs to.
PARENT_ASPECT: dict[str, str] = {
    "address_attributes": "addresses",
    "address_contact_details": "addresses",
    "contact_person_attributes": "contact_persons",
    "contact_person_contact_details": "contact_persons",
}

ADDRESS_TYPES = ("mailing", "billing", "shipping", "visiting", "other")
# contact-detail types that name the same kind of value in a natural key
KEY_TYPE_CLASS = {"mobile": "phone"}
CONTACT_DETAIL_TYPES = ("email", "phone", "mobile", "fax", "website")

KEY_COLUMNS: tuple[str, ...] = ("connector", "source_id", "aspect", "entry_key", "parent_key")
LOCAL_COLUMNS: tuple[str, ...] = ("local_id", "parent_local_id")
VALUE_COLUMNS: tuple[str, ...] = (
    "type",
    "street",
    "postal_code",
    "city",
    "country",
    "first_name",
    "last_name",
    "role",
    "email",
    "phone",
    "person_id",
    "name",
    "value",
    "reference",
    "content_type",
    "size",
)
ENTRY_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, *LOCAL_COLUMNS, *VALUE_COLUMNS, "seen_at")

# The columns each aspect uses.
ASPECT_COLUMNS: dict[str, tuple[str, ...]] = {
    "addresses": ("type", "street", "postal_code", "city", "country"),
    "contact_persons": ("first_name", "last_name", "role", "email", "phone", "person_id"),
    "customer_contact_details": ("type", "value"),
    "address_contact_details": ("type", "value"),
    "contact_person_contact_details": ("type", "value"),
    "customer_attributes": ("name", "value"),
    "address_attributes": ("name", "value"),
    "contact_person_attributes": ("name", "value"),
    "attachments": ("name", "reference", "content_type", "size"),
}

# The natural key of each aspect: entries equal on these (normalized) are one entry.
NATURAL_KEY: dict[str, tuple[str, ...]] = {
    "addresses": ("type", "street", "postal_code", "country"),
    "contact_persons": ("first_name", "last_name"),
    "customer_contact_details": ("type", "value"),
    "address_contact_details": ("type", "value"),
    "contact_person_contact_details": ("type", "value"),
    "customer_attributes": ("name",),
    "address_attributes": ("name",),
    "contact_person_attributes": ("name",),
    "attachments": ("reference",),
}

# Columns holding personal data: masked wherever an entry is shown (city and postal code as
# a golden record's own fields are: one shown in clear beside the other masked says it)
PERSONAL_ENTRY_COLUMNS: frozenset[str] = frozenset(
    {
        "street",
        "postal_code",
        "city",
        "first_name",
        "last_name",
        "email",
        "phone",
        "value",
        "reference",
        "person_id",
    }
)


def _empty_column(col: str, n: int) -> pd.Series:
    if col == "size":
        return pd.Series(np.full(n, np.nan), dtype="float64")
    if col == "seen_at":
        return pd.Series(np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")).dt.tz_localize(
            "UTC"
        )
    # a StringArray from an all-NA object array, without validating n values one by one
    return pd.Series(pd.arrays.StringArray(np.full(n, pd.NA, dtype=object)))


def empty_entries(n: int = 0) -> pd.DataFrame:
    """An entries frame of ``n`` empty rows with the right dtypes."""
    return pd.DataFrame({c: _empty_column(c, n) for c in ENTRY_COLUMNS})


def conform_entries(frame: pd.DataFrame | None) -> pd.DataFrame:
    """``frame`` with every entry column present, in order, typed; unknown columns dropped.
    Columns already of the right dtype are taken as they are."""
    if frame is None or frame.empty:
        return empty_entries()
    n = len(frame)
    data: dict[str, pd.Series] = {}
    for col in ENTRY_COLUMNS:
        if col not in frame.columns:
            data[col] = _empty_column(col, n)
            continue
        src = frame[col].reset_index(drop=True)
        if col == "size":
            data[col] = pd.to_numeric(src, errors="coerce").astype("float64")
        elif col == "seen_at":
            if not isinstance(src.dtype, pd.DatetimeTZDtype):
                src = pd.to_datetime(src, utc=True, errors="coerce", format="mixed")
            data[col] = src.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
        else:
            data[col] = src if src.dtype == "string" else src.astype("string")
    return pd.DataFrame(data)


def fold(series: pd.Series) -> pd.Series:
    """Comparable text: accents removed, case folded, punctuation dropped, spaces collapsed.

    ``"Storgatan 12 "`` and ``"STORGATAN  12"`` fold alike; decided once per distinct value.
    """
    s = series.astype("string")
    codes, uniques = pd.factorize(s, use_na_sentinel=True)

    def one(text: str) -> str:
        plain = unicodedata.normalize("NFKD", text)
        plain = "".join(ch for ch in plain if not unicodedata.combining(ch))
        plain = "".join(ch if ch.isalnum() else " " for ch in plain.casefold())
        return " ".join(plain.split())

    folded = np.array([one(str(u)) for u in uniques] + [""], dtype=object)
    return pd.Series(folded[codes], index=series.index, dtype="string")


def _key_text(frame: pd.DataFrame, columns: Iterable[str]) -> pd.Series:
    parts = []
    for col in columns:
        values = frame[col].astype("string")
        if col == "postal_code":
            values = values.str.replace(r"\s+", "", regex=True).str.upper()
        elif col in ("type", "country"):
            values = values.str.strip().str.lower()
            if col == "type" and "value" in columns:
                # one number is one contact detail, whether a system calls it mobile or phone
                values = values.replace(KEY_TYPE_CLASS)
        elif col == "value" or col == "email":
            values = values.str.strip()
        else:
            values = fold(values)
        parts.append(values.fillna(""))
    text = parts[0]
    for p in parts[1:]:
        text = text + "\x1f" + p
    return text


def _hash(text: pd.Series) -> pd.Series:
    if text.empty:
        return pd.Series([], dtype="string", index=text.index)
    hashed = row_hashes64(text)
    return pd.Series(hex16(hashed), index=text.index, dtype="string")


def key_entries(entries: pd.DataFrame) -> pd.DataFrame:
    """Fill ``entry_key`` (hash of the aspect's natural key, salted by the parent key) and
    ``parent_key`` (the parent entry's key, found by ``parent_local_id`` in the same record).

    A nested entry whose parent is not among the record's entries keeps an empty
    ``parent_key``: :func:`orphans` finds those for the quarantine.
    """
    out = conform_entries(entries)
    if out.empty:
        return out
    out["entry_key"] = pd.Series(pd.NA, index=out.index, dtype="string")
    out["parent_key"] = pd.Series(pd.NA, index=out.index, dtype="string")
    # parents first: their keys are what children point at
    for aspect in sorted(NATURAL_KEY, key=lambda a: a in PARENT_ASPECT):
        rows = out["aspect"] == aspect
        if not rows.any():
            continue
        sub = out.loc[rows]
        salt = pd.Series("", index=sub.index, dtype="string")
        if aspect in PARENT_ASPECT:
            parents = out.loc[
                (out["aspect"] == PARENT_ASPECT[aspect]) & out["local_id"].notna(),
                ["connector", "source_id", "local_id", "entry_key"],
            ].drop_duplicates(["connector", "source_id", "local_id"])
            found = sub[["connector", "source_id", "parent_local_id"]].merge(
                parents.rename(columns={"local_id": "parent_local_id", "entry_key": "pk"}),
                on=["connector", "source_id", "parent_local_id"],
                how="left",
            )
            pk = pd.Series(found["pk"].to_numpy(), index=sub.index, dtype="string")
            out.loc[rows, "parent_key"] = pk
            salt = pk.fillna("")
        out.loc[rows, "entry_key"] = _hash(salt + "\x1e" + _key_text(sub, NATURAL_KEY[aspect]))
    return out


def orphans(entries: pd.DataFrame) -> pd.Series:
    """True for nested entries whose parent entry is missing from their record."""
    nested = entries["aspect"].isin(list(PARENT_ASPECT))
    return nested & entries["parent_key"].isna()


def entries_from_canonical(
    canonical: pd.DataFrame, aspects: Iterable[str], address_type: str = "mailing"
) -> pd.DataFrame:
    """Entries a plain customer row implies: its address (of ``address_type``) and its
    e-mail and phone as contact details. Connectors with richer payloads add more."""
    aspects = set(aspects)
    frames: list[pd.DataFrame] = []
    base = canonical[["connector", "source_id"]].astype("string")
    seen = canonical["updated_at"] if "updated_at" in canonical else pd.NaT
    if "addresses" in aspects:
        cols = [c for c in ("street", "postal_code", "city", "country") if c in canonical]
        if cols:
            has = canonical[cols].notna().any(axis=1)
            addr = base[has].copy()
            for c in cols:
                addr[c] = canonical.loc[has, c]
            addr["aspect"] = "addresses"
            addr["type"] = address_type
            addr["local_id"] = address_type
            addr["seen_at"] = seen[has] if isinstance(seen, pd.Series) else seen
            frames.append(addr)
    if "customer_contact_details" in aspects:
        for col in ("email", "phone"):
            if col not in canonical:
                continue
            has = canonical[col].notna()
            det = base[has].copy()
            det["aspect"] = "customer_contact_details"
            det["type"] = col
            det["value"] = canonical.loc[has, col]
            det["seen_at"] = seen[has] if isinstance(seen, pd.Series) else seen
            frames.append(det)
    if not frames:
        return empty_entries()
    return conform_entries(pd.concat(frames, ignore_index=True))


# What each vendor module can give (connector type -> aspects). A type not listed
# (the generic ``rest`` and ``file`` connectors) gives whatever its YAML maps.
VENDOR_ASPECTS: dict[str, frozenset[str]] = {
    "salesforce": frozenset(
        {
            "name",
            "contact_persons",
            "addresses",
            "customer_contact_details",
            "contact_person_contact_details",
            "customer_attributes",
            "consents",
            "loyalty",
        }
    ),
    "voucherify": frozenset(
        {"name", "customer_contact_details", "addresses", "customer_attributes"}
    ),
    "voyado": frozenset(
        {
            "name",
            "customer_contact_details",
            "addresses",
            "customer_attributes",
            "consents",
            "loyalty",
        }
    ),
    "exact": frozenset(
        {
            "name",
            "contact_persons",
            "addresses",
            "customer_contact_details",
            "contact_person_contact_details",
            "customer_attributes",
        }
    ),
    "icomm": frozenset({"name", "customer_contact_details", "customer_attributes", "consents"}),
}
