"""Normalize and validate a lane's aspect entries; split the bad ones into the quarantine.

Entries come from a connector's ``to_aspects`` (values as received) or from
its canonical rows. They are normalized like the customer row (e-mails
lower-cased and checked, phones to E.164 in the record's region, countries to
ISO codes, text trimmed), keyed (``aspects.key_entries``) and checked against
their aspect's Pandera model (``schemas.ASPECT_SCHEMAS``). An entry that fails
is dropped and quarantined with the aspect, column, check and reason, its
values masked; a personal value that cannot be normalized (a contact person's
e-mail) is dropped from the entry and quarantined the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from custsync_pipeline.domain.aspects import (
    ASPECT_COLUMNS,
    ENTRY_COLUMNS,
    PERSONAL_ENTRY_COLUMNS,
    conform_entries,
    key_entries,
    orphans,
)
from custsync_pipeline.domain.normalize import (
    clean_text,
    normalize_country,
    normalize_email,
    normalize_phone,
)
from custsync_pipeline.domain.schemas import ASPECT_SCHEMAS, CHECK_REASONS
from custsync_pipeline.domain.validate import (
    REJECTED_COLUMNS,
    empty_rejected,
    mask_value,
    schema_failures,
)

_TEXT = ("street", "city", "first_name", "last_name", "role", "name", "content_type")
_PHONE_TYPES = ("phone", "mobile", "fax")


@dataclass
class EntryCheck:
    """The entries fit to store, and the quarantine rows of those that were not."""

    valid: pd.DataFrame
    rejected: pd.DataFrame

    def counts(self) -> dict[str, int]:
        """Valid entries per aspect (``entries_<aspect>``), for the lane's metadata."""
        if self.valid.empty:
            return {}
        return {f"entries_{a}": int(n) for a, n in self.valid["aspect"].value_counts().items()}


def normalize_entries(entries: pd.DataFrame, regions: pd.Series | None = None) -> pd.DataFrame:
    """Normalized entries. ``regions``: source_id -> ISO region for national phone numbers."""
    out = conform_entries(entries)
    if out.empty:
        return out
    for col in _TEXT:
        out[col] = clean_text(out[col])
    out["postal_code"] = clean_text(out["postal_code"])
    out["country"] = normalize_country(out["country"]).astype("string")
    out["type"] = out["type"].str.strip().str.lower()
    region = (
        out["source_id"].map(regions).astype("string")
        if regions is not None
        else pd.Series(pd.NA, index=out.index, dtype="string")
    )
    iso = out["country"].where(out["country"].str.len() == 2)
    # else the entry's own country, else the country of an address of the same record
    record_country = (
        out.loc[iso.notna(), ["source_id"]].assign(c=iso).drop_duplicates("source_id")
    ).set_index("source_id")["c"]
    region = region.fillna(iso).fillna(out["source_id"].map(record_country).astype("string"))
    out["email"] = out["email"].where(out["email"].isna(), normalize_email(out["email"]))
    out["phone"] = out["phone"].where(out["phone"].isna(), normalize_phone(out["phone"], region))
    detail = out["aspect"].str.endswith("contact_details").fillna(False)
    is_email = detail & (out["type"] == "email")
    is_phone = detail & out["type"].isin(_PHONE_TYPES)
    if is_email.any():
        out.loc[is_email, "value"] = normalize_email(out.loc[is_email, "value"])
    if is_phone.any():
        out.loc[is_phone, "value"] = normalize_phone(out.loc[is_phone, "value"], region[is_phone])
    other = detail & ~is_email & ~is_phone
    out.loc[other, "value"] = clean_text(out.loc[other, "value"])
    return out


