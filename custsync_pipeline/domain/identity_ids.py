"""Stable golden ids: which cluster keeps which id, run after run.

Rules (DESIGN.md, "Identity resolution"):
- a cluster whose members all carried golden id G keeps G (a rerun changes no id);
- a prior id whose members are now spread over several clusters stays with
  the cluster holding most of them (a split: the larger part keeps the id,
  the rest get new ids);
- a cluster holding members of several prior ids keeps the OLDEST of the ids
  it won; the others are recorded ``merged_into`` it (resolvable forever
  through ``resolve_golden_id``);
- a new id is ``G`` + 12 hex characters derived from the cluster's first
  member (unique: salted again on the rare collision).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

GOLDEN_ID_COLUMNS = ["golden_id", "created_at", "merged_into", "merged_at"]


def empty_golden_ids() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "golden_id": pd.Series(dtype="object"),
            "created_at": pd.Series(dtype="datetime64[ns, UTC]"),
            "merged_into": pd.Series(dtype="object"),
            "merged_at": pd.Series(dtype="datetime64[ns, UTC]"),
        }
    )


def _conform_golden_ids(golden_ids: pd.DataFrame | None) -> pd.DataFrame:
    if golden_ids is None or len(golden_ids) == 0:
        return empty_golden_ids()
    out = golden_ids.copy()
    for col in GOLDEN_ID_COLUMNS:
        if col not in out.columns:
            out[col] = None
    out = out[GOLDEN_ID_COLUMNS].copy()
    out["golden_id"] = out["golden_id"].astype("object")
    out["merged_into"] = out["merged_into"].astype("object").where(out["merged_into"].notna(), None)
    out["created_at"] = pd.to_datetime(out["created_at"], utc=True, errors="coerce")
    out["merged_at"] = pd.to_datetime(out["merged_at"], utc=True, errors="coerce")
    return out.drop_duplicates("golden_id", keep="last").reset_index(drop=True)


def survivor_table(golden_ids: pd.DataFrame) -> dict[str, str]:
    """merged-away id -> the live id it resolves to (following chains)."""
    parent = {
        g: m
        for g, m in zip(golden_ids["golden_id"], golden_ids["merged_into"], strict=True)
        if isinstance(m, str) and m and m != g
    }
    out: dict[str, str] = {}
    for start in parent:
        seen = {start}
        cur = parent[start]
        while cur in parent and cur not in seen:  # guard against a corrupted cycle
            seen.add(cur)
            cur = parent[cur]
        out[start] = cur
    return out


def resolve_golden_id(golden_ids: pd.DataFrame, golden_id: str) -> str:
    """The live golden id that ``golden_id`` is or was merged into."""
    return survivor_table(_conform_golden_ids(golden_ids)).get(golden_id, golden_id)


def _new_id(seed: str, taken: set[str]) -> str:
    salt = 0
    while True:
        text = seed if salt == 0 else f"{seed}#{salt}"
        gid = "G" + hashlib.sha1(text.encode()).hexdigest()[:12]
        if gid not in taken:
            return gid
        salt += 1


def assign_golden_ids(
    members: pd.DataFrame,
    prior_map: pd.DataFrame | None,
    golden_ids: pd.DataFrame | None,
    now: pd.Timestamp,
) -> tuple[np.ndarray, pd.DataFrame, dict[str, int]]:
    """Give every cluster a golden id.

    ``members`` has one row per record: ``connector``, ``source_id``,
    ``cluster`` (an int label; clusters are numbered by their first member).
    Returns the golden id per row, the updated ``golden_ids`` table (every
    prior row plus new ones, merges recorded) and counts for metadata.
    """
    gids = _conform_golden_ids(golden_ids)
    survivors = survivor_table(gids)
    n = len(members)
    cluster = members["cluster"].to_numpy()
    if prior_map is not None and len(prior_map):
        pm = prior_map[["connector", "source_id", "golden_id"]].drop_duplicates(
            ["connector", "source_id"], keep="last"
        )
        joined = members[["connector", "source_id"]].merge(
            pm, on=["connector", "source_id"], how="left", sort=False
        )
        prior = joined["golden_id"].astype("object")
        if survivors:
            prior = prior.map(lambda g: survivors.get(g, g) if isinstance(g, str) else g)
        prior = prior.to_numpy(dtype=object)
    else:
        prior = np.full(n, None, dtype=object)

    has_prior = pd.notna(prior)
    # split rule: each prior id goes to the cluster holding most of its members
    votes = (
        pd.DataFrame({"prior": prior[has_prior], "cluster": cluster[has_prior]})
        .value_counts()
        .rename("n")
        .reset_index()
        .sort_values(["prior", "n", "cluster"], ascending=[True, False, True], kind="mergesort")
    )
    winners = votes.drop_duplicates("prior", keep="first")
    created = gids.set_index("golden_id")["created_at"]
    winners = winners.assign(created_at=winners["prior"].map(created))
    # merge rule: a cluster keeps the oldest id it won (ties by id, for determinism)
    winners = winners.sort_values(
        ["cluster", "created_at", "prior"], na_position="last", kind="mergesort"
    )
    survivor_of = winners.drop_duplicates("cluster", keep="first").set_index("cluster")["prior"]
    absorbed = winners[winners.duplicated("cluster", keep="first")]

    n_clusters = int(cluster.max()) + 1 if n else 0
    cluster_gid = np.full(n_clusters, None, dtype=object)
    cluster_gid[survivor_of.index.to_numpy()] = survivor_of.to_numpy()

    # new ids for clusters that won no prior id, seeded by their first member
    need = np.flatnonzero(pd.isna(cluster_gid))
    new_rows: list[dict] = []
    if len(need):
        first_pos = np.full(n_clusters, -1, dtype=np.int64)
        order = np.arange(n)[::-1]
        first_pos[cluster[order]] = order  # smallest row index per cluster wins
        conn = members["connector"].to_numpy(dtype=object)
        sid = members["source_id"].to_numpy(dtype=object)
        taken = set(gids["golden_id"])
        for c in need:
            p = first_pos[c]
            gid = _new_id(f"{conn[p]}\x1f{sid[p]}", taken)
            taken.add(gid)
            cluster_gid[c] = gid
            new_rows.append(
                {"golden_id": gid, "created_at": now, "merged_into": None, "merged_at": pd.NaT}
            )

    out = gids
    if len(absorbed):
        into = dict(zip(absorbed["prior"], absorbed["cluster"].map(survivor_of), strict=True))
        hit = out["golden_id"].isin(into.keys())
        out.loc[hit, "merged_into"] = out.loc[hit, "golden_id"].map(into)
        out.loc[hit, "merged_at"] = now
    # a prior id seen in the map but missing from golden_ids (hand-edited DB): register it
    known = set(out["golden_id"])
    extra = [g for g in survivor_of.to_numpy() if g not in known]
    if extra:
        new_rows += [
            {"golden_id": g, "created_at": now, "merged_into": None, "merged_at": pd.NaT}
            for g in extra
        ]
    if new_rows:
        out = pd.concat([out, pd.DataFrame(new_rows)], ignore_index=True)
    out["created_at"] = pd.to_datetime(out["created_at"], utc=True)
    out["merged_at"] = pd.to_datetime(out["merged_at"], utc=True)

    # clusters that lost a prior id they partly held: split-off parts
    split_parts = 0
    if has_prior.any():
        held = pd.DataFrame(
            {"prior": prior[has_prior], "cluster": cluster[has_prior]}
        ).drop_duplicates()
        won = set(zip(winners["prior"], winners["cluster"], strict=True))
        split_parts = int(
            sum((p, c) not in won for p, c in zip(held["prior"], held["cluster"], strict=True))
        )
    stats = {
        "golden_ids_new": len(need),
        "golden_ids_merged": int(len(absorbed)),
        "split_parts": split_parts,
    }
    return cluster_gid[cluster], out, stats
