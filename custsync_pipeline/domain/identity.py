"""Identity resolution: one person = one golden id, stable from run to run.

``resolve_identities`` turns the canonical records of every connector into an
identity map (connector, source_id -> golden_id), following the identifier
rules of the sync config (``identity.identifiers``):

- fast path, vectorized: identifier keys -> edges between records sharing a
  usable key -> connected components (``scipy.sparse.csgraph``);
- slow path (``identity_constrained``), only for the components that need it:
  a per-golden limit broken, first names that differ, a guest between several
  accounts, or a steward decision;
- stable ids (``identity_ids``): oldest id survives a merge, the larger part
  keeps the id in a split.

Pure: pandas/numpy/scipy only, no I/O, no dagster.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from custsync_pipeline.config import IdentifierRule
from custsync_pipeline.domain.identity_constrained import (
    ConstrainedInput,
    KeyGroup,
    resolve_constrained,
)
from custsync_pipeline.domain.identity_ids import (
    assign_golden_ids,
    empty_golden_ids,
    resolve_golden_id,
    survivor_table,
)
from custsync_pipeline.domain.identity_keys import (
    USABLE,
    build_keys,
    is_contact_rule,
    mask_value,
    mask_values,
    name_tokens,
)

__all__ = [
    "IdentityResult",
    "resolve_identities",
    "resolve_golden_id",
    "mask_value",
    "MAP_COLUMNS",
    "LINK_COLUMNS",
    "CONFLICT_COLUMNS",
]

MAP_COLUMNS = ["connector", "source_id", "golden_id", "rule", "updated_at"]
LINK_COLUMNS = [
    "golden_id",
    "connector_a",
    "source_id_a",
    "connector_b",
    "source_id_b",
    "rule",
    "key",
]
CONFLICT_COLUMNS = [
    "conflict_id",
    "kind",
    "rule",
    "key_masked",
    "connector_a",
    "source_id_a",
    "golden_id_a",
    "connector_b",
    "source_id_b",
    "golden_id_b",
    "evidence",
]
DECISION_COLUMNS = ["decision", "connector_a", "source_id_a", "connector_b", "source_id_b"]

# A value shared by many records yields one conflict row per record up to this
# many (paired with the first holder), so a till placeholder used a thousand
# times does not flood the review queue.
CONFLICT_PAIRS_PER_KEY = 20


@dataclass
class IdentityResult:
    """What one resolution produced (see docs/identity.md for the columns).

    ``links.key`` and ``conflicts.key_masked`` hold masked keys only.
    """

    identity_map: pd.DataFrame
    golden_ids: pd.DataFrame
    links: pd.DataFrame
    conflicts: pd.DataFrame
    stats: dict[str, int] = field(default_factory=dict)


def _prepare(records: pd.DataFrame) -> pd.DataFrame:
    missing = {"connector", "source_id"} - set(records.columns)
    if missing:
        raise ValueError(f"records lack column(s) {sorted(missing)}")
    recs = records[records["connector"].notna() & records["source_id"].notna()]
    if "updated_at" in recs.columns:
        recs = recs.sort_values("updated_at", kind="mergesort", na_position="first")
    recs = recs.drop_duplicates(["connector", "source_id"], keep="last")
    recs = recs.sort_values(["connector", "source_id"], kind="mergesort").reset_index(drop=True)
    recs["connector"] = recs["connector"].astype(str)
    recs["source_id"] = recs["source_id"].astype(str)
    return recs


def _star_edges(occ_rec: np.ndarray, occ_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges (first holder, other holder) for occurrences sorted by key."""
    first = np.ones(len(occ_key), dtype=bool)
    first[1:] = occ_key[1:] != occ_key[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(len(occ_key)), 0))
    return occ_rec[start][~first], occ_rec[~first]


