"""Incremental identity resolution: resolve again only what a change can reach.

A full resolution reads every record; after 1% of them changed, 99% of its work
repeats what the last run decided. This module finds the **scope** of a change — the
records whose golden id, evidence or review entries a full resolution could decide
differently — resolves those alone and keeps every other record's result.

The scope is a closure. It starts from the changed records (new, edited, deleted, or
no longer stamped) and grows until nothing more is reached:

- every record of a golden record a scope record belonged to (a split or merge moves
  all its members' ids);
- every holder of an identifier value a scope record holds, or a changed record held
  before (a value's count, its household and name gates are judged over all holders),
  and everyone of its surname at its street and postal code (where a household check
  looks for housemates);
- both sides of a stored review-queue entry naming a scope record (an ambiguity that
  a record kept open);
- the records a steward decision names;
- every record of a block a change pushes over ``max_block_size`` or back under it
  (its pairs appear or vanish);
- every record that can score at least ``review_threshold`` against a scope record
  with the stored match parameters (a bound from above: an e-mail or phone the rules
  might mask counts only when it helps).

Everything a resolution estimates from the whole population is held fixed between
full runs: the probabilistic stage's m, u and prior (``MatchParams``) and the first
names the population holds (``KnownWords``); the word counts that decide whether a
name was typed the wrong way round and the block sizes are counted on the stored reach
of every record. With those, resolving the scope with the stored map gives what a full
resolution with the same parameters would (``test_identity_scope.py`` holds it on
random change sets of both generators). A scope larger than ``max_share`` of the
records is not worth it: ``resolve_changes`` returns None and the caller resolves
everything.

Pure: numpy/pandas, the records fetched through a callable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from custsync_pipeline.domain.identity import (
    CONFLICT_COLUMNS,
    HEAD_BLOCKS,
    HEAD_INPUT,
    LINK_COLUMNS,
    MAP_COLUMNS,
    IdentityResult,
    KnownWords,
    describe_records,
    input_hashes,
    name_words,
    reach_width,
    resolve_identities,
    unpack_reach,
)
from custsync_pipeline.domain.identity_ids import RecordIndex, match_records
from custsync_pipeline.domain.identity_match import MatchParams, upper_probability
from custsync_pipeline.domain.identity_names import WordRoles, swap_rule
from custsync_pipeline.domain.plan import IdentifierRule, MatchingPlan

STAMP_RULE = "custsync_id"  # the map's rule for a record attached by its stamp


@dataclass
class StoredResolution:
    """The last resolution as the state DB holds it."""

    # connector, source_id, golden_id, rule, updated_at, source_hash, reach
    identity_map: pd.DataFrame
    golden_ids: pd.DataFrame
    conflicts: pd.DataFrame  # the review queue (CONFLICT_COLUMNS)
    match_params: MatchParams | None
    known_words: np.ndarray | None = None  # the first names the last full resolution knew


@dataclass
class ScopedResolution:
    """A resolution of the scope merged into the stored one."""

    result: IdentityResult  # map, golden ids and conflicts of everyone; links of the scope
    scope: pd.DataFrame  # connector, source_id, source_hash, reach of the records resolved
    gone: pd.DataFrame  # connector, source_id, golden_id of stored map rows no longer resolved
    touched: np.ndarray  # golden ids whose evidence the scope's links replace
    kept: int = 0  # the map's first rows: stored rows as they are (outside the scope)


Fetch = Callable[[pd.DataFrame], pd.DataFrame]


def _with_homes(
    owner: np.ndarray, hashes: np.ndarray, heads: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Identifier hashes plus each record's home (the housemates a household check reads
    are reached as holders of one value), and the block hashes alone. ``heads``: the
    fixed hashes after the token (home, four words, blocks)."""
    home = heads[:, 0]
    has = np.flatnonzero(home != 0)
    blocks = heads[:, HEAD_BLOCKS - 1 :]
    return np.r_[owner, has], np.r_[hashes, home[has]], blocks


