"""Survivorship: merge the members of each identity cluster into one golden record.

Seed 001's flow: a source step then ordered enrichment steps, each naming the
aspects it contributes.

* **Latest connector** (single-valued fields, ``aspects.ASPECT_FIELDS``): the
  last step in the flow that has a value wins; within one connector the most
  recently updated record wins (a tie: the smallest source id, whatever rows a merge
  loaded); a placeholder an identity rule blocks wins only
  when no member has a real value.
* **Multiple connectors** (the nine multi-valued aspects): the union of the
  entries of every step that contributes the aspect, de-duplicated by natural
  key; an entry's values come from the latest step that holds it, and it lists
  every connector that holds it and when each last saw it. An entry every
  source has dropped leaves.
* **Ownership with time** (seed 004): an owned field is set by its owner only
  (other connectors' values are ignored and counted); a consent carries its
  timestamp, the owner's newest wins, and a known consent never returns to
  "not set".

Every golden record has a version; every changed field and every added,
changed or removed aspect entry is an event (golden_id, version, field, old,
new, connector, at).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.core.util.hashing import combine_hash_arrays, hash_array

from custsync_pipeline.domain.aspects import (
    ASPECT_COLUMNS,
    ASPECT_FIELDS,
    ENTRY_ASPECTS,
    ENTRY_COLUMNS,
    VALUE_COLUMNS,
    conform_entries,
    fold,
)
from custsync_pipeline.domain.canonical import CONSENT_TIMES, GOLDEN_FIELDS, NUMERIC_COLUMNS
from custsync_pipeline.domain.hashing import hex16
from custsync_pipeline.domain.identity_keys import blocked_reasons
from custsync_pipeline.domain.normalize import arrow_strings
from custsync_pipeline.domain.plan import CURRENT_DATA, FlowStep, IdentifierRule, SyncPlan

__all__ = [
    "FlowStep",
    "GoldenResult",
    "build_golden",
    "diff_golden",
    "field_strings",
    "merge_golden",
    "row_hash",
]

GOLDEN_ENTRY_COLUMNS: tuple[str, ...] = (
    "golden_id",
    "aspect",
    "entry_key",
    "parent_key",
    *VALUE_COLUMNS,
    "providers",
    "connector",
)
ENTRY_SOURCE_COLUMNS: tuple[str, ...] = (
    "golden_id",
    "aspect",
    "entry_key",
    "connector",
    "source_id",
    "seen_at",
)
# What survivorship reads of a source record (a million full canonical rows cost GBs more).
GOLDEN_INPUT_COLUMNS: tuple[str, ...] = ("connector", "source_id", "updated_at", *GOLDEN_FIELDS)
_EPOCH_MIN = np.iinfo(np.int64).min


@dataclass
class GoldenResult:
    golden: pd.DataFrame  # golden_id + GOLDEN_FIELDS + entries_hash
    provenance: pd.DataFrame  # golden_id, field, connector, source_id
    entries: pd.DataFrame = field(default_factory=lambda: empty_golden_entries())
    entry_sources: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(ENTRY_SOURCE_COLUMNS))
    )
    refused: dict[str, int] = field(default_factory=dict)  # owned field -> values ignored


def empty_golden_entries() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="string") for c in GOLDEN_ENTRY_COLUMNS})


def field_rights(
    steps: Sequence[FlowStep], ownership: Mapping[str, str]
) -> dict[str, dict[str, int]]:
    """Per golden field: connector -> rank (later steps rank higher). An owned field is
    its owner's alone, whatever aspects the owner lists."""
    rights: dict[str, dict[str, int]] = {}
    for aspect, fields in ASPECT_FIELDS.items():
        ranks = {s.connector: i for i, s in enumerate(steps) if aspect in s.aspects}
        for fld in fields:
            owner = ownership.get(fld)
            rights[fld] = {owner: len(steps)} if owner else dict(ranks)
    return rights


def _placeholders(values: pd.Series, rules: Sequence[IdentifierRule], fld: str) -> np.ndarray:
    """True where a value is one an identity rule on ``fld`` blocks (``none@none.com``),
    decided once per distinct value."""
    flags = np.zeros(len(values), dtype=bool)
    for rule in rules:
        if tuple(rule.columns) != (fld,) or not (rule.blocked_values or rule.blocked_patterns):
            continue
        code, uniques = pd.factorize(values.astype("string"))
        if len(uniques) == 0:
            continue
        blocked = blocked_reasons(pd.Series(uniques, dtype=object), rule) != ""
        flags |= np.where(code >= 0, blocked[np.maximum(code, 0)], False)
    return flags