def _recount_contact_holders(
    keys, rules: list[IdentifierRule], contact_rule: np.ndarray, n: int
) -> None:
    """``max_records_per_value`` of a contact rule counts holders, not records.

    One person has a record in every system (and a Contact and a Lead in one):
    records a system identifier already links count as one holder, so only a
    value typed for many different people (a till placeholder) is overused.
    """
    limits = np.array(
        [
            r.max_records_per_value if (contact_rule[i] and r.max_records_per_value) else -1
            for i, r in enumerate(rules)
        ],
        dtype=np.int64,
    )
    if (limits < 0).all() or keys.n_keys == 0:
        return
    from custsync_pipeline.domain.identity_keys import OVERUSED

    occ_rule = keys.key_rule[keys.occ_key]
    strong = (keys.key_status[keys.occ_key] == USABLE) & ~contact_rule[occ_rule]
    strong &= keys.key_count[keys.occ_key] >= 2
    a, b = _star_edges(keys.occ_rec[strong], keys.occ_key[strong])
    holder = _components(n, a, b)
    key_limit = limits[keys.key_rule]
    counted = key_limit[keys.occ_key] >= 0
    holders = _count_distinct(keys.occ_key[counted], holder[keys.occ_rec[counted]], keys.n_keys)
    judged = key_limit >= 0
    was = judged & (keys.key_status == OVERUSED)
    keys.key_status[was] = USABLE
    keys.key_reason[was] = ""
    over = judged & (keys.key_status == USABLE) & (holders > key_limit)
    keys.key_status[over] = OVERUSED
    keys.key_reason[over] = [
        f"value shared by more than {lim} different holders" for lim in key_limit[over]
    ]


def _kinds(recs: pd.DataFrame) -> np.ndarray:
    """``person`` / ``company`` per record (None when unknown)."""
    if "kind" not in recs.columns:
        return np.full(len(recs), None, dtype=object)
    kind = recs["kind"].astype("string").str.strip().str.lower()
    kind = kind.where(kind.isin(["person", "company"]))
    # unknown kind: a record with a person's name is a person, one with only a company name a company
    person_named = pd.Series(False, index=recs.index)
    for col in ("first_name", "last_name"):
        if col in recs.columns:
            person_named |= recs[col].notna()
    kind = kind.fillna(
        pd.Series(np.where(person_named, "person", pd.NA), index=recs.index, dtype="string")
    )
    if "company_name" in recs.columns:
        kind = kind.fillna(recs["company_name"].where(recs["company_name"].isna(), "company"))
    return kind.astype(object).where(kind.notna(), None).to_numpy(dtype=object)


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    return labels


def _count_distinct(group: np.ndarray, value: np.ndarray, n_groups: int) -> np.ndarray:
    """Number of distinct ``value`` per ``group`` (both non-negative ints)."""
    if len(group) == 0:
        return np.zeros(n_groups, dtype=np.int64)
    pairs = np.unique(np.stack([group, value], axis=1), axis=0)
    return np.bincount(pairs[:, 0], minlength=n_groups)