def _roles(words: np.ndarray) -> tuple[WordRoles, WordRoles]:
    """The population's word counts of both swapped-name passes."""
    return WordRoles(words[:, 0], words[:, 1]), WordRoles(words[:, 2], words[:, 3])


def _swapped(words: np.ndarray, roles: tuple[WordRoles, WordRoles]) -> np.ndarray:
    """Whether each record's names are judged typed the wrong way round under ``roles``."""
    out = np.zeros(len(words), dtype=bool)
    for p, r in enumerate(roles):
        f, la = words[:, 2 * p], words[:, 2 * p + 1]
        has = (f != 0) & (la != 0)
        if has.any():
            f_first, f_last = r.counts(f[has])
            l_first, l_last = r.counts(la[has])
            out[has] |= swap_rule(f_first, f_last, l_first, l_last)
    return out


def _flipped_names(
    words: np.ndarray, before: tuple[WordRoles, WordRoles], now: tuple[WordRoles, WordRoles]
) -> np.ndarray:
    """Whether each record's names are judged turned round under ``now`` and not under
    ``before`` or the other way. Only the records holding a word whose counts moved are
    judged again: a change moves the counts of a few words, not of a million records'."""
    out = np.zeros(len(words), dtype=bool)
    maybe = np.zeros(len(words), dtype=bool)
    for p, (b, r) in enumerate(zip(before, now, strict=True)):
        every = np.union1d(b.words, r.words)
        (b_first, b_last), (r_first, r_last) = b.counts(every), r.counts(every)
        moved = every[(b_first != r_first) | (b_last != r_last)]
        if len(moved):
            for col in (2 * p, 2 * p + 1):
                at = np.minimum(np.searchsorted(moved, words[:, col]), len(moved) - 1)
                maybe |= moved[at] == words[:, col]
    idx = np.flatnonzero(maybe)
    if len(idx):
        out[idx] = _swapped(words[idx], before) != _swapped(words[idx], now)
    return out


def _fetcher(fetch: Fetch, index: _Records) -> Callable[[np.ndarray], pd.DataFrame]:
    """``fetch`` by current positions, each record read once."""
    n = len(index.conn)
    fetched: list[pd.DataFrame] = []
    row_of = np.full(n, -1, dtype=np.int64)
    asked = np.zeros(n, dtype=bool)

    def records_at(idx: np.ndarray) -> pd.DataFrame:
        want = idx[~asked[idx]]
        if len(want):
            asked[want] = True
            got = fetch(pd.DataFrame({"connector": index.conn[want], "source_id": index.sid[want]}))
            if len(got):
                p = index.find(got["connector"], got["source_id"])
                got = got[p >= 0].reset_index(drop=True)
                start = len(fetched[0]) if fetched else 0
                row_of[p[p >= 0]] = start + np.arange(len(got))
                fetched[:] = [pd.concat([*fetched, got], ignore_index=True)]
        rows = row_of[idx]
        if not fetched:  # nothing asked yet (a change of deletes only): no rows, its columns
            fetched.append(fetch(pd.DataFrame({"connector": [], "source_id": []}, dtype=object)))
        return fetched[0].iloc[rows[rows >= 0]].reset_index(drop=True)

    return records_at


@dataclass
class _Context:
    """What scoring a frontier's close matches reads."""

    stored: StoredResolution
    rules: list[IdentifierRule]
    matching: MatchingPlan
    known: KnownWords
    roles: tuple[WordRoles, WordRoles]
    index: _Records
    records_at: Callable[[np.ndarray], pd.DataFrame]
    # each record's comparison fields, described once over a closure's rounds
    described: np.ndarray
    field_values: dict[str, np.ndarray]


