"""Records custsync created itself: a target record carrying ``custsync_id`` = G was
created by a publish *for* golden record G, so it is a copy of G and joins G directly.

Resolving such a copy by its (copied) email or phone would make it compete with
the originals — with a family email it would even be refused and get a golden
id of its own, and the next publish would create yet another copy. So stamped
records skip resolution and are attached to G (or to what G was merged into).
A stamp naming an id this state DB never issued is an ordinary identifier.

Steward decisions always win: a stamped record named in a must-link or
cannot-link stays in the resolution (resolved by its keys like any record,
its stamp an ordinary identifier), so the decision can apply to it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from custsync_pipeline.domain.identity import LINK_COLUMNS, MAP_COLUMNS, IdentityResult

STAMP_RULE = "custsync_id"
STAMPED_COLUMNS = ["connector", "source_id", "custsync_id"]  # what ``split_stamped`` sets apart


def _decided(records: pd.DataFrame, decisions: pd.DataFrame | None) -> pd.Series:
    """True for the records a steward decision names (either side)."""
    if decisions is None or decisions.empty:
        return pd.Series(False, index=records.index)
    named = pd.MultiIndex.from_arrays(
        [
            pd.concat([decisions["connector_a"], decisions["connector_b"]]).astype(str),
            pd.concat([decisions["source_id_a"], decisions["source_id_b"]]).astype(str),
        ]
    )
    mine = pd.MultiIndex.from_arrays(
        [records["connector"].astype(str), records["source_id"].astype(str)]
    )
    return pd.Series(mine.isin(named), index=records.index)


def split_stamped(
    records: pd.DataFrame, known_ids: pd.Series, decisions: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records to resolve, stamped records [connector, source_id, custsync_id]).

    Stamped records named in a steward decision stay with the records to resolve.
    """
    if "custsync_id" not in records.columns or records.empty:
        return records, pd.DataFrame(columns=STAMPED_COLUMNS)
    # only the records that carry a stamp are looked up (most carry none)
    ids = records["custsync_id"]
    has = np.flatnonzero(ids.notna().to_numpy())
    mask = np.zeros(len(records), dtype=bool)
    mask[has] = ids.iloc[has].isin(pd.Index(known_ids.dropna())).to_numpy()
    if mask.any():
        sub = np.flatnonzero(mask)
        mask[sub] = ~_decided(records.iloc[sub], decisions).to_numpy()
    if not mask.any():
        return records, pd.DataFrame(columns=STAMPED_COLUMNS)
    stamped = records.loc[mask, STAMPED_COLUMNS].astype(str)
    return records[~mask], stamped.reset_index(drop=True)


def follow_merges(ids: pd.Series, golden_ids: pd.DataFrame, max_hops: int = 64) -> pd.Series:
    """Each id mapped to the live id it was (transitively) merged into."""
    if golden_ids.empty:
        return ids
    merged = golden_ids.dropna(subset=["merged_into"]).set_index("golden_id")["merged_into"]
    out = ids.copy()
    for _ in range(max_hops):
        nxt = out.map(merged)
        moved = nxt.notna() & (nxt != out)
        if not moved.any():
            break
        out = out.where(~moved, nxt)
    return out


def attach_stamped(
    result: IdentityResult, stamped: pd.DataFrame, now: pd.Timestamp
) -> IdentityResult:
    """Add the stamped records to the map (and evidence) of ``result``."""
    if stamped.empty:
        return result
    target = follow_merges(stamped["custsync_id"], result.golden_ids)
    rows = pd.DataFrame(
        {
            "connector": stamped["connector"],
            "source_id": stamped["source_id"],
            "golden_id": target.to_numpy(),
            "rule": STAMP_RULE,
            "updated_at": now,
        }
    )[MAP_COLUMNS]
    # evidence: the copy is linked to the first other member of its golden record (only
    # the golden records of copies are sorted, not the whole map)
    members = result.identity_map
    members = members[members["golden_id"].isin(pd.unique(target.to_numpy())).to_numpy()]
    anchor = (
        members.sort_values(["golden_id", "connector", "source_id"])
        .drop_duplicates("golden_id")[["golden_id", "connector", "source_id"]]
        .rename(columns={"connector": "connector_b", "source_id": "source_id_b"})
    )
    links = rows.rename(columns={"connector": "connector_a", "source_id": "source_id_a"}).merge(
        anchor, on="golden_id", how="inner"
    )
    links["key"] = links["golden_id"]
    for col in LINK_COLUMNS:
        if col not in links.columns:
            links[col] = STAMP_RULE if col == "rule" else pd.NA
    # everything else the resolution found stays: its match parameters and first names
    # (an incremental resolution reads them next time; dropped, every run after a first
    # publish re-estimated m and u) and each record's reach (a stamped copy has none)
    reach = result.reach
    if reach is not None:
        reach = np.concatenate([reach, np.full(len(rows), None, dtype=object)])
    return replace(
        result,
        identity_map=pd.concat([result.identity_map, rows], ignore_index=True),
        links=pd.concat([result.links, links[LINK_COLUMNS]], ignore_index=True),
        stats={**result.stats, "stamped_records": len(rows)},
        reach=reach,
    )
