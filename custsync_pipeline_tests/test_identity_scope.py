"""Incremental identity resolution decides what a full one decides.

On both generators (the sandbox's and the tests' independent one), a full resolution
is stored; then random change sets — edited e-mails, phones, names and towns, e-mails
copied onto other records (new shared values), records deleted and added — are
resolved twice: by ``resolve_changes`` (the scope of the change only) and by a full
resolution with the same stored match parameters. The map, the golden id history, the
review queue and the evidence must be equal, and the scope must be a small part of the
records.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from custsync_pipeline.config import load_sync_config
from custsync_pipeline.domain.identity import (
    CONFLICT_COLUMNS,
    LINK_COLUMNS,
    KnownWords,
    reach_width,
    resolve_identities,
    unpack_reach,
)
from custsync_pipeline.domain.identity_scope import StoredResolution, resolve_changes
from custsync_pipeline_tests.identity_datagen import generate

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
T0 = pd.Timestamp("2026-11-01", tz="UTC")
T1 = pd.Timestamp("2026-11-02", tz="UTC")


def _plan():
    config = load_sync_config()
    return list(config.identity.identifiers), config.plan().matching


def _independent(seed: int) -> pd.DataFrame:
    records, _ = generate(seed=seed, people=1500)
    return records.reset_index(drop=True)


def _sandbox(seed: int) -> pd.DataFrame:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from identity_quality import normalize_and_validate, to_canonical
    finally:
        sys.path.remove(str(BENCHMARKS))
    from custsync_pipeline.sandbox.generator import generate as sandbox_generate

    data = sandbox_generate(seed=seed, people=1500)
    frames = []
    for system, raw in data.frames.items():
        canon, _ = to_canonical(system, raw)
        frames.append(normalize_and_validate(canon, system.partition(".")[0]))
    return pd.concat(frames, ignore_index=True)


def _source_hash(records: pd.DataFrame) -> np.ndarray:
    return pd.util.hash_pandas_object(records.astype(object), index=False).to_numpy().astype(str)


# the edits that copy a column's value from another record
COPIED = {"email_copy": "email", "phone": "phone", "city": "city"}


def _changed(records: pd.DataFrame, rng: np.random.Generator, share: float) -> pd.DataFrame:
    """Edits, deletions and additions of about ``share`` of the records each."""
    out = records.copy()
    n = len(out)
    k = max(int(n * share), 3)
    cols = set(out.columns)
    for what in ("email_copy", "email_none", "phone", "last_name", "city", "first_initial"):
        rows = rng.choice(n, size=k, replace=False)
        copied = COPIED.get(what)
        if copied in cols:  # another record's value: a new shared value, or a move
            donors = rng.choice(n, size=k)
            out.loc[rows, copied] = out[copied].to_numpy()[donors]
        elif what == "email_none" and "email" in cols:
            out.loc[rows, "email"] = None
        elif what == "last_name" and "last_name" in cols:
            last = out["last_name"].astype(object).to_numpy()[rows]
            out.loc[rows, "last_name"] = [
                (str(v)[:-1] + "x") if isinstance(v, str) and v else v for v in last
            ]
        elif what == "first_initial" and "first_name" in cols:
            first = out["first_name"].astype(object).to_numpy()[rows]
            out.loc[rows, "first_name"] = [
                (str(v)[:1] + ".") if isinstance(v, str) and v else v for v in first
            ]
    added = out.iloc[rng.choice(n, size=k)].copy()
    added["source_id"] = [f"new-{i}" for i in range(k)]
    gone = rng.choice(n, size=k, replace=False)
    out = out.drop(index=gone)
    return pd.concat([out, added], ignore_index=True)


def _stored(
    records: pd.DataFrame, rules, matching, decisions: pd.DataFrame | None = None
) -> tuple[StoredResolution, object]:
    full = resolve_identities(
        records, rules, decisions=decisions, now=T0, matching=matching, with_reach=True
    )
    hashes = pd.Series(_source_hash(records), index=pd.MultiIndex.from_frame(
        records[["connector", "source_id"]].astype(str)))  # fmt: skip
    m = full.identity_map.copy()
    m["source_hash"] = hashes.reindex(
        pd.MultiIndex.from_frame(m[["connector", "source_id"]])
    ).to_numpy()
    m["reach"] = full.reach
    stored = StoredResolution(
        m, full.golden_ids, full.conflicts, full.match_params, full.known_words
    )
    return stored, full


def _current(records: pd.DataFrame) -> pd.DataFrame:
    cur = records[["connector", "source_id"]].astype(str).copy()
    cur["source_hash"] = _source_hash(records)
    return cur


def _fetcher(records: pd.DataFrame):
    keyed = records.assign(
        connector=records["connector"].astype(str), source_id=records["source_id"].astype(str)
    )

    def fetch(keys: pd.DataFrame) -> pd.DataFrame:
        return keyed.merge(keys, on=["connector", "source_id"], how="inner")

    return fetch


def _rows(frame: pd.DataFrame, cols: list[str]) -> list[tuple]:
    return sorted(
        tuple("" if pd.isna(v) else str(v) for v in row)
        for row in frame[cols].itertuples(index=False)
    )


def _decisions(records: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """A few must-link and cannot-link decisions between random records."""
    pick = rng.choice(len(records), size=(6, 2), replace=False)
    rows = []
    for i, (a, b) in enumerate(pick):
        ra, rb = records.iloc[a], records.iloc[b]
        rows.append(
            {
                "decision": "must_link" if i % 2 else "cannot_link",
                "connector_a": str(ra["connector"]),
                "source_id_a": str(ra["source_id"]),
                "connector_b": str(rb["connector"]),
                "source_id_b": str(rb["source_id"]),
            }
        )
    return pd.DataFrame(rows)


def _deleted_only(records: pd.DataFrame, rng: np.random.Generator, share: float) -> pd.DataFrame:
    gone = rng.choice(len(records), size=max(int(len(records) * share), 1), replace=False)
    return records.drop(index=records.index[gone]).reset_index(drop=True)


@pytest.mark.parametrize(
    ("source", "seed", "share", "change"),
    [
        ("independent", 3, 0.01, "mixed"),
        ("independent", 5, 0.03, "mixed"),
        ("sandbox", 4, 0.01, "mixed"),
        ("independent", 6, 0.01, "deletes"),
        ("independent", 7, 0.01, "decisions"),
    ],
)
def test_incremental_equals_full_resolution(
    source: str, seed: int, share: float, change: str
) -> None:
    rules, matching = _plan()
    before = _independent(seed) if source == "independent" else _sandbox(seed)
    rng = np.random.default_rng(seed)
    decisions = _decisions(before, rng) if change == "decisions" else None
    stored, full0 = _stored(before, rules, matching, decisions)
    assert full0.match_params is not None
    if change == "deletes":  # nothing edited or added: only records gone
        after = _deleted_only(before, rng, share)
    else:
        after = _changed(before, rng, share)

    inc = resolve_changes(
        _current(after), _fetcher(after), stored, rules, decisions=decisions, now=T1,
        matching=matching, max_share=1.0,
    )  # fmt: skip
    full = resolve_identities(
        after,
        rules,
        prior_map=full0.identity_map,
        golden_ids=full0.golden_ids,
        decisions=decisions,
        now=T1,
        matching=matching,
        match_params=full0.match_params,
        known_words=KnownWords(full0.known_words),
        with_reach=True,
    )
    assert inc is not None
    got = inc.result
    assert got.stats["scope_records"] > 0
    if share <= 0.01:  # about 8% of the records changed: the scope is a part of them all
        assert got.stats["scope_records"] < 0.6 * len(after), got.stats
    map_cols = ["connector", "source_id", "golden_id", "rule", "updated_at"]
    assert _rows(got.identity_map, map_cols) == _rows(full.identity_map, map_cols)
    assert got.stats["golden_records"] == full.identity_map["golden_id"].nunique()
    gid_cols = ["golden_id", "created_at", "merged_into", "split_from"]
    assert _rows(got.golden_ids, gid_cols) == _rows(full.golden_ids, gid_cols)
    assert _rows(got.conflicts, list(CONFLICT_COLUMNS)) == _rows(
        full.conflicts, list(CONFLICT_COLUMNS)
    )
    # the evidence: the stored links of untouched golden records plus the scope's
    kept = full0.links[~full0.links["golden_id"].isin(set(inc.touched))]
    merged_links = pd.concat([kept, got.links[LINK_COLUMNS]], ignore_index=True)
    assert _rows(merged_links, LINK_COLUMNS) == _rows(full.links, LINK_COLUMNS)
    # the scope's reach is what a full resolution computes for those records
    by_key = dict(
        zip(
            zip(
                full.identity_map["connector"],
                full.identity_map["source_id"],
                strict=True,
            ),
            full.reach,
            strict=True,
        )
    )
    width = reach_width(matching)
    for c, s, r in zip(
        inc.scope["connector"], inc.scope["source_id"], inc.scope["reach"], strict=True
    ):
        tok_a, blk_a, _, keys_a = unpack_reach(np.array([r], dtype=object), width)
        tok_b, blk_b, _, keys_b = unpack_reach(np.array([by_key[(c, s)]], dtype=object), width)
        assert tok_a[0] == tok_b[0] and (blk_a == blk_b).all()
        assert sorted(keys_a.tolist()) == sorted(keys_b.tolist())


def test_nothing_changed_resolves_nothing() -> None:
    rules, matching = _plan()
    records = _independent(2)
    stored, full0 = _stored(records, rules, matching)
    inc = resolve_changes(
        _current(records), _fetcher(records), stored, rules, now=T1, matching=matching
    )
    assert inc is not None and inc.result.stats["scope_records"] == 0
    assert len(inc.result.identity_map) == len(full0.identity_map)


def test_a_large_change_asks_for_a_full_resolution() -> None:
    rules, matching = _plan()
    records = _independent(2)
    stored, _ = _stored(records, rules, matching)
    after = records.copy()
    after["city"] = after["city"].astype(object).where(after.index % 2 == 0, "Elsewhere")
    assert (
        resolve_changes(
            _current(after), _fetcher(after), stored, rules, now=T1, matching=matching,
            max_share=0.25,
        )
        is None
    )  # fmt: skip
    # no stored parameters for an enabled probabilistic stage: a full resolution is due
    bare = StoredResolution(
        stored.identity_map, stored.golden_ids, stored.conflicts, None, stored.known_words
    )
    assert (
        resolve_changes(_current(records), _fetcher(records), bare, rules, matching=matching)
        is None
    )


def test_a_change_of_one_lone_record_deleted_resolves_nothing_else() -> None:
    """A record alone in its golden record, nothing else touching it, is deleted (a target
    record custsync itself deleted, read back from the target's delete feed): the scope
    holds no record to resolve, the map loses that record, and nothing else moves."""
    rules, matching = _plan()
    records = _independent(2)
    stored, full0 = _stored(records, rules, matching)
    sizes = full0.identity_map["golden_id"].value_counts()
    lone = full0.identity_map[full0.identity_map["golden_id"].map(sizes) == 1]
    named = set(full0.conflicts["source_id_a"]) | set(full0.conflicts["source_id_b"])
    lone = lone[~lone["source_id"].isin(named)].iloc[0]
    after = records[
        ~(
            (records["connector"].astype(str) == lone["connector"])
            & (records["source_id"].astype(str) == lone["source_id"])
        )
    ].reset_index(drop=True)
    inc = resolve_changes(
        _current(after), _fetcher(after), stored, rules, now=T1, matching=matching,
        max_share=1.0,
    )  # fmt: skip
    assert inc is not None
    got = inc.result.identity_map
    assert len(got) == len(full0.identity_map) - 1
    assert not (
        (got["connector"] == lone["connector"]) & (got["source_id"] == lone["source_id"])
    ).any()
    cols = ["connector", "source_id", "golden_id"]
    rest = full0.identity_map[full0.identity_map["source_id"] != lone["source_id"]]
    assert _rows(got, cols) == _rows(rest, cols)


def test_names_turned_round_are_judged_again_only_where_word_counts_moved() -> None:
    """``_flipped_names`` judges again only the records holding a word whose counts moved:
    it must find every record whose judgment a change turns, as judging all would."""
    from custsync_pipeline.domain.identity_scope import _flipped_names, _roles, _swapped

    rng = np.random.default_rng(5)
    first = rng.integers(1, 2**63, size=6, dtype=np.int64).astype(np.uint64)
    last = rng.integers(1, 2**63, size=6, dtype=np.int64).astype(np.uint64)

    def people(n: int) -> np.ndarray:
        """First and last names in both passes, some typed the wrong way round; a few
        records per word (counts near the rule's thresholds: 2 and 3x)."""
        f, la = first[rng.integers(0, 6, (n, 2))], last[rng.integers(0, 6, (n, 2))]
        out = np.c_[f[:, 0], la[:, 0], f[:, 1], la[:, 1]]
        turned = rng.random(n) < 0.2
        out[turned] = out[turned][:, [1, 0, 3, 2]]
        out[rng.random((n, 4)) < 0.05] = 0  # missing names
        return out

    turning = 0
    for _ in range(60):
        before = people(40)
        now = before.copy()
        edit = rng.random(40) < 0.15
        now[edit] = people(int(edit.sum()))
        old_roles, new_roles = _roles(before), _roles(now)
        want = _swapped(now, old_roles) != _swapped(now, new_roles)
        assert (_flipped_names(now, old_roles, new_roles) == want).all()
        turning += int(want[~edit].any())
    assert turning >= 10, "changes must turn unchanged records' judgments for this to mean much"
    # a population without names on either side (the last named records deleted, or the
    # first added): nothing to count, nothing judged differently
    named, nameless = people(40), np.zeros((40, 4), dtype=np.uint64)
    for a, b in ((nameless, named), (named, nameless), (nameless, nameless)):
        want = _swapped(b, _roles(a)) != _swapped(b, _roles(b))
        assert (_flipped_names(b, _roles(a), _roles(b)) == want).all()


def test_the_last_named_records_deleted_resolve_as_a_full_resolution_would() -> None:
    """A change that leaves the population without a single name (found in review: the
    word counts of an empty population failed the incremental resolution)."""
    rules, matching = _plan()
    names = ["first_name", "last_name", "full_name", "first_name_raw", "last_name_raw"]
    before = _independent(2)
    before.loc[60:, [c for c in names if c in before.columns]] = None
    stored, full0 = _stored(before, rules, matching)
    after = before.drop(index=range(60)).reset_index(drop=True)
    inc = resolve_changes(
        _current(after), _fetcher(after), stored, rules, now=T1, matching=matching,
        max_share=0.25,
    )  # fmt: skip
    full = resolve_identities(
        after, rules, prior_map=full0.identity_map, golden_ids=full0.golden_ids, now=T1,
        matching=matching, match_params=full0.match_params,
        known_words=KnownWords(full0.known_words), with_reach=True,
    )  # fmt: skip
    assert inc is not None
    cols = ["connector", "source_id", "golden_id", "rule", "updated_at"]
    assert _rows(inc.result.identity_map, cols) == _rows(full.identity_map, cols)


@pytest.mark.parametrize("short", [False, True])
def test_reach_unpacks_to_what_was_packed(short: bool) -> None:
    """``unpack_reach`` gives back each record's heads and keys (as a loop over the bytes
    reads them); missing entries and, with ``short``, a cut one are nothing known."""
    from custsync_pipeline.domain.identity import pack_reach

    rng = np.random.default_rng(4)
    n, width = 300, 6
    heads = rng.integers(1, 2**63, size=(n, width), dtype=np.int64).astype(np.uint64)
    key_rec = np.sort(rng.integers(0, n, size=700))
    key_hash = rng.integers(1, 2**63, size=700, dtype=np.int64).astype(np.uint64)
    packed = pack_reach(heads, key_rec, key_hash, n)
    packed[::7] = None  # stamped records: no reach
    if short:
        packed[3] = packed[5][: 8 * (width - 2)]
    tok, rest, owner, keys = unpack_reach(packed, width)
    want_head = np.zeros((n, width), dtype=np.uint64)
    want_owner, want_keys = [], []
    for i, entry in enumerate(packed):
        values = np.frombuffer(entry, dtype=np.uint64) if entry is not None else []
        if len(values) >= width:
            want_head[i] = values[:width]
            want_owner += [i] * (len(values) - width)
            want_keys += list(values[width:])
    assert (tok == want_head[:, 0]).all() and (rest == want_head[:, 1:]).all()
    assert owner.tolist() == want_owner and keys.tolist() == want_keys