def resolve_changes(
    current: pd.DataFrame,
    fetch: Fetch,
    stored: StoredResolution,
    rules: list[IdentifierRule],
    decisions: pd.DataFrame | None = None,
    now: pd.Timestamp | None = None,
    matching: MatchingPlan | None = None,
    max_share: float = 0.25,
    prior_pos: np.ndarray | None = None,
) -> ScopedResolution | None:
    """Resolve what changed since ``stored`` (see the module docstring).

    ``current``: connector, source_id, source_hash of every record to resolve now;
    ``fetch(keys)``: the resolution columns of the records ``keys`` names (connector,
    source_id); ``prior_pos``: each current record's row in the stored map (-1: new) when
    the caller knows it (:func:`current_records`), else found here. Returns None when a
    full resolution is due: no stored parameters for an enabled probabilistic stage, or a
    scope larger than ``max_share``.
    """
    enabled = matching is not None and matching.enabled
    if (enabled and stored.match_params is None) or stored.known_words is None:
        return None
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    width = reach_width(matching)
    n = len(current)
    conn = current["connector"].astype(str).to_numpy(dtype=object)
    sid = current["source_id"].astype(str).to_numpy(dtype=object)
    prior = stored.identity_map  # read by position only (no copy of a million rows)
    pos = match_records(conn, sid, prior) if prior_pos is None else np.asarray(prior_pos, np.int64)
    found = pos >= 0
    at = np.maximum(pos, 0)
    p_reach = prior["reach"].to_numpy(dtype=object)
    p_rule = prior["rule"].to_numpy(dtype=object)
    p_gid_all = prior["golden_id"].to_numpy(dtype=object)
    has_reach = pd.notna(p_reach).astype(bool)  # NULL: written before reach existed
    s_hash = current["source_hash"].to_numpy(dtype=object)
    edited = found & (prior["source_hash"].to_numpy(dtype=object)[at] != s_hash)
    dirty = ~found | (p_rule[at] == STAMP_RULE) | ~has_reach[at]
    hit = np.zeros(len(prior), dtype=bool)
    hit[pos[found]] = True
    # a record attached by its stamp takes no part in resolution: not gone while stamped
    gone_rows = np.flatnonzero(~hit & (p_rule != STAMP_RULE))
    if (dirty | edited).sum() > max_share * max(n, 1):
        return None

    index = _Records(conn, sid)
    records_at = _fetcher(fetch, index)
    # the stored reach of everyone: prior row -> current record
    _, p_heads, p_owner, p_keys = unpack_reach(p_reach, width)
    # an edit of a column resolution does not read (points, consents) changes nothing
    # here: only the stored source hash is brought up to date
    e_idx = np.flatnonzero(edited & ~dirty)
    refreshed = np.zeros(0, dtype=np.int64)
    if len(e_idx):
        ec, es, e_in = input_hashes(records_at(e_idx), rules, matching)
        e_pos = index.every(ec, es)
        same = e_in == p_heads[at[e_pos], HEAD_INPUT - 1]
        refreshed = e_pos[same]
        dirty[e_pos[~same]] = True
    if not dirty.any() and len(gone_rows) == 0:
        return _unchanged(stored, prior, _refreshed(refreshed, conn, sid, s_hash, p_reach[at]))
    cur_of_row = np.full(len(prior), -1, dtype=np.int64)
    cur_of_row[pos[found]] = np.flatnonzero(found)

    # names typed the wrong way round are judged on the population's word counts: a
    # change of counts can turn an unchanged record's names round (it then counts as
    # changed). Before: the last resolution's records; now: theirs, the changed ones read
    d_recs = records_at(np.flatnonzero(dirty))
    words_now = np.zeros((n, 4), dtype=np.uint64)
    words_now[found] = p_heads[at[found], 1:5]
    words_now[dirty] = 0
    if len(d_recs):  # none when the change is only deletions
        dc, ds, d_words, _ = name_words(d_recs, rules, matching)
        words_now[index.every(dc, ds)] = d_words
    # the last resolution's population: its resolved records (a stamped one took no part)
    before = _roles(p_heads[has_reach & (p_rule != STAMP_RULE), 1:5])
    roles = _roles(words_now)
    clean = np.flatnonzero(~dirty)
    dirty[clean[_flipped_names(words_now[clean], before, roles)]] = True

    d_idx = np.flatnonzero(dirty)
    d_recs = records_at(d_idx)
    clean_rows = pos[~dirty]
    known = KnownWords(stored.known_words)
    fresh = np.zeros(0, dtype=np.int64)
    f_heads = np.zeros((0, width - 1), dtype=np.uint64)
    f_owner, f_keys = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64)
    if len(d_recs):
        facts = describe_records(d_recs, rules, stored.golden_ids, matching, known, roles)
        fresh = index.every(facts.connector, facts.source_id)
        _, f_heads, f_owner, f_keys = unpack_reach(facts.reach, width)
    heads = np.zeros((n, width - 1), dtype=np.uint64)
    heads[~dirty] = p_heads[clean_rows]
    heads[fresh] = f_heads
    owner_cur = cur_of_row[p_owner]
    keep = owner_cur >= 0
    keep[keep] = ~dirty[owner_cur[keep]]
    k_owner = np.r_[owner_cur[keep], fresh[f_owner]]
    k_hash = np.r_[p_keys[keep], f_keys]
    k_owner, k_hash, blk = _with_homes(k_owner, k_hash, heads)

    # what the changed records were before: their identifier values, home and blocks
    was = np.zeros(len(prior), dtype=bool)
    was[gone_rows] = True
    was[pos[dirty & found]] = True
    _, old_keys, old_blk = _with_homes(p_owner[was[p_owner]], p_keys[was[p_owner]], p_heads[was])
    p_gid = np.where(found, p_gid_all[at], None)
    old_gids = p_gid_all[was]

    # golden ids as integer codes: a golden record's members found by one gather
    gid_code, gid_uniq = pd.factorize(np.r_[p_gid, old_gids], use_na_sentinel=True)
    cur_gid, old_gid = gid_code[:n], gid_code[n:]

    def members_of(codes: np.ndarray) -> np.ndarray:
        mark = np.zeros(len(gid_uniq) + 1, dtype=bool)
        mark[codes[codes >= 0]] = True
        return mark[cur_gid]  # code -1 (no prior id) picks the trailing False

    blocks = [_HashIndex(blk[:, j], np.arange(n)) for j in range(blk.shape[1])]
    scope = dirty.copy()
    scope |= members_of(old_gid)
    key_index = _HashIndex(k_hash, k_owner)
    scope |= _holders(key_index, old_keys, n)
    scope |= _flipped_blocks(blocks, blk, dirty, old_blk, matching)
    # every stored review entry's sides (-1: not current)
    entry_a, entry_b = _conflict_pairs(stored.conflicts, index)
    gone_conn = prior["connector"].astype(str).to_numpy(dtype=object)[gone_rows]
    gone_sid = prior["source_id"].astype(str).to_numpy(dtype=object)[gone_rows]
    gone = pd.DataFrame({"connector": gone_conn, "source_id": gone_sid})
    gone_a, gone_b = _gone_sides(stored.conflicts, gone)
    scope |= _partners_of_gone(gone_a, gone_b, entry_a, entry_b, n)
    both = (entry_a >= 0) & (entry_b >= 0)
    # a steward decision ties its two records: one in the scope brings the other
    d_a, d_b = _decision_pairs(decisions, index)
    tie_a, tie_b = np.r_[entry_a[both], d_a], np.r_[entry_b[both], d_b]

    context = _Context(
        stored, rules, matching, known, roles, index, records_at, np.zeros(n, dtype=bool), {}
    )
    frontier = scope.copy()
    reached = np.zeros(n, dtype=bool)
    while frontier.any():
        reached |= frontier
        f_idx = np.flatnonzero(frontier)
        new = np.zeros(n, dtype=bool)
        new |= members_of(cur_gid[f_idx])
        new |= _holders(key_index, k_hash[frontier[k_owner]], n)
        if len(tie_a):
            new[tie_b[frontier[tie_a]]] = True
            new[tie_a[frontier[tie_b]]] = True
        if enabled:
            new |= _close_matches(f_idx, blk, blocks, reached, context)
        frontier = new & ~reached
        if reached.sum() + frontier.sum() > max_share * max(n, 1):
            return None
    scope = reached

    s_idx = np.flatnonzero(scope)
    s_recs = records_at(s_idx)
    s_prior = prior.iloc[pos[s_idx][found[s_idx]]][
        ["connector", "source_id", "golden_id", "updated_at"]
    ]
    result = resolve_identities(
        s_recs,
        rules,
        prior_map=s_prior,
        golden_ids=stored.golden_ids,
        decisions=decisions,
        now=now,
        matching=matching,
        match_params=stored.match_params,
        known_words=known,
        with_reach=True,
        oversized_blocks=_oversized(blocks, matching),
        word_roles=roles,
    )
    kept = prior.iloc[pos[~scope & found]][MAP_COLUMNS]
    identity_map = pd.concat([kept, result.identity_map[MAP_COLUMNS]], ignore_index=True)
    conflicts = stored.conflicts[list(CONFLICT_COLUMNS)]
    if len(conflicts):  # entries naming a record resolved again, or one that is gone
        out = np.zeros(len(conflicts), dtype=bool)
        for side in (entry_a, entry_b):
            out |= (side >= 0) & scope[np.maximum(side, 0)]
        conflicts = conflicts[~(out | gone_a | gone_b)]
    conflicts = pd.concat(
        [conflicts, result.conflicts[list(CONFLICT_COLUMNS)]], ignore_index=True
    ).drop_duplicates("conflict_id")
    s_map = result.identity_map
    s_pos = index.every(s_map["connector"], s_map["source_id"])
    scope_rows = pd.DataFrame(
        {
            "connector": s_map["connector"].to_numpy(dtype=object),
            "source_id": s_map["source_id"].to_numpy(dtype=object),
            "source_hash": s_hash[s_pos],
            "reach": result.reach,
        }
    )
    fresh_rows = refreshed[~scope[refreshed]]
    if len(fresh_rows):
        scope_rows = pd.concat(
            [scope_rows, _refreshed(fresh_rows, conn, sid, s_hash, p_reach[at])],
            ignore_index=True,
        )
    touched = pd.unique(
        np.r_[
            p_gid[s_idx][pd.notna(p_gid[s_idx])],
            old_gids[pd.notna(old_gids)],
            s_map["golden_id"].to_numpy(dtype=object),
        ]
    )
    stats = {
        **result.stats,
        "records": n,
        "golden_records": _golden_count(
            cur_gid[~scope & found], pd.Index(gid_uniq, dtype=object), s_map["golden_id"]
        ),
        "incremental": 1,
        "changed_records": int(dirty.sum()) + len(gone_rows),
        "scope_records": int(len(s_idx)),
    }
    merged = IdentityResult(
        identity_map=identity_map,
        golden_ids=result.golden_ids,
        links=result.links,
        conflicts=conflicts.reset_index(drop=True),
        stats=stats,
        match_params=stored.match_params,
    )
    # the golden id each gone record had: its golden record lost a member
    gone = gone.assign(golden_id=p_gid_all[gone_rows])
    return ScopedResolution(
        merged, scope_rows, gone, np.asarray(touched, dtype=object), kept=len(kept)
    )


