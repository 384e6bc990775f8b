"""Stable golden ids: which cluster keeps which id, run after run.

Rules (DESIGN.md, "Identity resolution"):
- a cluster whose members all carried golden id G keeps G (a rerun changes no id);
- a prior id whose members are now spread over several clusters stays with
  the cluster holding most of them (a split: the larger part keeps the id,
  the rest get new ids, recorded ``split_from`` the id they left, with ``split_at``);
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

from custsync_pipeline.domain.hashing import hex16, row_hashes64

GOLDEN_ID_COLUMNS = [
    "golden_id",
    "created_at",
    "merged_into",
    "merged_at",
    "split_from",
    "split_at",
]


def empty_golden_ids() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "golden_id": pd.Series(dtype="object"),
            "created_at": pd.Series(dtype="datetime64[ns, UTC]"),
            "merged_into": pd.Series(dtype="object"),
            "merged_at": pd.Series(dtype="datetime64[ns, UTC]"),
            "split_from": pd.Series(dtype="object"),
            "split_at": pd.Series(dtype="datetime64[ns, UTC]"),
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
    for col in ("merged_into", "split_from"):
        out[col] = out[col].astype("object").where(out[col].notna(), None)
    for col in ("created_at", "merged_at", "split_at"):
        out[col] = pd.to_datetime(out[col], utc=True, errors="coerce")
    return out.drop_duplicates("golden_id", keep="last").reset_index(drop=True)


def _utc_ns(when: pd.Series) -> np.ndarray:
    """Times as naive UTC ``datetime64[ns]`` (NaT for missing)."""
    utc = pd.to_datetime(when, utc=True, errors="coerce")
    return utc.dt.tz_localize(None).to_numpy().astype("datetime64[ns]")


def _append_golden_ids(held: pd.DataFrame, rows: list[pd.DataFrame]) -> pd.DataFrame:
    """``held`` (conformed) with ``rows`` appended, column by column: ``pd.concat`` checks
    every object column of the held million ids for missing values (about a second)."""
    parts = [p for p in rows if len(p)]
    if not parts:
        return held
    data = {}
    for col in GOLDEN_ID_COLUMNS:
        if col in ("created_at", "merged_at", "split_at"):
            times = [_utc_ns(held[col]), *[_utc_ns(pd.Series(p[col])) for p in parts]]
            data[col] = pd.to_datetime(np.concatenate(times), utc=True)
        else:
            data[col] = np.concatenate(
                [held[col].to_numpy(dtype=object), *[p[col].to_numpy(dtype=object) for p in parts]]
            )
    out = pd.DataFrame(data)
    for col in ("merged_into", "split_from"):
        values = out[col].to_numpy(dtype=object)
        values[pd.isna(values)] = None
        out[col] = values
    return out


def survivor_table(golden_ids: pd.DataFrame) -> dict[str, str]:
    """merged-away id -> the live id it resolves to (following chains)."""
    merged = golden_ids["merged_into"]
    # only merged-away rows (few) go through Python
    rows = golden_ids[merged.notna().to_numpy() & (merged != golden_ids["golden_id"]).to_numpy()]
    parent = {
        g: m
        for g, m in zip(rows["golden_id"], rows["merged_into"], strict=True)
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


def _hex_ids(hashes: np.ndarray) -> np.ndarray:
    """``G`` + 12 hex characters from the top 48 bits of each 64-bit hash (vectorized)."""
    top48 = hex16(hashes).astype("<U12")  # the first 12 of 16 digits
    return np.strings.add("G", top48).astype(object)


def record_hash(connector: np.ndarray, source_id: np.ndarray) -> np.ndarray:
    """A fixed 64-bit hash of (connector, source_id) per row.

    The source ids are hashed straight (no factorizing: they are nearly all distinct);
    the handful of connector names once each, mixed in by a multiply-xor.
    """
    sid = pd.util.hash_array(np.asarray(source_id, dtype=object), categorize=False)
    codes, names = pd.factorize(np.asarray(connector, dtype=object))
    per_name = pd.util.hash_array(np.asarray(names, dtype=object), categorize=False)
    return sid ^ (per_name[codes] * np.uint64(0x9E3779B97F4A7C15))


class RecordIndex:
    """(connector, source_id) pairs hashed once: the position of other pairs by a hash
    join (the last row wins on repeats), confirmed on the strings so a hash collision can
    never attach a record to another's row."""

    def __init__(self, connector: object, source_id: object) -> None:
        self.conn = np.asarray(pd.Series(connector, dtype=object).astype(str), dtype=object)
        self.sid = np.asarray(pd.Series(source_id, dtype=object).astype(str), dtype=object)
        hashes = record_hash(self.conn, self.sid)
        last = ~pd.Series(hashes).duplicated(keep="last").to_numpy()
        self._rows = np.flatnonzero(last)
        self._index = pd.Index(hashes[last])

    def find(self, connector: object, source_id: object, hashes: np.ndarray | None = None):
        """Position of each (connector, source_id) pair, -1 when absent."""
        conn = np.asarray(connector, dtype=object)
        sid = np.asarray(source_id, dtype=object)
        if len(conn) == 0 or len(self.conn) == 0:
            return np.full(len(conn), -1, dtype=np.int64)
        mine = record_hash(conn, sid) if hashes is None else hashes
        at = self._index.get_indexer(mine)
        pos = np.where(at >= 0, self._rows[np.maximum(at, 0)], -1).astype(np.int64)
        hit = pos >= 0
        ok = (self.conn[pos[hit]] == conn[hit]) & (self.sid[pos[hit]] == sid[hit])
        pos[np.flatnonzero(hit)[~ok]] = -1
        return pos