def _decision_pairs(
    decisions: pd.DataFrame | None, recs: pd.DataFrame
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    if decisions is None or len(decisions) == 0:
        return [], []
    index = pd.Series(
        np.arange(len(recs)),
        index=pd.MultiIndex.from_arrays([recs["connector"], recs["source_id"]]),
    )
    must: list[tuple[int, int]] = []
    cannot: list[tuple[int, int]] = []
    for row in decisions[DECISION_COLUMNS].itertuples(index=False):  # few rows: stewards' hands
        a = index.get((str(row.connector_a), str(row.source_id_a)))
        b = index.get((str(row.connector_b), str(row.source_id_b)))
        if a is None or b is None or a == b:
            continue  # a record that is gone: the decision waits until it comes back
        (must if row.decision == "must_link" else cannot).append((int(a), int(b)))
    return must, cannot


def resolve_identities(
    records: pd.DataFrame,
    rules: list[IdentifierRule],
    prior_map: pd.DataFrame | None = None,
    golden_ids: pd.DataFrame | None = None,
    decisions: pd.DataFrame | None = None,
    now: pd.Timestamp | None = None,
) -> IdentityResult:
    """Resolve canonical ``records`` of every connector into stable golden ids.

    ``records`` carries normalized ``email``/``phone`` and the identifier
    columns the rules name; ``prior_map`` (connector, source_id, golden_id
    [, updated_at]) and ``golden_ids`` come from the state DB; ``decisions``
    are steward rows (decision, connector_a, source_id_a, connector_b,
    source_id_b) with decision ``must_link`` / ``cannot_link``.
    """
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    if now.tzinfo is None:
        now = now.tz_localize("UTC")
    recs = _prepare(records)
    n = len(recs)
    if "custsync_id" in recs.columns and golden_ids is not None and len(golden_ids):
        # a golden id stamped into a target may since have been merged away: use the survivor
        survivors = survivor_table(golden_ids)
        if survivors:
            stamped = recs["custsync_id"].astype("string")
            recs["custsync_id"] = stamped.map(lambda g: survivors.get(g, g), na_action="ignore")
    rules = sorted(rules, key=lambda r: r.priority)  # stable: config order within a priority
    contact_rule = np.array([is_contact_rule(r) for r in rules], dtype=bool)
    keys = build_keys(recs, rules)
    _recount_contact_holders(keys, rules, contact_rule, n)

    # --- fast path: usable shared keys -> star edges -> components
    usable = keys.key_status == USABLE
    shared = keys.key_count >= 2
    link_key = usable & shared
    sel = link_key[keys.occ_key]
    l_rec, l_key = keys.occ_rec[sel], keys.occ_key[sel]
    first_of_key = np.ones(len(l_key), dtype=bool)
    first_of_key[1:] = l_key[1:] != l_key[:-1]
    hub = np.full(keys.n_keys, -1, dtype=np.int64)
    hub[l_key[first_of_key]] = l_rec[first_of_key]
    spoke = ~first_of_key
    e_a, e_b, e_key = hub[l_key[spoke]], l_rec[spoke], l_key[spoke]

    must, cannot = _decision_pairs(decisions, recs)
    m_a = np.array([p[0] for p in must], dtype=np.int64)
    m_b = np.array([p[1] for p in must], dtype=np.int64)
    labels = _components(n, np.concatenate([e_a, m_a]), np.concatenate([e_b, m_b]))
    n_comp = int(labels.max()) + 1 if n else 0
    comp_size = np.bincount(labels, minlength=n_comp)

    # --- which components need the constrained slow path
    flag = np.zeros(n_comp, dtype=bool)
    multi = comp_size > 1
    u_occ = usable[keys.occ_key]
    for r_idx, rule in enumerate(rules):
        # a limit broken, or two values of a contact point (the contact-mismatch check)
        limit = 1 if contact_rule[r_idx] else rule.max_per_golden
        if rule.max_per_golden is not None and limit is not None:
            limit = min(limit, rule.max_per_golden)
        if limit is None:
            continue
        s = u_occ & (keys.key_rule[keys.occ_key] == r_idx)
        distinct = _count_distinct(labels[keys.occ_rec[s]], keys.occ_key[s], n_comp)
        flag |= distinct > limit
    tokens = name_tokens(recs)
    has_name = pd.notna(tokens).astype(bool)
    if has_name.any():
        codes, _ = pd.factorize(tokens[has_name])
        flag |= _count_distinct(labels[has_name], codes, n_comp) > 1
    kinds = _kinds(recs)
    has_kind = pd.notna(kinds).astype(bool)
    if has_kind.any():
        codes, _ = pd.factorize(kinds[has_kind])
        flag |= _count_distinct(labels[has_kind], codes, n_comp) > 1
    for a, b in must + cannot:
        flag[labels[a]] = True
        flag[labels[b]] = True
    # a nameless record (a guest checkout) between two named clusters must choose
    named = has_name
    weak_comp = np.zeros(n_comp, dtype=bool)
    weak_comp[labels[~named]] = True
    weak_comp &= multi
    if weak_comp.any():
        both = named[e_a] & named[e_b]
        named_labels = _components(n, e_a[both], e_b[both])
        sel_named = named & weak_comp[labels]
        n_named = _count_distinct(labels[sel_named], named_labels[sel_named], n_comp)
        flag |= weak_comp & (n_named >= 2)
    flag &= multi

    final = labels.astype(np.int64)
    rec_flag = flag[labels]
    slow_links: list[tuple[int, int, str, int]] = []
    slow_conflicts: list[tuple[str, str, int, int, int, str]] = []
    slow_idx = np.flatnonzero(rec_flag)
    if len(slow_idx):
        out, local_of = _run_slow_path(
            slow_idx, keys, link_key, rules, contact_rule, tokens, must, cannot, kinds
        )
        final[slow_idx] = n_comp + np.asarray(out.labels, dtype=np.int64)
        slow_links = [(int(slow_idx[a]), int(slow_idx[b]), r, k) for a, b, r, k in out.links]
        slow_conflicts = [
            (kind, r, k, int(slow_idx[a]), int(slow_idx[b]), ev)
            for kind, r, k, a, b, ev in out.conflicts
        ]
    _, cluster = np.unique(final, return_inverse=True)

    # --- stable golden ids
    members = recs[["connector", "source_id"]].assign(cluster=cluster)
    gid, golden_table, id_stats = assign_golden_ids(members, prior_map, golden_ids, now)

    # --- evidence: accepted links
    fast = ~rec_flag[e_a]
    rule_names = np.array([r.name for r in rules], dtype=object)
    link_a = np.concatenate([e_a[fast], np.array([x[0] for x in slow_links], dtype=np.int64)])
    link_b = np.concatenate([e_b[fast], np.array([x[1] for x in slow_links], dtype=np.int64)])
    link_k = np.concatenate([e_key[fast], np.array([x[3] for x in slow_links], dtype=np.int64)])
    link_rule = np.concatenate(
        [rule_names[keys.key_rule[e_key[fast]]], np.array([x[2] for x in slow_links], dtype=object)]
    )
    conn = recs["connector"].to_numpy(dtype=object)
    sid = recs["source_id"].to_numpy(dtype=object)
    key_text = np.where(link_k >= 0, keys.key_value[np.maximum(link_k, 0)], "")
    links = pd.DataFrame(
        {
            "golden_id": gid[link_a],
            "connector_a": conn[link_a],
            "source_id_a": sid[link_a],
            "connector_b": conn[link_b],
            "source_id_b": sid[link_b],
            "rule": link_rule,
            "key": mask_values(pd.Series(key_text, dtype=object)).to_numpy(dtype=object),
        },
        columns=LINK_COLUMNS,
    )

    # --- identity map: the strongest rule that linked each record
    # rank 0 = steward, then the rules strongest first (their order after sorting)
    rank_of = {"steward": 0} | {r.name: i + 1 for i, r in enumerate(rules)}
    names_by_rank = np.array(["steward"] + [r.name for r in rules] + ["own"], dtype=object)
    link_rank = np.array([rank_of.get(r, len(rules) + 1) for r in link_rule], dtype=np.int64)
    best = np.full(n, len(rules) + 1, dtype=np.int64)
    np.minimum.at(best, link_a, link_rank)
    np.minimum.at(best, link_b, link_rank)
    rule_col = names_by_rank[best]
    identity_map = pd.DataFrame(
        {"connector": conn, "source_id": sid, "golden_id": gid, "rule": rule_col}
    )
    identity_map["updated_at"] = now
    if prior_map is not None and len(prior_map) and "updated_at" in prior_map.columns:
        prev = identity_map[["connector", "source_id"]].merge(
            prior_map[["connector", "source_id", "golden_id", "updated_at"]].drop_duplicates(
                ["connector", "source_id"], keep="last"
            ),
            on=["connector", "source_id"],
            how="left",
        )
        same = (prev["golden_id"].to_numpy(dtype=object) == gid) & prev[
            "updated_at"
        ].notna().to_numpy()
        prev_at = pd.to_datetime(prev["updated_at"], utc=True, errors="coerce")
        identity_map["updated_at"] = prev_at.where(same, now).to_numpy()
    identity_map["updated_at"] = pd.to_datetime(identity_map["updated_at"], utc=True)

    # --- conflicts: refused links, both sides and the evidence
    conflicts = _conflicts(keys, link_key, rules, slow_conflicts, cluster, conn, sid, gid)

    stats = {
        "records": n,
        "golden_records": int(cluster.max()) + 1 if n else 0,
        "links": len(links),
        "conflicts": len(conflicts),
        "slow_path_records": len(slow_idx),
        "slow_path_clusters": int(flag.sum()),
        **id_stats,
    }
    for kind, count in conflicts["kind"].value_counts().items():
        stats[f"conflicts_{kind}"] = int(count)
    return IdentityResult(identity_map, golden_table, links, conflicts, stats)


def _run_slow_path(
    slow_idx: np.ndarray,
    keys,
    link_key: np.ndarray,
    rules: list[IdentifierRule],
    contact_rule: np.ndarray,
    tokens: np.ndarray,
    must: list[tuple[int, int]],
    cannot: list[tuple[int, int]],
    kinds: np.ndarray,
):
    n_slow = len(slow_idx)
    local = np.full(len(tokens), -1, dtype=np.int64)
    local[slow_idx] = np.arange(n_slow)
    in_slow = local[keys.occ_rec] >= 0
    limits = {i: r.max_per_golden for i, r in enumerate(rules) if r.max_per_golden is not None}

    # key groups (all holders of a usable shared key sit in one component)
    s = in_slow & link_key[keys.occ_key]
    g_rec, g_key = local[keys.occ_rec[s]], keys.occ_key[s]
    groups: list[KeyGroup] = []
    if len(g_key):
        starts = np.flatnonzero(np.r_[True, g_key[1:] != g_key[:-1]])
        bounds = np.r_[starts, len(g_key)]
        for i in range(len(starts)):
            k = int(g_key[bounds[i]])
            r_idx = int(keys.key_rule[k])
            groups.append(
                KeyGroup(
                    priority=rules[r_idx].priority,
                    rule_order=r_idx,
                    rule=rules[r_idx].name,
                    key_id=k,
                    contact=bool(contact_rule[r_idx]),
                    members=g_rec[bounds[i] : bounds[i + 1]].tolist(),
                )
            )
    # values per record for the limited rules (usable keys, shared or not)
    values: list[dict[int, set[int]]] = [{} for _ in range(n_slow)]
    contact_idx = [i for i in range(len(rules)) if contact_rule[i]]
    tracked = sorted(set(limits) | set(contact_idx))
    if tracked:
        lim_rule = np.zeros(len(rules), dtype=bool)
        lim_rule[tracked] = True
        v = (
            in_slow
            & (keys.key_status[keys.occ_key] == USABLE)
            & lim_rule[keys.key_rule[keys.occ_key]]
        )
        for rec, k in zip(local[keys.occ_rec[v]].tolist(), keys.occ_key[v].tolist(), strict=True):
            values[rec].setdefault(int(keys.key_rule[k]), set()).add(k)
    inp = ConstrainedInput(
        n=n_slow,
        groups=groups,
        limits=limits,
        rule_names={i: r.name for i, r in enumerate(rules)},
        values=values,
        names=[t if isinstance(t, str) else None for t in tokens[slow_idx]],
        must=[(int(local[a]), int(local[b])) for a, b in must],
        cannot=[(int(local[a]), int(local[b])) for a, b in cannot],
        contact_rules=contact_idx,
        kinds=[k if isinstance(k, str) else None for k in kinds[slow_idx]],
    )
    return resolve_constrained(inp), local


def _conflict_id(parts: pd.DataFrame) -> pd.Series:
    joined = parts.astype(str).agg("\x1f".join, axis=1)
    return joined.map(lambda t: hashlib.sha1(t.encode()).hexdigest()[:16])


def _conflicts(
    keys,
    link_key: np.ndarray,
    rules: list[IdentifierRule],
    slow_conflicts: list[tuple[str, str, int, int, int, str]],
    cluster: np.ndarray,
    conn: np.ndarray,
    sid: np.ndarray,
    gid: np.ndarray,
) -> pd.DataFrame:
    # keys shared by several records but not usable: blocked or overused values
    refused = (~link_key) & (keys.key_count >= 2)
    s = refused[keys.occ_key]
    r_rec, r_key = keys.occ_rec[s], keys.occ_key[s]
    rank = np.zeros(len(r_key), dtype=np.int64)
    if len(r_key):
        starts = np.r_[True, r_key[1:] != r_key[:-1]]
        start_pos = np.maximum.accumulate(np.where(starts, np.arange(len(r_key)), 0))
        rank = np.arange(len(r_key)) - start_pos
        first_rec = r_rec[start_pos]
    keep = (rank >= 1) & (rank <= CONFLICT_PAIRS_PER_KEY)
    kinds = np.where(keys.key_status == 1, "blocked_value", "shared_value")
    rule_names = np.array([r.name for r in rules], dtype=object)
    if len(r_key):
        k = r_key[keep]
        evid = [
            f"{reason}; held by {count} records"
            for reason, count in zip(keys.key_reason[k], keys.key_count[k], strict=True)
        ]
        a_idx, b_idx = first_rec[keep], r_rec[keep]
        data = {
            "kind": kinds[k],
            "rule": rule_names[keys.key_rule[k]],
            "key_id": k,
            "a": a_idx,
            "b": b_idx,
            "evidence": evid,
        }
    else:
        data = {c: [] for c in ("kind", "rule", "key_id", "a", "b", "evidence")}
    frame = pd.DataFrame(data)
    if slow_conflicts:
        frame = pd.concat(
            [
                frame,
                pd.DataFrame(
                    slow_conflicts, columns=["kind", "rule", "key_id", "a", "b", "evidence"]
                ),
            ],
            ignore_index=True,
        )
    if len(frame) == 0:
        return pd.DataFrame(columns=CONFLICT_COLUMNS)
    a = frame["a"].to_numpy(dtype=np.int64)
    b = frame["b"].to_numpy(dtype=np.int64)
    # a refusal that other evidence overrode (both sides ended together) is no conflict
    apart = cluster[a] != cluster[b]
    frame, a, b = frame[apart], a[apart], b[apart]
    key_ids = frame["key_id"].to_numpy(dtype=np.int64)
    out = pd.DataFrame(
        {
            "kind": frame["kind"].to_numpy(dtype=object),
            "rule": frame["rule"].to_numpy(dtype=object),
            "key_masked": mask_values(pd.Series(keys.key_value[key_ids], dtype=object)).to_numpy(
                dtype=object
            ),
            "connector_a": conn[a],
            "source_id_a": sid[a],
            "golden_id_a": gid[a],
            "connector_b": conn[b],
            "source_id_b": sid[b],
            "golden_id_b": gid[b],
            "evidence": frame["evidence"].to_numpy(dtype=object),
        }
    )
    out.insert(
        0,
        "conflict_id",
        _conflict_id(
            out[["kind", "rule", "connector_a", "source_id_a", "connector_b", "source_id_b"]]
        ),
    )
    out = out.drop_duplicates("conflict_id").reset_index(drop=True)
    return out[CONFLICT_COLUMNS]


def empty_result() -> IdentityResult:
    """A result for no records at all (a first run before any extraction)."""
    return IdentityResult(
        pd.DataFrame(columns=MAP_COLUMNS),
        empty_golden_ids(),
        pd.DataFrame(columns=LINK_COLUMNS),
        pd.DataFrame(columns=CONFLICT_COLUMNS),
        {},
    )