def _rejected(
    rows: pd.DataFrame, connector: str, field: pd.Series, check: str, severity: str
) -> pd.DataFrame:
    if rows.empty:
        return empty_rejected()
    reason = CHECK_REASONS.get(check, check)
    payload = rows[[c for c in ENTRY_COLUMNS if c in rows.columns]].astype("string")
    values = [
        # personal columns are masked as e-mails are (the first character and the domain)
        mask_value("email" if c in PERSONAL_ENTRY_COLUMNS else f"entry.{c}", v)
        for c, v in zip(field.str.split(".").str[-1], _cell(rows, field), strict=True)
    ]
    out = pd.DataFrame(
        {
            "connector": connector,
            "source_id": rows["source_id"].astype("string").to_numpy(),
            "field": field.to_numpy(),
            "check": check,
            "severity": severity,
            "reason": [f"{f} {reason} (value {v})" for f, v in zip(field, values, strict=True)],
            "raw_payload": [
                json.dumps({k: v for k, v in r.items() if v is not None and v is not pd.NA})
                for r in payload.astype(object).where(payload.notna(), None).to_dict("records")
            ],
        }
    )
    return out[list(REJECTED_COLUMNS)]


def _cell(rows: pd.DataFrame, field: pd.Series) -> list[object]:
    cols = field.str.split(".").str[-1].to_numpy()
    return [rows[c].iloc[i] if c in rows else None for i, c in enumerate(cols)]


def check_entries(
    entries: pd.DataFrame,
    connector: str,
    valid_source_ids: pd.Series,
    regions: pd.Series | None = None,
) -> EntryCheck:
    """Normalize, key and validate one lane's entries (of its valid records only)."""
    received = conform_entries(entries)
    received = received[received["source_id"].isin(set(valid_source_ids.astype(str)))]
    received = received.reset_index(drop=True)  # aligned with the normalized copy below
    if received.empty:
        return EntryCheck(conform_entries(None), empty_rejected())
    received = received.assign(connector=connector)
    norm = normalize_entries(received, regions)
    issues: list[pd.DataFrame] = []
    # personal values that did not normalize: dropped from the entry, quarantined
    for col, check in (("email", "email_syntax"), ("phone", "e164")):
        lost = received[col].notna() & norm[col].isna()
        if lost.any():
            issues.append(
                _rejected(
                    received[lost],
                    connector,
                    received.loc[lost, "aspect"] + "." + col,
                    check,
                    "field",
                )
            )
    # a contact detail whose value did not normalize is no detail at all
    detail = norm["aspect"].str.endswith("contact_details").fillna(False)
    bad_detail = detail & received["value"].notna() & norm["value"].isna()
    if bad_detail.any():
        check = np.where(
            received.loc[bad_detail, "type"].str.lower() == "email", "email_syntax", "e164"
        )
        for chk in sorted(set(check)):
            rows = received[bad_detail][check == chk]
            issues.append(_rejected(rows, connector, rows["aspect"] + ".value", str(chk), "entry"))
    keyed = key_entries(norm[~bad_detail])
    lost_parent = orphans(keyed)
    if lost_parent.any():
        rows = keyed[lost_parent]
        issues.append(
            _rejected(rows, connector, rows["aspect"] + ".parent_local_id", "orphan", "entry")
        )
    # the same natural key twice in one record (an address typed twice) is one entry
    keyed = keyed[~lost_parent].drop_duplicates(["connector", "source_id", "aspect", "entry_key"])
    keep = pd.Series(True, index=keyed.index)
    for aspect, schema in ASPECT_SCHEMAS.items():
        rows = keyed["aspect"] == aspect
        if not rows.any():
            continue
        cols = ["connector", "source_id", "entry_key", *ASPECT_COLUMNS[aspect]]
        if "parent_key" in schema.columns:
            cols.append("parent_key")
        sub = keyed.loc[rows, cols]
        # the records' gate (skips what cannot fail; the unique entry key keeps it whole)
        cases = schema_failures(sub.reset_index(drop=True), schema)
        cases = cases[cases["pos"].notna()]
        for (column, chk), group in cases.groupby(["column", "check"], dropna=False):
            idx = pd.Index(sub.index[group["pos"].astype("int64").unique()])
            if idx.empty:
                continue
            name = str(chk).split("(")[0]
            keep.loc[idx] = False
            issues.append(
                _rejected(
                    keyed.loc[idx],
                    connector,
                    pd.Series(f"{aspect}.{column}", index=idx),
                    name,
                    "entry",
                )
            )
    valid = keyed[keep].reset_index(drop=True)
    rejected = pd.concat(issues, ignore_index=True) if issues else empty_rejected()
    return EntryCheck(valid=valid, rejected=rejected)
