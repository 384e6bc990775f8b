"""Survivorship: merge the members of each identity cluster into one golden record.

Seed 001's flow: a source step then ordered enrichment steps, each naming the
aspects it contributes. For a single-valued field the last step in the flow
that has a value wins ("latest connector"); within one connector the most
recently updated record wins. Ownership (seed 004) pins a field to one
connector: only the owner may set it. Every change to a golden record is an
event (golden_id, version, field, old, new, connector, at).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from custsync_pipeline.config import IdentifierRule
from custsync_pipeline.domain.canonical import GOLDEN_FIELDS, NUMERIC_COLUMNS
from custsync_pipeline.domain.identity_keys import blocked_reasons

# Which golden fields each aspect of seed 001 carries.
ASPECT_FIELDS: dict[str, tuple[str, ...]] = {
    "name": ("kind", "first_name", "last_name", "company_name"),
    "customer_contact_details": ("email", "phone"),
    "addresses": ("country", "city", "postal_code", "street"),
    "customer_attributes": ("language", "store_code", "customer_number", "web_user_id"),
    "consents": ("email_consent", "sms_consent"),
    "loyalty": ("loyalty_tier", "loyalty_status", "loyalty_points"),
}


@dataclass(frozen=True)
class FlowStep:
    """One step of the flow: a connector and the aspects it contributes."""

    connector: str
    aspects: tuple[str, ...]


@dataclass
class GoldenResult:
    golden: pd.DataFrame  # golden_id + GOLDEN_FIELDS
    provenance: pd.DataFrame  # golden_id, field, connector, source_id


def field_rights(steps: Sequence[FlowStep], ownership: Mapping[str, str]) -> pd.DataFrame:
    """(connector, field, rank) rows: who may set which field, later steps ranking higher."""
    rows = []
    for rank, step in enumerate(steps):
        for aspect in step.aspects:
            for fld in ASPECT_FIELDS.get(aspect, ()):
                owner = ownership.get(fld)
                if owner is None or owner == step.connector:
                    rows.append((step.connector, fld, rank))
    # an owner always has the right to its field, whatever aspects it lists
    listed = {(c, f) for c, f, _ in rows}
    top = len(steps)
    for fld, owner in ownership.items():
        if (owner, fld) not in listed:
            rows.append((owner, fld, top))
    frame = pd.DataFrame(rows, columns=["connector", "field", "rank"])
    return frame.sort_values("rank").drop_duplicates(["connector", "field"], keep="last")


def placeholder_flags(long: pd.DataFrame, rules: Sequence[IdentifierRule]) -> np.ndarray:
    """True where a (field, value) row holds a value an identity rule blocks (a placeholder
    such as ``none@none.com`` or ``0000000000``), decided once per distinct value."""
    flags = np.zeros(len(long), dtype=bool)
    for rule in rules:
        if len(rule.columns) != 1 or not (rule.blocked_values or rule.blocked_patterns):
            continue
        on_field = (long["field"] == rule.columns[0]).to_numpy()
        if not on_field.any():
            continue
        code, uniques = pd.factorize(long.loc[on_field, "value"].astype(str))
        blocked = blocked_reasons(pd.Series(uniques, dtype=object), rule) != ""
        flags[np.flatnonzero(on_field)] |= blocked[code]
    return flags


def build_golden(
    records: pd.DataFrame,
    identity_map: pd.DataFrame,
    steps: Sequence[FlowStep],
    ownership: Mapping[str, str] | None = None,
    placeholder_rules: Sequence[IdentifierRule] = (),
) -> GoldenResult:
    """One golden row per golden id in ``identity_map``, fields chosen by survivorship.

    A value blocked by one of ``placeholder_rules`` wins a field only when no member
    has a real one: otherwise a till's ``none@none.com`` late in the flow would
    overwrite a customer's real address, and publishing would spread it.
    """
    ownership = dict(ownership or {})
    members = records.merge(
        identity_map[["connector", "source_id", "golden_id"]], on=["connector", "source_id"]
    )
    long = members.melt(
        id_vars=["golden_id", "connector", "source_id", "updated_at"],
        value_vars=list(GOLDEN_FIELDS),
        var_name="field",
        value_name="value",
    )
    long = long[long["value"].notna()]
    long = long.merge(field_rights(steps, ownership), on=["connector", "field"])
    long["placeholder"] = placeholder_flags(long, placeholder_rules)
    long = long.sort_values(
        ["golden_id", "field", "placeholder", "rank", "updated_at", "source_id"],
        ascending=[True, True, True, False, False, True],
        na_position="last",
    )
    winners = long.drop_duplicates(["golden_id", "field"], keep="first")
    wide = winners.pivot(index="golden_id", columns="field", values="value")
    ids = pd.Index(identity_map["golden_id"].unique(), name="golden_id").sort_values()
    wide = wide.reindex(index=ids, columns=list(GOLDEN_FIELDS))
    golden = wide.reset_index()
    for col in GOLDEN_FIELDS:
        if col in NUMERIC_COLUMNS:
            golden[col] = pd.to_numeric(golden[col], errors="coerce").astype("float64")
        else:
            golden[col] = golden[col].astype("string")
    golden.columns.name = None
    provenance = winners[["golden_id", "field", "connector", "source_id"]].reset_index(drop=True)
    return GoldenResult(golden=golden, provenance=provenance)


def field_strings(frame: pd.DataFrame, fields: Sequence[str]) -> pd.DataFrame:
    """Fields as comparable strings ('' for missing), one dtype whatever the source dtype."""
    out = pd.DataFrame(index=frame.index)
    for col in fields:
        out[col] = frame[col].astype("string").fillna("")
    return out


def row_hash(frame: pd.DataFrame, fields: Sequence[str]) -> pd.Series:
    """A stable hex hash per row over ``fields`` (same values -> same hash, across runs)."""
    if frame.empty:
        return pd.Series([], dtype="string", index=frame.index)
    hashed = pd.util.hash_pandas_object(field_strings(frame, fields), index=False)
    return hashed.map("{:016x}".format).astype("string")


def diff_golden(
    new: pd.DataFrame,
    old: pd.DataFrame,
    provenance: pd.DataFrame,
    now: pd.Timestamp,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Compare fresh golden rows with the stored ones.

    Returns the rows to write (new or changed, with ``version``, ``record_hash``
    and ``updated_at``), the change events, and the stored golden ids that no
    longer exist (merged away or deleted).
    """
    fields = list(GOLDEN_FIELDS)
    new = new.copy()
    new["record_hash"] = row_hash(new, fields)
    if old.empty:
        old = pd.DataFrame(
            {"golden_id": pd.Series([], dtype="string"), "version": [], "record_hash": []}
        )
    merged = new.merge(
        old[["golden_id", "version", "record_hash"]].rename(
            columns={"version": "old_version", "record_hash": "old_hash"}
        ),
        on="golden_id",
        how="left",
    )
    changed = merged[
        merged["old_hash"].isna() | (merged["old_hash"] != merged["record_hash"])
    ].copy()
    changed["version"] = changed["old_version"].fillna(0).astype("int64") + 1
    changed["updated_at"] = now
    gone = sorted(set(old["golden_id"]) - set(new["golden_id"]))

    # events: one per changed field of a changed record
    new_long = (
        field_strings(changed.set_index("golden_id"), fields)
        .reset_index()
        .melt(id_vars="golden_id", var_name="field", value_name="new_value")
    )
    if not old.empty and not changed.empty:
        old_sub = old[old["golden_id"].isin(changed["golden_id"])].set_index("golden_id")
        old_long = (
            field_strings(old_sub, fields)
            .reset_index()
            .melt(id_vars="golden_id", var_name="field", value_name="old_value")
        )
        ev = new_long.merge(old_long, on=["golden_id", "field"], how="left")
    else:
        ev = new_long.assign(old_value=pd.NA)
    ev["old_value"] = ev["old_value"].fillna("")
    ev = ev[ev["old_value"] != ev["new_value"]]
    ev = ev.merge(
        provenance[["golden_id", "field", "connector"]], on=["golden_id", "field"], how="left"
    )
    ev = ev.merge(changed[["golden_id", "version"]], on="golden_id")
    ev["at"] = now
    ev["old_value"] = ev["old_value"].replace("", None)
    ev["new_value"] = ev["new_value"].replace("", None)
    events = ev[["golden_id", "version", "field", "old_value", "new_value", "connector", "at"]]
    return changed.drop(columns=["old_version", "old_hash"]), events.reset_index(drop=True), gone