def _first_per_group(group_sorted: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Positions (in sorted order) of the first masked row of each group."""
    idx = np.flatnonzero(mask)
    if not len(idx):
        return idx
    g = group_sorted[idx]
    return idx[np.r_[True, g[1:] != g[:-1]]]


def _times(series: pd.Series) -> np.ndarray:
    """Nanoseconds since the epoch; missing times sort oldest."""
    values = pd.to_datetime(series, utc=True, errors="coerce")
    out = values.to_numpy(dtype="datetime64[ns]").astype("int64")
    out[values.isna().to_numpy()] = _EPOCH_MIN
    return out


def build_golden(
    records: pd.DataFrame,
    identity_map: pd.DataFrame,
    steps: Sequence[FlowStep],
    ownership: Mapping[str, str] | None = None,
    placeholder_rules: Sequence[IdentifierRule] = (),
    entries: pd.DataFrame | None = None,
    previous: pd.DataFrame | None = None,
    gone_consents: pd.DataFrame | None = None,
) -> GoldenResult:
    """One golden row per golden id in ``identity_map``, fields chosen by survivorship,
    plus the merged aspect entries (when ``entries`` are given).

    ``previous``: the stored golden rows; a consent the owner no longer sends keeps
    its stored value and time (a known consent never returns to "not set").
    ``gone_consents`` (golden_id, field): stored consents whose record no longer exists
    (deleted, not moved to another golden record): one newer than what the owner's
    records say now stays (a withdrawal on a deleted duplicate stays withdrawn).
    """
    ownership = dict(ownership or {})
    ids = _golden_ids(identity_map)
    # member rows by position: no merged copy of a million wide records
    of_record = _golden_codes(records, identity_map, ids)
    pos = np.flatnonzero(of_record >= 0)
    members = records
    gid = of_record[pos]
    conn = records["connector"].astype(str).to_numpy()[pos]
    source_ids = records["source_id"].to_numpy()[pos]
    # ties (one connector, the same time) go to the smallest source id: an order of the
    # ids themselves, not of the rows loaded (a merge of a part loads other rows)
    sid_code = pd.factorize(source_ids, sort=True)[0]
    updated = _times(records["updated_at"])[pos] if "updated_at" in records else np.zeros(len(gid))
    out: dict[str, object] = {}
    prov: list[pd.DataFrame] = []
    refused: dict[str, int] = {}
    rights = field_rights(steps, ownership)
    n = len(ids)
    sorted_cache: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    # the flat address is one address: street, postal code and city come from the record
    # that wins the address (the first, by flow rank and recency, that gives any of them),
    # never a street of one with the city of another
    addr_row = _address_rows(members, pos, gid, conn, rights, updated, sid_code, n)
    for fld in GOLDEN_FIELDS:
        if fld in CONSENT_TIMES.values():
            continue  # filled with its consent
        # values as codes into their distinct values: the winners are chosen on integers
        # and only the n winning values are materialized (missing values code -1)
        if fld in members:
            column = members[fld]
            values = column.array if isinstance(column.dtype, pd.StringDtype) else column.to_numpy()
            codes_all, uniques = pd.factorize(values, use_na_sentinel=True)
            codes = codes_all[pos]
        else:
            codes, uniques = np.full(len(pos), -1, dtype=np.int64), np.array([], dtype=object)
        has_value = codes >= 0
        ranks_map = rights.get(fld, {})
        rank = pd.Series(conn).map(ranks_map).fillna(-1).astype("int64").to_numpy()
        owner = ownership.get(fld)
        if owner is not None:
            refused[fld] = int((has_value & (conn != owner)).sum())
        when = updated
        consent_at = None
        if fld in CONSENT_TIMES and CONSENT_TIMES[fld] in members:
            consent_at = pd.to_datetime(members[CONSENT_TIMES[fld]], utc=True, errors="coerce")
            at = _times(consent_at)[pos]
            when = np.where(at != _EPOCH_MIN, at, updated)
        cache_key = (tuple(sorted(ranks_map.items())), fld if fld in CONSENT_TIMES else "")
        if cache_key not in sorted_cache:
            order = np.lexsort((sid_code, -when, -rank, gid))
            sorted_cache[cache_key] = (order, gid[order], rank[order])
        order, g_sorted, r_sorted = sorted_cache[cache_key]
        c_sorted = codes[order]
        present = (c_sorted >= 0) & (r_sorted >= 0)
        blocked = np.append(_placeholders(pd.Series(uniques), placeholder_rules, fld), False)
        real = present & ~blocked[c_sorted]  # -1 reads the trailing False
        first = _first_per_group(g_sorted, real)
        covered = np.zeros(n, dtype=bool)
        covered[g_sorted[first]] = True
        fallback = _first_per_group(g_sorted, present & ~covered[g_sorted])
        winners = np.concatenate([first, fallback])
        won = np.full(n, -1, dtype=np.int64)
        won[g_sorted[winners]] = c_sorted[winners]
        rows = order[winners]
        if fld in ADDRESS_GROUP and addr_row is not None:
            grouped = addr_row >= 0
            won[grouped] = codes[addr_row[grouped]]
            keep = ~grouped[g_sorted[winners]]
            rows = np.concatenate([rows[keep], addr_row[grouped & (won >= 0)]])
        out[fld] = pd.api.extensions.take(uniques, won, allow_fill=True)
        prov.append(
            pd.DataFrame(
                {
                    "golden_id": ids[gid[rows]],
                    "field": fld,
                    "connector": conn[rows],
                    "source_id": source_ids[rows],
                }
            )
        )
        if fld in CONSENT_TIMES:
            at_col = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
            if consent_at is not None:
                at_values = consent_at.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
                at_col[g_sorted[winners]] = at_values[pos][rows]
            out[CONSENT_TIMES[fld]] = at_col

    golden = pd.DataFrame({"golden_id": ids.astype("string")})
    for fld in GOLDEN_FIELDS:
        if fld in NUMERIC_COLUMNS:
            golden[fld] = pd.to_numeric(pd.Series(out[fld]), errors="coerce").astype("float64")
        elif fld in CONSENT_TIMES.values():
            golden[fld] = pd.Series(out[fld]).dt.tz_localize("UTC")
        else:
            golden[fld] = pd.Series(out[fld], dtype="string")
    golden = _keep_known_consents(golden, previous, gone_consents)
    provenance = (
        pd.concat(prov, ignore_index=True)
        if prov
        else pd.DataFrame(columns=["golden_id", "field", "connector", "source_id"])
    )
    result = GoldenResult(golden=golden, provenance=provenance, refused=refused)
    if entries is not None:
        result.entries, result.entry_sources = merge_entries(entries, identity_map, steps)
    golden["entries_hash"] = entries_digest(result.entries, golden["golden_id"])
    return result


# the flat fields of one address (country stays apart: it also decides the market)
ADDRESS_GROUP = ("street", "postal_code", "city")


def _address_rows(
    members: pd.DataFrame,
    pos: np.ndarray,
    gid: np.ndarray,
    conn: np.ndarray,
    rights: dict[str, dict[str, int]],
    updated: np.ndarray,
    sid_code: np.ndarray,
    n: int,
) -> np.ndarray | None:
    """Per golden id, the member (a position into ``pos``) whose address wins: the first,
    by flow rank then recency, that gives a street — a later step's city alone does not
    take the street and postal code away — else the first that gives any of
    ``ADDRESS_GROUP``; -1 where none does. None when the fields do not share one ranking
    (a config that splits them)."""
    ranks = [rights.get(f, {}) for f in ADDRESS_GROUP]
    if any(r != ranks[0] for r in ranks) or not any(f in members for f in ADDRESS_GROUP):
        return None
    any_value = np.zeros(len(pos), dtype=bool)
    for f in ADDRESS_GROUP:
        if f in members:
            any_value |= members[f].notna().to_numpy()[pos]
    street = members["street"].notna().to_numpy()[pos] if "street" in members else any_value
    rank = pd.Series(conn).map(ranks[0]).fillna(-1).astype("int64").to_numpy()
    order = np.lexsort((sid_code, -updated, -rank, gid))
    g_sorted = gid[order]
    ranked = rank[order] >= 0
    out = np.full(n, -1, dtype=np.int64)
    for usable in (any_value, street):  # the street-holding winner overrides
        first = _first_per_group(g_sorted, usable[order] & ranked)
        out[g_sorted[first]] = order[first]
    return out


def _keep_known_consents(
    golden: pd.DataFrame, previous: pd.DataFrame | None, gone: pd.DataFrame | None = None
) -> pd.DataFrame:
    """A consent the owner stopped sending keeps its stored value and time, and so does one
    whose record was deleted (``gone``: golden_id, field) when it is newer than what the
    owner's records say now, or they give no time: a withdrawal made on a duplicate contact
    the owner later deleted stays withdrawn. A consent whose record moved to another
    golden record (a split) is that record's, not kept."""
    if previous is None or previous.empty:
        return golden
    prev = previous.set_index("golden_id")
    for fld, at in CONSENT_TIMES.items():
        if fld not in prev:
            continue
        old = prev[fld].reindex(golden["golden_id"]).to_numpy(dtype=object, na_value=None)
        keep = golden[fld].isna().to_numpy() & pd.notna(old)
        old_at = None
        if at in prev and at in golden:
            old_at = pd.to_datetime(prev[at], utc=True).reindex(golden["golden_id"]).to_numpy()
        if old_at is not None and gone is not None and len(gone):
            deleted = set(gone.loc[gone["field"] == fld, "golden_id"].astype(str))
            new_at = pd.to_datetime(golden[at], utc=True).to_numpy()
            newer = (
                golden["golden_id"].astype(str).isin(deleted).to_numpy()
                & pd.notna(old)
                & ~pd.isna(old_at)
            )
            timed = newer & ~pd.isna(new_at)
            newer[timed] = old_at[timed] > new_at[timed]
            keep |= newer
        if keep.any():
            golden[fld] = golden[fld].astype(object)
            golden.loc[keep, fld] = old[keep]
            if old_at is not None:
                golden.loc[keep, at] = old_at[keep]
    return golden


def entry_rights(steps: Sequence[FlowStep]) -> pd.DataFrame:
    """(connector, aspect, rank): who contributes which multi-valued aspect."""
    rows = [
        (s.connector, a, i) for i, s in enumerate(steps) for a in s.aspects if a in ENTRY_ASPECTS
    ]
    frame = pd.DataFrame(rows, columns=["connector", "aspect", "rank"])
    return frame.drop_duplicates(["connector", "aspect"], keep="last")


def _arrow_text(values: pd.Series) -> pa.Array:
    """A string column as one Arrow array: free for an Arrow-backed column, one
    conversion otherwise (no Python object per value on the Arrow path)."""
    if values.dtype == object or (
        isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "python"
    ):
        try:  # text objects straight into Arrow (a pandas "string" first costs 3x)
            # None, NaN and pd.NA all become nulls (``from_pandas``)
            return pa.array(values.to_numpy(dtype=object), type=pa.large_string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all text (ints, mixed)
            pass
    if not isinstance(values.dtype, pd.StringDtype):
        values = values.astype("string")
    arr = pa.array(values.array)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.large_string())


def _keys(frame: pd.DataFrame, cols: Sequence[str]) -> pa.Array:
    """The values of ``cols`` as one Arrow string per row (joined by a unit separator)."""
    parts = [_arrow_text(frame[c]) for c in cols]
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, pa.scalar("\x1f", pa.large_string()))