def current_records(
    prior: pd.DataFrame, changed: pd.DataFrame, fresh: pd.DataFrame, stamped: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray]:
    """The current records as the stored map's rows brought up to date by what changed
    since it was resolved — no read of every record's hash — and each one's row in
    ``prior`` (-1: new).

    ``prior``: the stored map (connector, source_id, source_hash); ``changed``: connector,
    source_id of every record written or deleted since (the resolution queue); ``fresh``:
    connector, source_id, row_hash, custsync_id of those still held; ``stamped``:
    connector, source_id, custsync_id of every held record carrying a stamp. Returns
    connector, source_id, row_hash, custsync_id: the map's rows in its order (those
    changed with their new hash, those gone left out), then the new records.
    """
    index = _Records(prior["connector"], prior["source_id"])
    n = len(prior)
    row_hash = prior["source_hash"].to_numpy(dtype=object, na_value=None).copy()
    keep = np.ones(n, dtype=bool)
    c_pos = index.find(changed["connector"], changed["source_id"])
    keep[c_pos[c_pos >= 0]] = False  # written or deleted: what it is now is in ``fresh``
    f_conn = fresh["connector"].astype(str).to_numpy(dtype=object)
    f_sid = fresh["source_id"].astype(str).to_numpy(dtype=object)
    f_hash = fresh["row_hash"].to_numpy(dtype=object, na_value=None)
    f_stamp = fresh["custsync_id"].to_numpy(dtype=object, na_value=None)
    f_pos = index.find(f_conn, f_sid)
    held = f_pos >= 0
    keep[f_pos[held]] = True
    row_hash[f_pos[held]] = f_hash[held]
    stamp = np.full(n, None, dtype=object)
    s_pos = index.find(stamped["connector"], stamped["source_id"])
    stamp[s_pos[s_pos >= 0]] = stamped["custsync_id"].to_numpy(dtype=object)[s_pos >= 0]
    stamp[f_pos[held]] = f_stamp[held]
    new = ~held
    current = pd.DataFrame(
        {
            "connector": np.r_[index.conn[keep], f_conn[new]],
            "source_id": np.r_[index.sid[keep], f_sid[new]],
            "row_hash": np.r_[row_hash[keep], f_hash[new]],
            "custsync_id": np.r_[stamp[keep], f_stamp[new]],
        }
    )
    return current, np.r_[np.flatnonzero(keep), np.full(int(new.sum()), -1)].astype(np.int64)


