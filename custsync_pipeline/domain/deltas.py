"""Delta computation: which golden records must be written to a target, and how.

For each golden record and target: the target's members (records of that
golden id living in the target) are updated when what they hold differs from
the golden values; a golden record with no member there is created, keyed by
its golden id. A delta already acknowledged with the same payload hash is not
sent again, so a rerun on unchanged data publishes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from custsync_pipeline.domain.golden import field_strings, row_hash

DELTA_COLUMNS = ["entity_key", "golden_id", "target_id", "op", "payload_hash"]


def hold_back(
    golden: pd.DataFrame, kinds: Sequence[str] | None, required: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The golden records a target can take, and how many were held back, by reason.

    A target may take only some kinds (Salesforce Contacts are people) and refuse
    records without a field (a Contact needs a LastName): sending those would
    only dead-letter them.
    """
    keep = pd.Series(True, index=golden.index)
    reasons: dict[str, int] = {}
    if kinds is not None:
        wrong_kind = ~golden["kind"].isin(list(kinds))
        reasons["kind_not_taken"] = int(wrong_kind.sum())
        keep &= ~wrong_kind
    for fld in required:
        missing = keep & golden[fld].isna()
        reasons[f"missing_{fld}"] = int(missing.sum())
        keep &= ~missing
    return golden[keep], reasons


def compute_deltas(
    golden: pd.DataFrame,
    members: pd.DataFrame,
    fields: Sequence[str],
    acked: pd.DataFrame,
    writable_types: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Upsert deltas for one target.

    ``golden``: golden_id + fields. ``members``: the target's current records
    (golden_id, source_id, + fields, canonical). ``acked``: the ledger
    (entity_key, acked_hash). ``writable_types``: the member object types the
    target's writes address (Salesforce writes Contacts): a member of another
    type (a Lead, an Account) is left alone, and its golden record is not
    created again beside it. Returns ``DELTA_COLUMNS`` rows, one per entity to
    write: ``entity_key`` is the member's id, or ``new:<golden_id>`` for a create.
    """
    fields = list(fields)
    present = members["golden_id"]
    if writable_types is not None:
        members = members[members["object_type"].isin(list(writable_types))]
    g = golden[["golden_id", *fields]].reset_index(drop=True)
    g_str = field_strings(g, fields)
    g["payload_hash"] = row_hash(g, fields)

    # updates: a member differs from what it would hold after receiving the
    # golden values (golden fields that are empty are never sent, so they keep
    # the member's value)
    m = members[["golden_id", "source_id", *fields]].merge(
        g[["golden_id", "payload_hash"]], on="golden_id"
    )
    upd = pd.DataFrame()
    if not m.empty:
        m_str = field_strings(m, fields)
        g_for_m = g_str.set_index(g["golden_id"]).loc[m["golden_id"]].reset_index(drop=True)
        expected = g_for_m.where(g_for_m != "", m_str.reset_index(drop=True))
        differs = (expected != m_str.reset_index(drop=True)).any(axis=1).to_numpy()
        upd = m.loc[differs, ["golden_id", "source_id", "payload_hash"]].rename(
            columns={"source_id": "target_id"}
        )
        upd["entity_key"] = upd["target_id"]
        upd["op"] = "upsert"

    # creates: golden records with no member in the target
    missing = g[~g["golden_id"].isin(present)]
    new = pd.DataFrame(
        {
            "golden_id": missing["golden_id"],
            "target_id": pd.Series([None] * len(missing), index=missing.index, dtype="object"),
            "payload_hash": missing["payload_hash"],
            "entity_key": "new:" + missing["golden_id"].astype(str),
            "op": "upsert",
        }
    )
    parts = [d for d in (upd, new) if not d.empty]
    if not parts:
        return pd.DataFrame(columns=DELTA_COLUMNS)
    deltas = pd.concat(parts, ignore_index=True)
    # drop what the target already acknowledged with this exact payload
    if not acked.empty:
        deltas = deltas.merge(acked[["entity_key", "acked_hash"]], on="entity_key", how="left")
        deltas = deltas[
            deltas["acked_hash"].isna() | (deltas["acked_hash"] != deltas["payload_hash"])
        ]
    return deltas[DELTA_COLUMNS].reset_index(drop=True)


def attach_payloads(
    deltas: pd.DataFrame,
    golden: pd.DataFrame,
    to_payloads: Callable[[pd.DataFrame], list[dict]],
    dumps: Callable[[dict], str],
) -> pd.DataFrame:
    """Add the target-shaped JSON payload of each delta's golden record."""
    if deltas.empty:
        return deltas.assign(payload=pd.Series([], dtype="object"))
    rows = golden.set_index("golden_id").loc[deltas["golden_id"]].reset_index()
    payloads = to_payloads(rows)
    out = deltas.copy()
    out["payload"] = [dumps(p) for p in payloads]
    return out