def key_positions(frame: pd.DataFrame, among: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    """Per row of ``frame``: the position of the first row of ``among`` with the same
    ``cols`` (-1 when none), by Arrow's hash lookup: no string merge, no Python loop."""
    if frame.empty or among.empty:
        return np.full(len(frame), -1, dtype=np.int64)
    at = pc.index_in(_keys(frame, cols), value_set=_keys(among, cols))
    return at.fill_null(-1).to_numpy().astype(np.int64)


def _golden_codes(frame: pd.DataFrame, identity_map: pd.DataFrame, ids: pd.Index) -> np.ndarray:
    """Per row of ``frame``: the position in ``ids`` of its record's golden id (-1 when
    unmapped), looked up on (connector, source id)."""
    at = key_positions(frame, identity_map, ("connector", "source_id"))
    if not len(identity_map):
        return at
    of_map = ids.get_indexer(identity_map["golden_id"].to_numpy(dtype=object))
    return np.where(at >= 0, of_map[np.maximum(at, 0)], -1)


def _golden_ids(identity_map: pd.DataFrame) -> pd.Index:
    return pd.Index(identity_map["golden_id"].unique(), name="golden_id").sort_values()


def merge_entries(
    entries: pd.DataFrame, identity_map: pd.DataFrame, steps: Sequence[FlowStep]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ "Multiple connectors": the union of every contributing step's entries per golden id,
    one per natural key; values from the latest step (then the newest sighting).

    Returns (golden entries, entry sources: who holds each entry and when each last saw it).
    Integer codes and one ``lexsort`` do the work, and only the winning rows are copied:
    2.5M entries in a few seconds.
    """
    e = entries if set(ENTRY_COLUMNS) <= set(entries.columns) else conform_entries(entries)
    if e.empty:
        return empty_golden_entries(), pd.DataFrame(columns=list(ENTRY_SOURCE_COLUMNS))
    rights = entry_rights(steps)
    rank_of = {(c, a): r for c, a, r in rights.itertuples(index=False)}
    g_names = _golden_ids(identity_map)
    g_all = _golden_codes(e, identity_map, g_names)
    conn_codes, conn_names = pd.factorize(e["connector"])
    asp_codes, asp_names = pd.factorize(e["aspect"])
    pair_rank = np.array(
        [[rank_of.get((c, a), -1) for a in asp_names] for c in conn_names], dtype=np.int64
    ).reshape(len(conn_names), len(asp_names))
    rank = pair_rank[conn_codes, asp_codes]
    keep = np.flatnonzero((rank >= 0) & (g_all >= 0))
    if not len(keep):
        return empty_golden_entries(), pd.DataFrame(columns=list(ENTRY_SOURCE_COLUMNS))
    rank, conn_codes, asp_codes = rank[keep], conn_codes[keep], asp_codes[keep]
    g_codes = g_all[keep]
    k_codes = pd.factorize(e["entry_key"])[0][keep]
    seen = _times(e["seen_at"])[keep]
    # ties (one connector, the same sighting) go to the smallest source id, whatever rows
    # were loaded beside them (a merge of a part loads other rows, in another order)
    s_codes = pd.factorize(e["source_id"], sort=True)[0][keep]
    # by entry (golden id, aspect, key), then the latest step, then the newest sighting
    order = np.lexsort((s_codes, conn_codes, -seen, -rank, k_codes, asp_codes, g_codes))
    g, a, k, c = g_codes[order], asp_codes[order], k_codes[order], conn_codes[order]
    new_entry = np.r_[True, (g[1:] != g[:-1]) | (a[1:] != a[:-1]) | (k[1:] != k[:-1])]
    entry_id = np.cumsum(new_entry) - 1
    winners = order[new_entry]
    # holders: the newest sighting of each connector per entry
    by_conn = np.lexsort((-seen[order], c, entry_id))
    ec, cc = entry_id[by_conn], c[by_conn]
    first_of_conn = np.r_[True, (ec[1:] != ec[:-1]) | (cc[1:] != cc[:-1])]
    holders = order[by_conn[first_of_conn]]
    holder_entry = ec[first_of_conn]
    bits = np.left_shift(np.int64(1), conn_codes[holders].astype(np.int64))
    starts = np.flatnonzero(np.r_[True, holder_entry[1:] != holder_entry[:-1]])
    masks = np.bitwise_or.reduceat(bits, starts)
    names = list(conn_names)
    uniq, inverse = np.unique(masks, return_inverse=True)
    labels = np.array(
        [",".join(sorted(n for i, n in enumerate(names) if int(m) >> i & 1)) for m in uniq],
        dtype=object,
    )
    cols = [c for c in GOLDEN_ENTRY_COLUMNS if c not in ("golden_id", "providers")]
    rows = keep[winners]
    golden_entries = pd.DataFrame(
        {
            "golden_id": pd.array(g_names.to_numpy()[g_codes[winners]], dtype="string"),
            **{c: e[c].array.take(rows) for c in cols},
            "providers": pd.array(labels[inverse], dtype="string"),
        }
    )[list(GOLDEN_ENTRY_COLUMNS)]
    held = keep[holders]
    entry_sources = pd.DataFrame(
        {
            "golden_id": pd.array(g_names.to_numpy()[g_codes[holders]], dtype="string"),
            **{c: e[c].array.take(held) for c in ENTRY_SOURCE_COLUMNS[1:]},
        }
    )
    return drop_subsumed_addresses(golden_entries, entry_sources)


def drop_subsumed_addresses(
    entries: pd.DataFrame, sources: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Addresses that say less than another address of the same golden record leave:

    * one without a street (a shop that keeps only city and postal code) beside one with a
      street in the same postal code and country;
    * an untyped one (``other``) beside a typed one at the same street, postal code and
      country: a CRM's spare address slot holding an address another system types (often
      one custsync wrote there itself), not an address of its own.
    """
    addr = entries["aspect"] == "addresses"
    if not addr.any():
        return entries, sources
    a = entries[addr]
    pc = a["postal_code"].str.replace(r"\s+", "", regex=True).str.upper()
    keyed = pd.DataFrame(
        {
            "golden_id": a["golden_id"],
            "pc": pc,
            "country": a["country"],
            "street": fold(a["street"]).where(a["street"].notna()),
            "type": a["type"],
            "entry_key": a["entry_key"],
        }
    )
    hits = []
    bare = keyed[keyed["street"].isna() & keyed["pc"].notna()]
    if len(bare):
        full = keyed[keyed["street"].notna()][["golden_id", "pc", "country"]].drop_duplicates()
        hits.append(bare.merge(full, on=["golden_id", "pc", "country"]))
    spot = ["golden_id", "pc", "country", "street"]
    untyped = keyed[(keyed["type"] == "other") & keyed["street"].notna()]
    if len(untyped):
        typed = keyed[(keyed["type"] != "other") & keyed["street"].notna()][spot]
        hits.append(untyped.merge(typed.drop_duplicates(), on=spot))
    hit = pd.concat(hits)[["golden_id", "entry_key"]] if hits else None
    if hit is None or hit.empty:
        return entries, sources
    # (golden id, entry key): the same address key may be another person's real address
    drop = pd.MultiIndex.from_frame(hit.astype(str))

    def gone(frame: pd.DataFrame) -> np.ndarray:
        at = pd.MultiIndex.from_arrays(
            [frame["golden_id"].astype(str), frame["entry_key"].astype(str)]
        ).isin(drop)
        return (frame["aspect"] == "addresses").to_numpy() & at

    return (
        entries[~gone(entries)].reset_index(drop=True),
        sources[~gone(sources)].reset_index(drop=True),
    )


def entry_hashes(entries: pd.DataFrame) -> np.ndarray:
    """A uint64 per entry over what it says (aspect, keys, values; not who holds it)."""
    if entries.empty:
        return np.zeros(0, dtype=np.uint64)
    return strings_hash(entries, ["aspect", "entry_key", "parent_key", *VALUE_COLUMNS])


def entries_digest(entries: pd.DataFrame, golden_ids: pd.Series) -> pd.Series:
    """One hex digest per golden id of its entries (order-free: a wrapping sum of hashes)."""
    sums = np.zeros(len(golden_ids), dtype=np.uint64)
    if not entries.empty:
        at = key_positions(entries, golden_ids.to_frame("golden_id"), ("golden_id",))
        mine = at >= 0
        np.add.at(sums, at[mine], entry_hashes(entries)[mine])  # uint64: wraps, never raises
    return pd.Series(hex16(sums), index=golden_ids.index, dtype="string")


def merge_golden(
    plan: SyncPlan,
    records: pd.DataFrame,
    identity_map: pd.DataFrame,
    entries: pd.DataFrame | None = None,
    previous: pd.DataFrame | None = None,
    previous_entries: pd.DataFrame | None = None,
    gone_consents: pd.DataFrame | None = None,
) -> GoldenResult:
    """:func:`build_golden` on a sync plan. With ``current_data`` as the source step the
    stored golden records (and their entries) are the first step: no request is made."""
    steps = list(plan.steps)
    if plan.uses_current_data and previous is not None and not previous.empty:
        current = previous.assign(connector=CURRENT_DATA, source_id=previous["golden_id"])
        if "updated_at" not in current:
            current["updated_at"] = pd.NaT
        records = pd.concat([current, records], ignore_index=True)
        identity_map = pd.concat(
            [
                pd.DataFrame(
                    {
                        "connector": CURRENT_DATA,
                        "source_id": previous["golden_id"],
                        "golden_id": previous["golden_id"],
                    }
                ),
                identity_map[["connector", "source_id", "golden_id"]],
            ],
            ignore_index=True,
        )
        if previous_entries is not None and not previous_entries.empty:
            stored = previous_entries.assign(
                connector=CURRENT_DATA, source_id=previous_entries["golden_id"]
            )
            entries = stored if entries is None else pd.concat([stored, entries])
        all_aspects = (*ASPECT_FIELDS, *ENTRY_ASPECTS)
        steps = [FlowStep(CURRENT_DATA, tuple(dict.fromkeys(all_aspects))), *steps]
    return build_golden(
        records,
        identity_map,
        steps,
        plan.ownership,
        placeholder_rules=plan.identifiers,
        entries=entries,
        previous=previous,
        gone_consents=gone_consents,
    )


def strings_hash(frame: pd.DataFrame, fields: Sequence[str], missing: str = "") -> np.ndarray:
    """``hash_pandas_object(field_strings(frame, fields), index=False)`` without the
    strings: each column is factorized (Arrow's hash table for Arrow strings) and only its
    distinct values are turned into text and hashed (a column's distinct values format as
    the column does: pandas picks one resolution for a column's times from its values).
    ``missing``: the text of a missing value ("" as ``field_strings`` has it)."""
    if frame.empty:
        return np.zeros(0, dtype=np.uint64)
    empty = hash_array(np.array([missing], dtype=object), categorize=False)
    parts = []
    for col in fields:
        if col not in frame:
            parts.append(np.full(len(frame), empty[0], dtype=np.uint64))
            continue
        codes, text = distinct_text(frame[col], missing)
        hashed = hash_array(np.append(text, missing), categorize=False)
        parts.append(hashed[codes])  # -1 (missing) takes the trailing "" hash
    return combine_hash_arrays(iter(parts), len(parts))


def distinct_text(values: pd.Series, missing: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(code per value, -1 for missing; the distinct values as text). Text columns go
    through Arrow's dictionary encoding (pandas' factorize hashes every Python string
    anew: ten times slower); others through pandas, formatted as the column would be."""
    if isinstance(values.dtype, pd.StringDtype) or values.dtype == object:
        encoded = pc.dictionary_encode(arrow_strings(values))
        codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
        text = encoded.dictionary.to_numpy(zero_copy_only=False)
        return codes.astype(np.intp, copy=False), text.astype(object, copy=False)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    text = pd.Series(uniques, dtype=values.dtype).astype("string").fillna(missing)
    return codes, text.to_numpy(dtype=object)


def field_strings(frame: pd.DataFrame, fields: Sequence[str]) -> pd.DataFrame:
    """Fields as comparable strings ('' for missing), one dtype whatever the source dtype."""
    out = pd.DataFrame(index=frame.index)
    for col in fields:
        values = frame[col] if col in frame else pd.Series(pd.NA, index=frame.index)
        if isinstance(values.dtype, pd.DatetimeTZDtype) or values.dtype.kind == "M":
            # each distinct time formatted once (a column's distinct times format as the
            # column does: one resolution for all); pandas formats every value otherwise
            codes, text = distinct_text(values, "")
            out[col] = pd.array(np.append(text, "")[codes], dtype="string")
        else:
            out[col] = values.astype("string").fillna("")
    return out


def row_hash(frame: pd.DataFrame, fields: Sequence[str]) -> pd.Series:
    """A stable hex hash per row over ``fields`` (same values -> same hash, across runs)."""
    if frame.empty:
        return pd.Series([], dtype="string", index=frame.index)
    return pd.Series(hex16(strings_hash(frame, fields)), index=frame.index, dtype="string")


def render_entry(entries: pd.DataFrame) -> pd.Series:
    """An entry as one line of ``column=value`` pairs joined by ``"; "`` (the columns its
    aspect uses, empty ones left out)."""
    text = pd.Series("", index=entries.index, dtype="string")
    for aspect, cols in ASPECT_COLUMNS.items():
        rows = entries["aspect"] == aspect
        if not rows.any():
            continue
        sub = field_strings(entries.loc[rows], cols)
        line = pd.Series("", index=sub.index, dtype="string")
        for c in cols:
            part = (c + "=" + sub[c]).where(sub[c] != "", "")
            joined = line + "; " + part
            line = joined.where((line != "") & (part != ""), line + part)
        text.loc[rows] = line
    return text


def diff_entries(new: pd.DataFrame, old: pd.DataFrame, golden_ids: pd.Series) -> pd.DataFrame:
    """Events for entries added, changed or removed on ``golden_ids``: field
    ``<aspect>[<entry_key>]``, old and new rendered (``render_entry``)."""
    key = ["golden_id", "aspect", "entry_key"]
    ids = set(golden_ids)
    new = new[new["golden_id"].isin(ids)] if not new.empty else empty_golden_entries()
    old = old[old["golden_id"].isin(ids)] if old is not None and not old.empty else None
    if old is None:
        old = empty_golden_entries()
    n = new[key + ["connector"]].assign(
        new_hash=entry_hashes(new), new_value=render_entry(new).to_numpy()
    )
    if old.empty:  # a first run: every entry is new (no million-row outer merge)
        ev = n.assign(old_value=pd.NA)
        ev["field"] = ev["aspect"] + "[" + ev["entry_key"] + "]"
        return ev[["golden_id", "field", "old_value", "new_value", "connector"]]
    o = old[key].assign(old_hash=entry_hashes(old), old_value=render_entry(old).to_numpy())
    both = n.merge(o, on=key, how="outer")
    changed = (
        both["new_hash"].isna() | both["old_hash"].isna() | (both["new_hash"] != both["old_hash"])
    )
    ev = both[changed].copy()
    ev["field"] = ev["aspect"] + "[" + ev["entry_key"] + "]"
    return ev[["golden_id", "field", "old_value", "new_value", "connector"]]


def _provider_of(events: pd.DataFrame, provenance: pd.DataFrame) -> object:
    """The connector that gave each (golden id, field) event's value, from the provenance
    (one row per golden id and field)."""
    if events.empty or provenance.empty:
        return pd.NA
    # a consent's time comes from the record that gave the consent (no provenance row of its own)
    of_time = {at: fld for fld, at in CONSENT_TIMES.items()}
    events = events[["golden_id", "field"]].assign(field=events["field"].replace(of_time))
    at = key_positions(events, provenance, ("golden_id", "field"))
    conn = provenance["connector"].to_numpy(dtype=object)
    return np.where(at >= 0, conn[np.maximum(at, 0)], None)


def _field_events(changed: pd.DataFrame, old: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """One event per changed field of a changed record (golden_id, field, old_value,
    new_value; text, "" for missing), field by field: each field's old and new text compared
    as two aligned arrays (no long frame of every field of every record, no merge on it:
    on a first run that frame has tens of millions of rows)."""
    ids = changed["golden_id"].to_numpy(dtype=object)
    new_text = field_strings(changed, fields)
    pos = np.full(len(ids), -1, dtype=np.int64)
    old_text = None
    if not old.empty and len(ids):
        # the stored rows of these ids only, as the comparison text is made per column
        old_sub = old[old["golden_id"].isin(changed["golden_id"]).to_numpy()]
        old_text = field_strings(old_sub, fields)
        pos = key_positions(changed[["golden_id"]], old_sub, ("golden_id",))
    found = pos >= 0
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("golden_id", "field", "old", "new")}
    for name in fields:
        now_v = new_text[name].to_numpy(dtype=object)
        was_v = np.full(len(ids), "", dtype=object)
        if old_text is not None:
            was_v[found] = old_text[name].to_numpy(dtype=object)[pos[found]]
        differs = was_v != now_v
        if not differs.any():
            continue
        cols["golden_id"].append(ids[differs])
        cols["field"].append(np.full(int(differs.sum()), name, dtype=object))
        cols["old"].append(was_v[differs])
        cols["new"].append(now_v[differs])

    def joined(key: str) -> np.ndarray:
        return np.concatenate(cols[key]) if cols[key] else np.zeros(0, dtype=object)

    return pd.DataFrame(
        {
            "golden_id": joined("golden_id"),
            "field": joined("field"),
            "old_value": joined("old"),
            "new_value": joined("new"),
        }
    )


CREATED = "(created)"  # the field of a new golden record's one event: no values of its own


def created_events(new: pd.DataFrame) -> pd.DataFrame:
    """One ``CREATED`` event per new golden record. Its first values are not written again
    as events (on a first run those were a third of every row the state DB took): the
    record holds them until a change event records each old value
    (:func:`first_version` reads them back)."""
    return pd.DataFrame(
        {
            "golden_id": new["golden_id"].to_numpy(dtype=object),
            "field": CREATED,
            "old_value": None,
            "new_value": None,
            "connector": None,
        }
    )


def first_version(
    events: pd.DataFrame,
    current: pd.DataFrame,
    entries: pd.DataFrame,
    origins: pd.DataFrame,
) -> pd.DataFrame:
    """One golden id's history (events in the order written) with each ``CREATED`` event
    replaced by the values the record was created with, one row per field and aspect entry
    as a change event has them: a value's first change event after it holds it as its old
    value, else the record still does — ``current`` (its stored row; none when retired: a
    retired record's last events hold its values) and ``entries`` (its stored entries),
    for the last creation only (an id retired and created again lived before it).
    ``origins``: field, connector of the current values (a value changed since has no
    connector recorded: None)."""
    marks = np.flatnonzero((events["field"] == CREATED).to_numpy())
    if not len(marks):
        return events
    parts = [events.iloc[: marks[0]]]
    for n, at in enumerate(marks):
        end = marks[n + 1] if n + 1 < len(marks) else len(events)
        last = n + 1 == len(marks)
        later = events.iloc[at + 1 : end]
        parts.append(
            _created_values(
                events.iloc[at],
                later,
                current if last else current.iloc[:0],
                entries if last else entries.iloc[:0],
                origins if last else origins.iloc[:0],
            )[events.columns]
        )
        parts.append(later)
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else events.iloc[:0]


def _created_values(
    created: pd.Series,
    later: pd.DataFrame,
    current: pd.DataFrame,
    entries: pd.DataFrame,
    origins: pd.DataFrame,
) -> pd.DataFrame:
    """The rows of one ``CREATED`` event's first values (:func:`first_version`)."""
    first_change = later.drop_duplicates("field")  # events come oldest first
    changed = dict(zip(first_change["field"], first_change["old_value"], strict=True))
    given = dict(zip(origins["field"], origins["connector"], strict=True))
    for fld, time_fld in CONSENT_TIMES.items():  # a consent's time: from the consent's record
        if fld in given:
            given[time_fld] = given[fld]
    rows: list[tuple[str, object, object]] = []
    now = field_strings(current, GOLDEN_FIELDS).iloc[0] if len(current) else None
    for fld in GOLDEN_FIELDS:
        if fld in changed:
            rows.append((fld, changed[fld], None))
        elif now is not None:
            rows.append((fld, now[fld], given.get(fld)))
    held = (
        entries.assign(
            field=entries["aspect"] + "[" + entries["entry_key"] + "]",
            text=render_entry(entries).to_numpy(),
        )
        if len(entries)
        else pd.DataFrame(columns=["field", "text", "connector"])
    )
    for fld in sorted({*held["field"], *(f for f in changed if "[" in f)}):
        if fld in changed:
            rows.append((fld, changed[fld], None))
        else:
            row = held[held["field"] == fld].iloc[0]
            rows.append((fld, row["text"], row["connector"]))
    values = [(f, v, c) for f, v, c in rows if isinstance(v, str) and v != ""]
    first = pd.DataFrame(
        {
            "field": [f for f, _, _ in values],
            "old_value": None,
            "new_value": [v for _, v, _ in values],
            "connector": [c if isinstance(c, str) else None for _, _, c in values],
        }
    )
    for col in created.index.difference(first.columns):
        first[col] = created[col]
    return first


def change_counts(
    changed: pd.DataFrame, events: pd.DataFrame, gone: list[str], entries: pd.DataFrame
) -> tuple[int, int]:
    """(field changes, entry changes) of a merge's :func:`diff_golden` output: a new
    record's first values count as its fields and entries (``entries``: the merged
    entries; its history keeps them as one event), a retired record's values cleared in
    its history as no change of a golden record (they are counted as retired ids)."""
    fresh = (changed["version"] == 1).to_numpy()
    first = changed.loc[fresh, [c for c in GOLDEN_FIELDS if c in changed]]
    live = ~events["golden_id"].isin(gone) & (events["field"] != CREATED)
    is_entry = events["field"].astype(str).str.contains("[", regex=False)
    new_entries = entries["golden_id"].isin(changed.loc[fresh, "golden_id"]) if len(entries) else []
    entry_changes = int((live & is_entry).sum()) + int(np.sum(new_entries))
    field_changes = int((live & ~is_entry).sum()) + int(first.notna().to_numpy().sum())
    return field_changes, entry_changes


def diff_golden(
    new: pd.DataFrame,
    old: pd.DataFrame,
    provenance: pd.DataFrame,
    now: pd.Timestamp,
    new_entries: pd.DataFrame | None = None,
    old_entries: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Compare fresh golden rows with the stored ones.

    Returns the rows to write (new or changed, with ``version``, ``record_hash``
    and ``updated_at``), the change events (fields, and aspect entries when
    ``new_entries`` is given), and the stored golden ids that no longer exist
    (merged away or deleted).
    """
    fields = list(GOLDEN_FIELDS)
    hashed = [*fields, "entries_hash"] if "entries_hash" in new else fields
    new = new.copy()
    new["record_hash"] = row_hash(new, hashed)
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

    # a new golden record's first values are one event (CREATED), not one per field: on a
    # first run those were a third of every row the state DB took
    fresh = changed["old_version"].isna().to_numpy()
    ev = _field_events(changed[~fresh], old, fields)
    ev["connector"] = _provider_of(ev, provenance)
    # a retired record's values, cleared: its history keeps what it held (nothing else does)
    retired = old[old["golden_id"].isin(gone).to_numpy()]
    if len(retired):
        blank = retired[["golden_id"]].assign(**{f: None for f in fields})
        cleared = _field_events(blank, retired, fields)
        cleared["connector"] = None
        ev = pd.concat([ev, cleared], ignore_index=True)
    parts = [created_events(changed[fresh]), ev]
    if new_entries is not None:
        amended = [*changed.loc[~fresh, "golden_id"].to_numpy(dtype=object), *gone]
        parts.append(diff_entries(new_entries, old_entries, pd.Series(amended, dtype=object)))
    # one object array per column, built once (millions of events on a first run: every
    # copy of the frame costs hundreds of MB); object, so that an all-missing connector
    # column does not decide the dtype
    parts = [p for p in parts if not p.empty] or [ev]
    cols = ["golden_id", "field", "old_value", "new_value", "connector"]
    data = {c: np.concatenate([p[c].to_numpy(dtype=object) for p in parts]) for c in cols}
    del parts, ev
    for c in ("old_value", "new_value"):
        empty = pd.isna(data[c])
        empty[~empty] = data[c][~empty] == ""
        data[c][empty] = None
    # every event is of a changed or retired record: its new version by position, not a
    # merge (a retired record's is the one after its last)
    versions = np.concatenate(
        [
            changed["version"].to_numpy(dtype=np.int64),
            retired["version"].fillna(0).to_numpy(dtype=np.int64) + 1,
        ]
    )
    ids = np.concatenate(
        [changed["golden_id"].to_numpy(dtype=object), retired["golden_id"].to_numpy(dtype=object)]
    )
    at = pd.Index(ids).get_indexer(data["golden_id"])
    if (at < 0).any():
        data = {c: v[at >= 0] for c, v in data.items()}
        at = at[at >= 0]
    events = pd.DataFrame(
        {
            "golden_id": data["golden_id"],
            "version": versions[at],
            "field": data["field"],
            "old_value": data["old_value"],
            "new_value": data["new_value"],
            "connector": data["connector"],
            "at": now,
        }
    )
    return changed.drop(columns=["old_version", "old_hash"]), events, gone