def _golden_count(kept_codes: np.ndarray, uniq: pd.Index, resolved: pd.Series) -> int:
    """Distinct golden ids of the map: the kept rows' (codes into ``uniq``) and the resolved
    rows' (one hash lookup each, not a count over a million strings)."""
    mark = np.zeros(len(uniq), dtype=bool)
    mark[kept_codes[kept_codes >= 0]] = True
    fresh = pd.unique(resolved.dropna().to_numpy(dtype=object))
    code = uniq.get_indexer(fresh) if len(fresh) else np.zeros(0, dtype=np.int64)
    known = code >= 0
    known[known] = mark[code[known]]
    return int(mark.sum() + (~known).sum())


def _refreshed(
    idx: np.ndarray, conn: np.ndarray, sid: np.ndarray, s_hash: np.ndarray, reach: np.ndarray
) -> pd.DataFrame:
    """Rows whose stored source hash is brought up to date, their reach as it was."""
    return pd.DataFrame(
        {"connector": conn[idx], "source_id": sid[idx], "source_hash": s_hash[idx],
         "reach": reach[idx]}
    )  # fmt: skip


def _unchanged(
    stored: StoredResolution, prior: pd.DataFrame, refreshed: pd.DataFrame
) -> ScopedResolution:
    empty = pd.DataFrame(columns=["connector", "source_id", "golden_id"])  # none gone
    kept = prior.loc[prior["rule"] != STAMP_RULE, MAP_COLUMNS]  # stamped: re-attached
    result = IdentityResult(
        identity_map=kept,
        golden_ids=stored.golden_ids,
        links=pd.DataFrame(columns=LINK_COLUMNS),
        conflicts=stored.conflicts[list(CONFLICT_COLUMNS)],
        stats={"records": len(prior), "incremental": 1, "changed_records": 0, "scope_records": 0},
        match_params=stored.match_params,
    )
    return ScopedResolution(result, refreshed, empty, np.zeros(0, dtype=object), len(kept))


