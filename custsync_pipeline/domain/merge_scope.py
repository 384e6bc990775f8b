"""Which golden records a merge must redo, and which it may keep as stored.

A golden record is a function of its members' source records and entries, the stored
record (versions, consents, current data), what custsync wrote to its members (echo
safety) and the plan. So after a first merge of everything, a merge redoes only the
golden ids

* whose members changed (one joined, left, or the id is new or gone): told by the
  identity step, which queues them as it writes the map, or, where its queue is no full
  account (a map written before it, or by a writer that does not queue), by a digest of
  each golden id's (connector, source id) members, stored at its last merge;
* of a record written since the last merge (the merge queue: a source record or its
  entries, deleted ones included);
* touched by a publish since the last merge (the outbox row's golden id and the golden
  id of the target record it wrote).

Anything the queue cannot say record by record (a connector queued whole) means a
merge of everything.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.core.util.hashing import combine_hash_arrays, hash_array

from custsync_pipeline.domain.golden import key_positions

# more golden ids to redo than this share of all: one merge of everything reads faster
# than key lookups for each
WHOLE_SHARE = 0.3


def _text(values: pd.Series) -> np.ndarray:
    """A column as an object array of ``str`` (one pass when it is text already)."""
    if values.dtype == object or isinstance(values.dtype, pd.StringDtype):
        out = values.to_numpy(dtype=object, na_value=None)
        if pd.api.types.infer_dtype(out, skipna=False) == "string":
            return out
    return values.astype(str).to_numpy(dtype=object)


def member_digests(identity_map: pd.DataFrame) -> pd.Series:
    """golden_id -> a digest of its set of (connector, source_id) members (order-free)."""
    if identity_map.empty:
        return pd.Series([], dtype=object, index=pd.Index([], dtype=object, name="golden_id"))
    hashes = combine_hash_arrays(
        iter(
            hash_array(_text(identity_map[c]), categorize=c == "connector")
            for c in ("connector", "source_id")
        ),
        2,
    )
    # ids in order of appearance: a sort of 400k id strings buys nothing here
    codes, ids = pd.factorize(_text(identity_map["golden_id"]))
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    # a sum of 64-bit member hashes (wrapping): the same members in any order
    sums = np.add.reduceat(hashes[order], starts)
    count = np.diff(np.r_[starts, len(order)])
    digest = np.char.add(np.char.add(sums.astype(str), ":"), count.astype(str))
    return pd.Series(digest.astype(object), index=pd.Index(ids, dtype=object, name="golden_id"))


def golden_ids_of(identity_map: pd.DataFrame, keys: pd.DataFrame) -> set[str]:
    """The golden ids of the records ``keys`` (connector, source_id) names (unmapped: none)."""
    if keys.empty or identity_map.empty:
        return set()
    named = key_positions(identity_map, keys, ("connector", "source_id")) >= 0
    return set(identity_map.loc[named, "golden_id"].astype(str))


def moved_members(digests: pd.Series, stored_digests: pd.Series) -> set[str]:
    """The golden ids whose members differ from their last merge's (new and gone ids
    too): ``digests`` (:func:`member_digests`) against ``stored_digests``."""
    # compared by hash lookups both ways (a union of the id indexes sorts 400k strings)
    before = stored_digests.reindex(digests.index)
    moved = set(digests.index[(digests.to_numpy() != before.to_numpy())].astype(str))
    gone = ~stored_digests.index.isin(digests.index)
    return moved | set(stored_digests.index[gone].astype(str))


def golden_scope(
    identity_map: pd.DataFrame,
    moved: set[str],
    n_golden: int,
    queued: pd.DataFrame,
    written: pd.DataFrame,
) -> set[str] | None:
    """The golden ids a merge must redo, or None when it must merge everything.

    ``moved``: the golden ids whose members changed since the last merge
    (:func:`moved_members`, or the identity step's account of them); ``n_golden``: the
    golden records there are; ``queued``: the merge queue (connector, source_id; a
    missing source id queues the connector whole); ``written``: outbox rows changed since
    the last merge (golden_id, target, target_id)."""
    if queued["source_id"].isna().any():
        return None
    scope = set(moved) | golden_ids_of(identity_map, queued)
    if len(written):
        scope |= set(written["golden_id"].dropna().astype(str))
        targets = written.dropna(subset=["target_id"])
        scope |= golden_ids_of(
            identity_map,
            pd.DataFrame({"connector": targets["target"], "source_id": targets["target_id"]}),
        )
    if len(scope) > WHOLE_SHARE * max(n_golden, 1):
        return None
    return scope
