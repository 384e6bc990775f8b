"""Echo safety: what custsync wrote to a target and reads back is not fresh evidence.

A publish target is often also a flow step (Voucherify enriches and receives). Its record
then holds values custsync put there; read back, a value that is exactly what custsync
wrote would otherwise count as the target's own word — and, the target being a later
flow step, win survivorship against the source it came from (a written ``"411 52"``
replacing the ``"41152"`` of the golden mailing address), or be re-read in another shape
(a name ``"Sara"`` written as first name, read back from Voucherify's single ``name``
field as a surname, and sent to Salesforce as ``"Sara Sara"``).

- ``echoed_fields``: the stored canonical records custsync created in a target compared
  with the canonical reading of the last payload it acknowledged for each (the connector's own ``to_canonical`` of the
  payload, so a name split the same way on both sides compares equal): a field whose
  value is the one written is an echo and is left out of survivorship (missing for that
  record); any other value — a hand edit, a value the target held before — still counts.
- ``drop_echoed_entries``: an aspect entry of a target record equal, column for column,
  to the entry its written payload makes, is left out of the merge (the golden record
  keeps the entry from the connector it came from).
- ``keep_spelling``: a merged golden entry whose values differ from the golden record's
  previous entry of the same natural key only by case and spacing keeps the previous
  values: a spelling is no change (deltas compare folded too), so two systems that format
  a postal code differently do not make a new golden version on every run.

Pure pandas, vectorized per column; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from custsync_pipeline.domain.aspects import ASPECT_COLUMNS
from custsync_pipeline.domain.golden import field_strings, key_positions


def _folded(values: pd.Series) -> pd.Series:
    return values.astype("string").fillna("").str.replace(r"\s+", " ", regex=True).str.strip()


def _spelling(values: pd.Series) -> pd.Series:
    """Case and every space folded away (as deltas compare entries: ``411 52`` = ``41152``)."""
    return values.astype("string").fillna("").str.replace(r"\s+", "", regex=True).str.casefold()


def echoed_fields(
    records: pd.DataFrame, written: pd.DataFrame, fields: Iterable[str]
) -> pd.DataFrame:
    """A boolean frame aligned with ``records``: True where a target record's field holds
    exactly (spacing folded) the non-empty value custsync last wrote there. ``written``:
    canonical rows of the acknowledged payloads (connector, source_id + fields)."""
    fields = [f for f in fields if f in records.columns and f in written.columns]
    out = pd.DataFrame(False, index=records.index, columns=fields)
    if records.empty or written.empty or not fields:
        return out
    w = written.drop_duplicates(["connector", "source_id"], keep="last")
    w = w.set_index([w["connector"].astype(str), w["source_id"].astype(str)])
    key = pd.MultiIndex.from_arrays(
        [records["connector"].astype(str), records["source_id"].astype(str)]
    )
    hit = key.isin(w.index)
    if not hit.any():
        return out
    sub_key = key[hit]
    for f in fields:
        have = _folded(records.loc[hit, f]).to_numpy()
        sent = _folded(w[f].reindex(sub_key)).to_numpy()
        same = (sent != "") & (have == sent)
        col = out[f].to_numpy().copy()
        col[hit] = same
        out[f] = col
    return out


def forget_echoes(records: pd.DataFrame, echoed: pd.DataFrame) -> pd.DataFrame:
    """``records`` with every echoed value missing (left out of survivorship)."""
    if echoed.empty or not echoed.to_numpy().any():
        return records
    out = records.copy()
    for f in echoed.columns:
        mask = echoed[f].to_numpy()
        if mask.any():
            out[f] = out[f].astype(object)
            out.loc[mask, f] = None
    return out


def drop_echoed_entries(entries: pd.DataFrame, written: pd.DataFrame) -> pd.DataFrame:
    """``entries`` without those equal, on every column of their aspect, to an entry of the
    written payload of the same record (connector, source_id, aspect, local_id)."""
    if entries.empty or written.empty:
        return entries
    key = ["connector", "source_id", "aspect", "local_id"]
    keep = pd.Series(True, index=entries.index)
    for aspect, cols in ASPECT_COLUMNS.items():
        mine = entries["aspect"] == aspect
        theirs = written[written["aspect"] == aspect]
        if not mine.any() or theirs.empty:
            continue
        a = entries.loc[mine, key].astype(str).join(field_strings(entries.loc[mine], cols))
        b = theirs[key].astype(str).join(field_strings(theirs, cols))
        for c in cols:
            a[c] = _folded(a[c])
            b[c] = _folded(b[c])
        b = b.drop_duplicates([*key, *cols])
        both = a.reset_index().merge(b, on=[*key, *cols], how="inner")
        keep.loc[both["index"].to_numpy()] = False
    return entries[keep]


def keep_spelling(
    entries: pd.DataFrame, previous: pd.DataFrame, key: tuple[str, ...] = ("golden_id", "entry_key")
) -> pd.DataFrame:
    """Merged golden ``entries`` where each entry equal to the ``previous`` one of the same
    key up to case and spacing takes the previous values (per aspect column)."""
    if entries.empty or previous.empty:
        return entries
    k = list(key)
    prev = previous.drop_duplicates(k, keep="last").reset_index(drop=True)
    at = key_positions(entries, prev, k)  # Arrow hash lookup: no MultiIndex of strings
    found = at >= 0
    if not found.any():
        return entries
    value_cols = sorted(
        {c for cols in ASPECT_COLUMNS.values() for c in cols} & set(entries.columns)
    )
    value_cols = [c for c in value_cols if c in prev.columns]
    pos = at[found]
    old = {c: prev[c].to_numpy(dtype=object)[pos] for c in value_cols}
    now = {c: entries[c].to_numpy(dtype=object)[found] for c in value_cols}
    # most entries are exactly as before (taking the previous values changes nothing):
    # only the others are folded and compared
    differ = np.zeros(int(found.sum()), dtype=bool)
    for c in value_cols:
        a = pd.Series(now[c], dtype="string").fillna("").to_numpy()
        b = pd.Series(old[c], dtype="string").fillna("").to_numpy()
        differ |= a != b
    if not differ.any():
        return entries
    same = differ.copy()
    for c in value_cols:
        a = _spelling(pd.Series(now[c][differ], dtype=object)).to_numpy()
        b = _spelling(pd.Series(old[c][differ], dtype=object)).to_numpy()
        same[differ] &= a == b
    if not same.any():
        return entries
    out = entries.copy()
    rows = out.index[found][same]
    for c in value_cols:
        out[c] = out[c].astype(object)
        out.loc[rows, c] = old[c][same]
    return out


def names_as_held(members: pd.DataFrame, golden: pd.DataFrame) -> pd.DataFrame:
    """``members`` whose whole-name field (``full_name``: Voucherify's one ``name``) reads
    exactly as the golden first and last name joined take the golden split: the target
    cannot hold the split, so ``"Sara"`` there is the golden ``Sara`` / (no last name),
    not a difference to write again on every run. Only for comparing, never stored."""
    cols = ("full_name", "first_name", "last_name")
    if members.empty or not all(c in members.columns for c in cols):
        return members
    g = golden.drop_duplicates("golden_id").set_index("golden_id")
    if not {"first_name", "last_name"} <= set(g.columns):
        return members
    first = members["golden_id"].map(g["first_name"])
    last = members["golden_id"].map(g["last_name"])
    joined = (first.astype("string").fillna("") + " " + last.astype("string").fillna("")).str
    want = _spelling(joined.strip())
    have = _spelling(members["full_name"])
    same = ((have != "") & (have == want)).to_numpy()
    if not same.any():
        return members
    out = members.copy()
    for col, values in (("first_name", first), ("last_name", last)):
        out[col] = out[col].astype(object)
        out.loc[same, col] = values.astype(object).to_numpy()[same]
    return out