class _Records(RecordIndex):
    """The current records, hashed once (``RecordIndex``)."""

    def find(self, c: object, s: object, hashes: np.ndarray | None = None) -> np.ndarray:
        c = np.asarray(pd.Series(c, dtype=object).astype(str), dtype=object)
        s = np.asarray(pd.Series(s, dtype=object).astype(str), dtype=object)
        return super().find(c, s, hashes)

    def every(self, c: object, s: object) -> np.ndarray:
        """Position of each (c, s) pair, every one a current record."""
        pos = self.find(c, s)
        if (pos < 0).any():
            raise ValueError("a described record is not among the current records")
        return pos


class _HashIndex:
    """(hash, record) pairs sorted once by hash: the records holding some hashes by a
    binary search per hash, not a pass over every pair."""

    def __init__(self, hashes: np.ndarray, owner: np.ndarray) -> None:
        keep = hashes != 0
        # no stable sort: who holds a hash is read as a set (2-3x quicker on a million)
        order = np.argsort(hashes[keep])
        self.sorted = hashes[keep][order]
        self.owner = owner[keep][order]
        self._size: pd.Series | None = None

    @property
    def size(self) -> pd.Series:
        """Records per hash."""
        if self._size is None:
            h = self.sorted
            starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]]) if len(h) else np.zeros(0, int)
            self._size = pd.Series(np.diff(np.r_[starts, len(h)]), index=h[starts])
        return self._size

    def owners(self, wanted: np.ndarray) -> np.ndarray:
        """The records holding any of ``wanted`` (with repeats)."""
        w = np.unique(wanted[wanted != 0])
        if len(w) == 0 or len(self.sorted) == 0:
            return np.zeros(0, dtype=np.int64)
        lo = np.searchsorted(self.sorted, w, "left")
        hi = np.searchsorted(self.sorted, w, "right")
        counts = hi - lo
        starts = np.repeat(lo, counts)
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        return self.owner[starts + within]