def match_records(
    connector: np.ndarray,
    source_id: np.ndarray,
    other: pd.DataFrame,
    hashes: np.ndarray | None = None,
) -> np.ndarray:
    """Position in ``other`` (connector, source_id columns) of each record, -1 when absent
    (``RecordIndex``: a hash join confirmed on the strings, the last row wins)."""
    if other is None or len(other) == 0:
        return np.full(len(connector), -1, dtype=np.int64)
    return RecordIndex(other["connector"], other["source_id"]).find(connector, source_id, hashes)


def assign_golden_ids(
    members: pd.DataFrame,
    prior_map: pd.DataFrame | None,
    golden_ids: pd.DataFrame | None,
    now: pd.Timestamp,
    prior_pos: np.ndarray | None = None,
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
    conn_arr = members["connector"].to_numpy(dtype=object)
    sid_arr = members["source_id"].to_numpy(dtype=object)
    if prior_map is not None and len(prior_map):
        pos = match_records(conn_arr, sid_arr, prior_map) if prior_pos is None else prior_pos
        prior_g = prior_map["golden_id"].to_numpy(dtype=object)
        prior = np.where(pos >= 0, prior_g[np.maximum(pos, 0)], None).astype(object)
        if survivors:
            has = pd.notna(prior)
            prior[has] = (
                pd.Series(prior[has]).map(lambda g: survivors.get(g, g)).to_numpy(dtype=object)
            )
    else:
        prior = np.full(n, None, dtype=object)

    has_prior = pd.notna(prior)
    # split rule: each prior id goes to the cluster holding most of its members
    # counted on int codes (a million id strings grouped as strings cost seconds); only
    # the grouping by id matters here, so ids are ordered by code, not by text
    p_code, p_uniq = pd.factorize(prior[has_prior])
    width = int(cluster.max()) + 1 if n else 1
    pair, n_votes = np.unique(
        p_code.astype(np.int64) * width + cluster[has_prior].astype(np.int64), return_counts=True
    )
    order = np.lexsort((pair % width, -n_votes, pair // width))
    votes = pd.DataFrame(
        {
            "prior": np.asarray(p_uniq, dtype=object)[pair[order] // width],
            "cluster": pair[order] % width,
            "n": n_votes[order],
        }
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
    new_rows: list[pd.DataFrame] = []
    if len(need):
        first_pos = np.full(n_clusters, -1, dtype=np.int64)
        order = np.arange(n)[::-1]
        first_pos[cluster[order]] = order  # smallest row index per cluster wins
        seeds = members[["connector", "source_id"]].iloc[first_pos[need]]
        fresh = _hex_ids(row_hashes64(seeds))
        # a hash lookup in the ids held (a sort of every id costs a second at a million)
        fresh_s = pd.Series(fresh, dtype=object)
        clash = (fresh_s.duplicated() | fresh_s.isin(gids["golden_id"])).to_numpy()
        if clash.any():  # rare: salt until unique
            taken = set(gids["golden_id"])
            for i in np.flatnonzero(clash):
                row = seeds.iloc[i]
                fresh[i] = _new_id(f"{row['connector']}\x1f{row['source_id']}", taken | set(fresh))
        cluster_gid[need] = fresh
        # a new id for a part that held members of a prior id won elsewhere: a split.
        # ``votes`` is sorted by prior id then size: the first row per cluster among the
        # needing clusters names the id it held most of (ties by id)
        lost = votes[votes["cluster"].isin(need)].sort_values(
            ["cluster", "n", "prior"], ascending=[True, False, True], kind="mergesort"
        )
        parent = lost.drop_duplicates("cluster").set_index("cluster")["prior"]
        split_from = parent.reindex(need).to_numpy(dtype=object)
        split_from = np.where(pd.notna(split_from), split_from, None)
        new_rows.append(
            pd.DataFrame(
                {
                    "golden_id": fresh,
                    "created_at": now,
                    "merged_into": None,
                    "merged_at": pd.NaT,
                    "split_from": split_from,
                    "split_at": np.where(pd.notna(split_from), now, pd.NaT),
                }
            )
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
        new_rows.append(
            pd.DataFrame(
                {
                    "golden_id": extra,
                    "created_at": now,
                    "merged_into": None,
                    "merged_at": pd.NaT,
                    "split_from": None,
                    "split_at": pd.NaT,
                }
            )
        )
    if new_rows:
        out = _append_golden_ids(out, new_rows)
    else:  # ``merged_at`` set above from ``now``: UTC like the rest
        out["merged_at"] = pd.to_datetime(out["merged_at"], utc=True)

    # clusters that lost a prior id they partly held: split-off parts
    # (``votes`` holds each distinct (prior id, cluster) pair once, ``winners`` one per id)
    split_parts = int(len(votes) - len(winners))
    stats = {
        "golden_ids_new": len(need),
        "golden_ids_merged": int(len(absorbed)),
        "split_parts": split_parts,
    }
    return cluster_gid[cluster], out, stats
