"""Target-side changes a person must look at: the per-field conflict policy of a target.

A target's member that holds, for a field custsync sends, a value other than the golden
one was changed there (by hand, by the target's own logic) — the target does not own
the field, or its value would be the golden one. ``publish[].conflicts`` says per field
what happens: ``overwrite`` (the default) sends the golden value back (a corrective
delta); ``review`` leaves the target's value alone, withholds that field from every write
to the member, and records a conflict for a person (``custsync conflicts``) until the
two agree again.

Pure pandas: no I/O, no Dagster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from custsync_pipeline.domain.golden import field_strings

CONFLICT_POLICIES = ("overwrite", "review")
FIELD_CONFLICT_COLUMNS = ["golden_id", "source_id", "field", "target_value", "golden_value"]


def review_fields(policy: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[str]:
    """The fields whose target-side changes go to the review queue."""
    items = policy.items() if isinstance(policy, Mapping) else policy
    return [f for f, p in items if p == "review"]


def field_conflicts(golden: pd.DataFrame, members: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """One row per member and ``fields`` entry where the member holds a value that is not
    the golden one (compared as ``field_strings``: case of e-mails and spacing as deltas
    compare them); a golden field that is empty is never a conflict (nothing is sent).
    ``golden``: golden_id + fields; ``members``: golden_id, source_id + fields."""
    fields = [f for f in fields if f in golden.columns and f in members.columns]
    if not fields or members.empty or golden.empty:
        return pd.DataFrame(columns=FIELD_CONFLICT_COLUMNS)
    m = members[["golden_id", "source_id", *fields]].merge(
        golden[["golden_id", *fields]].drop_duplicates("golden_id"),
        on="golden_id",
        suffixes=("", "__golden"),
    )
    if m.empty:
        return pd.DataFrame(columns=FIELD_CONFLICT_COLUMNS)
    have = field_strings(m[fields], fields).reset_index(drop=True)
    want = field_strings(
        m[[f + "__golden" for f in fields]].set_axis(fields, axis=1), fields
    ).reset_index(drop=True)
    # an empty target value is nothing to protect: the golden one fills it
    differs = (want != "") & (have != "") & (want != have)
    parts = []
    for f in fields:  # one vectorized pass per field
        hit = differs[f].to_numpy()
        if not hit.any():
            continue
        parts.append(
            pd.DataFrame(
                {
                    "golden_id": m["golden_id"].to_numpy()[hit],
                    "source_id": m["source_id"].astype(str).to_numpy()[hit],
                    "field": f,
                    "target_value": have[f].to_numpy()[hit],
                    "golden_value": want[f].to_numpy()[hit],
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=FIELD_CONFLICT_COLUMNS)
    return pd.concat(parts, ignore_index=True)[FIELD_CONFLICT_COLUMNS]


def foreign_opt_outs(
    golden: pd.DataFrame,
    members: pd.DataFrame,
    written: pd.DataFrame,
    held: pd.DataFrame,
    consents: list[str],
) -> pd.DataFrame:
    """Conflicts (``FIELD_CONFLICT_COLUMNS``) of members that hold a consent "no" where the
    golden record says "yes" and the "no" is not custsync's: an unsubscribe in the target
    itself is never reversed by the owner's older yes; a person looks at it. The "no" is
    custsync's when its last acknowledged write (``written``: source_id, ``created``, the
    canonical values it sent) sent it and either created the record or changed the
    consent there (``held``: source_id, field — what the write changed). A write that
    only carried an opt-out the record already held (every update sends the golden
    consent) does not make a user's opt-out custsync's to lift."""
    consents = [c for c in consents if c in golden.columns and c in members.columns]
    if not consents or members.empty:
        return pd.DataFrame(columns=FIELD_CONFLICT_COLUMNS)
    m = members[["golden_id", "source_id", *consents]].merge(
        golden[["golden_id", *consents]].drop_duplicates("golden_id"),
        on="golden_id",
        suffixes=("", "__golden"),
    )
    sid = m["source_id"].astype(str)
    ours = None
    if len(written):
        ours = written.assign(source_id=written["source_id"].astype(str))
        ours = ours.drop_duplicates("source_id", keep="last").set_index("source_id")
    parts = []
    for f in consents:
        hit = (m[f].astype("string") == "no") & (m[f"{f}__golden"].astype("string") == "yes")
        hit = hit.fillna(False).to_numpy(dtype=bool)
        if ours is not None and f in ours.columns:  # custsync's own opt-out: not kept
            sent_no = (sid.map(ours[f]).astype("string") == "no").fillna(False)
            made = sid.isin(
                set(ours.index[ours["created"].astype(bool)]) if "created" in ours else set()
            )
            changed = (
                set(held.loc[held["field"] == f, "source_id"].astype(str)) if len(held) else set()
            )
            mine = sent_no & (made | sid.isin(changed))
            hit &= ~mine.to_numpy(dtype=bool)
        parts.append(
            pd.DataFrame(
                {
                    "golden_id": m["golden_id"].to_numpy()[hit],
                    "source_id": sid.to_numpy()[hit],
                    "field": f,
                    "target_value": "no",
                    "golden_value": "yes",
                }
            )
        )
    return pd.concat(parts, ignore_index=True)[FIELD_CONFLICT_COLUMNS]


def accept_target_values(
    members: pd.DataFrame, golden: pd.DataFrame, conflicts: pd.DataFrame
) -> pd.DataFrame:
    """``members`` with each conflicting field set to the golden value: deltas computed on
    it see no difference there, so a conflict under review is not a corrective write."""
    if conflicts.empty:
        return members
    out = members.copy()
    g = golden.drop_duplicates("golden_id").set_index("golden_id")
    sid = out["source_id"].astype(str)
    for f, rows in conflicts.groupby("field", sort=False):
        hit = sid.isin(set(rows["source_id"])).to_numpy()
        out.loc[hit, f] = out.loc[hit, "golden_id"].map(g[f]).to_numpy()
    return out


def withhold_fields(
    deltas: pd.DataFrame,
    golden: pd.DataFrame,
    conflicts: pd.DataFrame,
    to_payloads,  # noqa: ANN001 - connector.from_canonical
    dumps,  # noqa: ANN001 - core.dumps_payload
) -> pd.DataFrame:
    """Payloads of ``deltas`` (with a ``payload`` column) rebuilt without the fields under
    review for their member: a write to a member never overwrites a conflicting field."""
    if conflicts.empty or deltas.empty:
        return deltas
    keyed = conflicts.groupby("source_id")["field"].agg(frozenset)
    hit = deltas["entity_key"].astype(str).map(keyed)
    rows_at = hit.notna().to_numpy().nonzero()[0]
    if len(rows_at) == 0:
        return deltas
    out = deltas.copy()
    sub = out.iloc[rows_at]
    rows = golden.drop_duplicates("golden_id").set_index("golden_id").loc[sub["golden_id"]]
    rows = rows.reset_index()
    for f in conflicts["field"].unique():  # blank the withheld field where it is under review
        if f in rows.columns:
            blank = hit.iloc[rows_at].map(lambda s, f=f: f in s).to_numpy()
            rows[f] = rows[f].astype(object)
            rows.loc[blank, f] = None
    payloads = to_payloads(rows)
    out.loc[out.index[rows_at], "payload"] = [dumps(p) for p in payloads]
    return out