def _holders(index: _HashIndex, wanted: np.ndarray, n: int) -> np.ndarray:
    """Records holding any of the ``wanted`` identifier hashes."""
    out = np.zeros(n, dtype=bool)
    out[index.owners(wanted)] = True
    return out


def _decision_pairs(
    decisions: pd.DataFrame | None, index: _Records
) -> tuple[np.ndarray, np.ndarray]:
    """Current positions of the two records of each steward decision (both present)."""
    if decisions is None or decisions.empty:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    a = index.find(decisions["connector_a"], decisions["source_id_a"])
    b = index.find(decisions["connector_b"], decisions["source_id_b"])
    ok = (a >= 0) & (b >= 0)
    return a[ok], b[ok]


def _oversized(blocks: list[_HashIndex], matching: MatchingPlan | None) -> np.ndarray | None:
    """The block hashes of every list larger than ``max_block_size`` in the population."""
    if matching is None or not matching.enabled:
        return None
    cap = matching.max_block_size
    out = [np.asarray(b.size.index[b.size.to_numpy() > cap], dtype=np.uint64) for b in blocks]
    return np.unique(np.concatenate(out)) if out else np.zeros(0, dtype=np.uint64)


def _flipped_blocks(
    blocks: list[_HashIndex],
    blk: np.ndarray,
    dirty: np.ndarray,
    old_blk: np.ndarray,
    matching: MatchingPlan | None,
) -> np.ndarray:
    """Every record of a block the change moves across ``max_block_size``: its pairs
    among unchanged records appear or vanish."""
    out = np.zeros(len(blk), dtype=bool)
    if matching is None or not matching.enabled or blk.shape[1] == 0:
        return out
    cap = matching.max_block_size
    for j in range(blk.shape[1]):
        col = blk[:, j]
        now_h = col[dirty & (col != 0)]
        old_h = old_blk[:, j][old_blk[:, j] != 0]
        touched = np.unique(np.r_[now_h, old_h])
        if len(touched) == 0:
            continue
        size_now = blocks[j].size.reindex(touched, fill_value=0).to_numpy()
        d_new = pd.Series(now_h).value_counts().reindex(touched, fill_value=0).to_numpy()
        d_old = pd.Series(old_h).value_counts().reindex(touched, fill_value=0).to_numpy()
        size_old = size_now - d_new + d_old
        flipped = touched[(size_now <= cap) != (size_old <= cap)]
        out[blocks[j].owners(flipped)] = True
    return out


def _conflict_pairs(conflicts: pd.DataFrame, index: _Records) -> tuple[np.ndarray, np.ndarray]:
    """Current positions of both sides of every stored review entry (-1: not current)."""
    if conflicts is None or conflicts.empty:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    a = index.find(conflicts["connector_a"], conflicts["source_id_a"])
    b = index.find(conflicts["connector_b"], conflicts["source_id_b"])
    return a, b


def _gone_sides(conflicts: pd.DataFrame, gone: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per stored review entry, whether its side a / side b is a record that is gone."""
    if conflicts is None or conflicts.empty or len(gone) == 0:
        none = np.zeros(0 if conflicts is None else len(conflicts), dtype=bool)
        return none, none
    a, b = (
        match_records(
            conflicts[f"connector_{me}"].astype(str).to_numpy(dtype=object),
            conflicts[f"source_id_{me}"].astype(str).to_numpy(dtype=object),
            gone,
        )
        >= 0
        for me in ("a", "b")
    )
    return a, b


def _partners_of_gone(
    gone_a: np.ndarray, gone_b: np.ndarray, a: np.ndarray, b: np.ndarray, n: int
) -> np.ndarray:
    """Current records a stored review entry pairs with a record that is gone."""
    out = np.zeros(n, dtype=bool)
    for mine, other in ((gone_a, b), (gone_b, a)):
        hit = mine & (other >= 0)
        out[other[hit]] = True
    return out


def _close_matches(
    f_idx: np.ndarray,
    blk: np.ndarray,
    blocks: list[_HashIndex],
    reached: np.ndarray,
    ctx: _Context,
) -> np.ndarray:
    """Records outside the scope sharing a block with a frontier record (a block a full
    resolution pairs in) whose match probability with it can reach the review threshold."""
    n = len(blk)
    out = np.zeros(n, dtype=bool)
    cap = ctx.matching.max_block_size
    xs, ys = [], []
    for j in range(blk.shape[1]):
        col = blk[:, j]
        h = col[f_idx]
        ok = (h != 0) & (blocks[j].size.reindex(h, fill_value=0).to_numpy() <= cap)
        if not ok.any():
            continue
        front = pd.DataFrame({"x": f_idx[ok], "h": h[ok]})
        members = blocks[j].owners(h[ok])
        members = members[~reached[members]]
        if len(members) == 0:
            continue
        mates = pd.DataFrame({"y": members, "h": col[members]})
        pairs = front.merge(mates, on="h")
        xs.append(pairs["x"].to_numpy())
        ys.append(pairs["y"].to_numpy())
    if not xs:
        return out
    x, y = np.concatenate(xs), np.concatenate(ys)
    keep = x != y
    if not keep.any():
        return out
    pair = np.unique(np.c_[x[keep], y[keep]], axis=0)
    x, y = pair[:, 0], pair[:, 1]
    involved = np.unique(np.r_[x, y])
    at = np.full(n, -1, dtype=np.int64)
    at[involved] = np.arange(len(involved))
    p = upper_probability(_fields_of(involved, ctx), at[x], at[y], ctx.stored.match_params)
    out[y[p >= ctx.matching.review_threshold]] = True
    return out


def _fields_of(idx: np.ndarray, ctx: _Context) -> dict:
    """The comparison fields of the records at ``idx``, coded in that order; a record is
    described once over a closure's rounds (its fields depend on it and on the stored
    population's words, not on the records described with it)."""
    need = idx[~ctx.described[idx]]
    if len(need):
        facts = describe_records(
            ctx.records_at(need), ctx.rules, ctx.stored.golden_ids, ctx.matching, ctx.known,
            ctx.roles, fields_only=True,
        )  # fmt: skip
        local = ctx.index.every(facts.connector, facts.source_id)
        for name, (code, uniq) in facts.fields.items():
            held = ctx.field_values.setdefault(
                name, np.full(len(ctx.described), None, dtype=object)
            )
            held[local] = np.r_[np.asarray(uniq, dtype=object), np.array([None], object)][code]
        ctx.described[local] = True
    out = {}
    for name, held in ctx.field_values.items():
        code, uniq = pd.factorize(held[idx], use_na_sentinel=True)
        out[name] = (code.astype(np.int64), np.asarray(uniq, dtype=object))
    return out
