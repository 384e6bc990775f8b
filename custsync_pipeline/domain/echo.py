"""Echo safety: what custsync wrote to a target and reads back is not fresh evidence.

A publish target is often also a flow step (Voucherify enriches and receives). Its record
then holds values custsync put there; read back, a value that is exactly what custsync
wrote would otherwise count as the target's own word — and, the target being a later
flow step, win survivorship against the source it came from (a written ``"411 52"``
replacing the ``"41152"`` of the golden mailing address), or be re-read in another shape
(a name ``"Sara"`` written as first name, read back from Voucherify's single ``name``
field as a surname, and sent to Salesforce as ``"Sara Sara"``).

- ``own_word``: a target's records and entries as evidence of their own. The last
  payload each record acknowledged is read the way its records are read (the connector's
  own ``to_canonical``, so a name split the same way on both sides compares equal); a
  value or an entry that reads back exactly (spacing folded) as written is the write's
  echo. A record custsync **created** there holds nothing of its own: the echo is left
  out. A record it **updated** holds what it held before the write (``held_before``,
  stored with the update): a value, a slot of entries (a Contact's Mailing address) and
  the record's time as they were. Anything else — a hand edit, a value the write did not
  change — is the record's own word.
- ``keep_spelling``: a merged golden entry whose values differ from the golden record's
  previous entry of the same natural key only by case and spacing keeps the previous
  values: a spelling is no change (deltas compare folded too), so two systems that format
  a postal code differently do not make a new golden version on every run.

Pure pandas, vectorized per column; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from custsync_pipeline.domain.aspects import ASPECT_COLUMNS
from custsync_pipeline.domain.canonical import GOLDEN_FIELDS
from custsync_pipeline.domain.golden import field_strings, key_positions
from custsync_pipeline.domain.hashing import row_hashes64

# the golden fields a target's echo is looked for in (its kind is no value it was sent)
ECHO_FIELDS: tuple[str, ...] = tuple(f for f in GOLDEN_FIELDS if f != "kind")


def _folded(values: pd.Series) -> pd.Series:
    return values.astype("string").fillna("").str.replace(r"\s+", " ", regex=True).str.strip()


def _folded_columns(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """``_folded`` of each of ``cols`` (aligned with ``frame``), the columns stacked into one
    text pass: a target's forty fields folded one by one cost more than the rest of the
    echo work on a small run."""
    if not cols or not len(frame):
        return pd.DataFrame({c: pd.Series("", index=frame.index, dtype="string") for c in cols})
    n = len(frame)
    stacked = _folded(pd.concat([frame[c].astype("string") for c in cols], ignore_index=True))
    values = stacked.to_numpy()
    return pd.DataFrame(
        {
            c: pd.Series(values[i * n : (i + 1) * n], index=frame.index, dtype="string")
            for i, c in enumerate(cols)
        }
    )


# connector -> golden field -> what an empty value there holds as a write target
# (``empty_reads_as`` of a connector: a Salesforce Contact not opted out reads as no
# consent, and holds what a golden "yes" writes). A target record is compared through it
# (the written rows say "yes" where the payload sent HasOptedOutOfEmail=false:
# ``defs.golden.echo.read_payloads``), so a Contact reading empty holds that write.
ReadsAs = Mapping[str, Mapping[str, str]]


def _as_read(frame: pd.DataFrame, fields: list[str], reads_as: ReadsAs | None) -> pd.DataFrame:
    """``frame`` (a copy when anything changes) with each of ``fields`` empty on a row of a
    connector that reads it as a value holding that value; for comparing only."""
    if not reads_as or not len(frame) or "connector" not in frame.columns:
        return frame
    out = frame
    conn = frame["connector"].astype(str).to_numpy(dtype=object)
    for name, fills in reads_as.items():
        rows = conn == name
        for f, value in fills.items():
            if f not in fields or f not in frame.columns or not rows.any():
                continue
            empty = rows & (_folded(frame[f]) == "").to_numpy()
            if empty.any():
                if out is frame:
                    out = frame.copy()
                out[f] = out[f].astype(object)
                out.loc[empty, f] = value
    return out


def _spelling(values: pd.Series) -> pd.Series:
    """Case and every space folded away (as deltas compare entries: ``411 52`` = ``41152``)."""
    return values.astype("string").fillna("").str.replace(r"\s+", "", regex=True).str.casefold()


def echoed_fields(
    records: pd.DataFrame,
    written: pd.DataFrame,
    fields: Iterable[str],
    reads_as: ReadsAs | None = None,
) -> pd.DataFrame:
    """A boolean frame aligned with ``records``: True where a target record's field holds
    exactly (spacing folded) the non-empty value custsync last wrote there. ``written``:
    canonical rows of the acknowledged payloads (connector, source_id + fields); the
    records compared through ``reads_as``."""
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
    # only the written records are read through ``reads_as`` (a few of a million)
    have_all = _folded_columns(
        _as_read(records.loc[hit, fields + ["connector"]], fields, reads_as), fields
    )
    sent_all = _folded_columns(w[fields].reindex(sub_key), fields)
    for f in fields:
        have = have_all[f].to_numpy()
        sent = sent_all[f].to_numpy()
        same = (sent != "") & (have == sent)
        col = out[f].to_numpy().copy()
        col[hit] = same
        out[f] = col
    return out


# an entry's slot in its record: a Contact's Mailing or Other address, an Exact contact
SLOT = ["connector", "source_id", "aspect", "local_id"]


def _entry_texts(entries: pd.DataFrame) -> pd.Series:
    """Each entry's aspect values as one folded text (entries of one slot compare by it)."""
    out = pd.Series("", index=entries.index, dtype=object)
    for aspect, cols in ASPECT_COLUMNS.items():
        mine = (entries["aspect"] == aspect).to_numpy()
        if not mine.any():
            continue
        values = field_strings(entries.loc[mine], cols)
        text = _folded(values[cols[0]])
        for c in cols[1:]:
            text = text + "\x1f" + _folded(values[c])
        out[mine] = text.to_numpy(dtype=object)
    return out


def _keys(frame: pd.DataFrame, cols: list[str]) -> pd.Series:
    """One text key per row over ``cols`` (vectorized: no Python join per row)."""
    if not len(frame):
        return pd.Series([], dtype=object, index=frame.index)
    out = frame[cols[0]].astype(str)
    for c in cols[1:]:
        out = out + "\x1e" + frame[c].astype(str)
    return out


def _slot_keys(entries: pd.DataFrame) -> pd.Series:
    return _keys(entries, SLOT)


def echoed_entries(entries: pd.DataFrame, written: pd.DataFrame) -> np.ndarray:
    """Which ``entries`` equal, on every column of their aspect, an entry of the written
    payload of the same record in the same slot (connector, source_id, aspect, local_id)."""
    if entries.empty or written.empty:
        return np.zeros(len(entries), dtype=bool)
    a = entries[SLOT].astype(str).assign(text=_entry_texts(entries).to_numpy())
    b = written[SLOT].astype(str).assign(text=_entry_texts(written).to_numpy())
    both = a.reset_index(drop=True).reset_index().merge(b.drop_duplicates(), how="inner")
    mask = np.zeros(len(entries), dtype=bool)
    mask[both["index"].to_numpy()] = True
    return mask


def own_word(
    records: pd.DataFrame,
    entries: pd.DataFrame,
    written: pd.DataFrame,
    written_entries: pd.DataFrame,
    held: pd.DataFrame,
    held_entries: pd.DataFrame,
    fields: Iterable[str],
    reads_as: ReadsAs | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """A target's records and entries as their own word: what custsync wrote and reads back
    is no evidence. ``written``: canonical rows of the last acknowledged payload of each
    record (connector, source_id, ``created``, fields), ``written_entries`` its entries.

    - a record custsync **created** there holds nothing of its own: a value or an entry
      that reads back exactly as written is left out (missing);
    - a record it **updated** holds what it held before the write: an echoed value whose
      write changed it takes the value held before (``held``: connector, source_id,
      field, value), an echoed entry of a slot the write changed gives way to the
      entries that slot held before (``held_entries``, with the slot's key columns; a
      slot that held nothing has a row with ``aspect`` and ``local_id`` and no values:
      ``held_empty``). A value the write did not change is the record's own.

    Values compare through ``reads_as`` (a consent written as "not opted out" and read
    back empty is the write's echo). Returns (records, entries, echoed values and entries
    set aside)."""
    fields = list(fields)
    echoed = echoed_fields(records, written, fields, reads_as)
    n = 0  # values set aside (an echo of a write that changed them)
    key = _keys(records, ["connector", "source_id"])
    created_keys = set()
    if len(written) and "created" in written.columns:
        c = written[written["created"].astype(bool)]
        created_keys = set(c["connector"].astype(str) + "\x1e" + c["source_id"].astype(str))
    created = key.isin(created_keys).to_numpy() if len(records) else np.zeros(0, dtype=bool)
    out = records
    if echoed.to_numpy().any():
        out = records.copy()
        for f in echoed.columns:
            mask = echoed[f].to_numpy()
            take = mask & created
            if take.any():  # a created record's echo is left out (empty: nothing set aside)
                at = np.flatnonzero(take)
                take[at[(_folded(records[f].iloc[at]) == "").to_numpy()]] = False
            sub = held[held["field"] == f] if len(held) else held
            was = pd.Series(dtype=object)
            if len(sub):
                was = sub.set_index(
                    sub["connector"].astype(str) + "\x1e" + sub["source_id"].astype(str)
                )["value"]
                was = was[~was.index.duplicated(keep="last")]
            back = mask & ~created & key.isin(was.index).to_numpy()
            n += int(take.sum() + back.sum())
            if take.any() or back.any():
                kind = out[f].dtype
                out[f] = out[f].astype(object)
                out.loc[take, f] = None
                out.loc[back, f] = key[back].map(was).to_numpy(dtype=object)
                if isinstance(kind, pd.StringDtype):  # text stays as it came (Arrow-backed)
                    out[f] = out[f].astype(kind)
    out = _held_times(out, key, written, echoed, created, held, fields)
    if entries.empty or written_entries.empty:
        return out, entries, n
    # only the entries of records custsync wrote to are compared (a few of millions)
    ekey = _keys(entries, ["connector", "source_id"])
    near = ekey.isin(set(_keys(written_entries, ["connector", "source_id"]))).to_numpy()
    hit = np.zeros(len(entries), dtype=bool)
    if near.any():
        hit[near] = echoed_entries(entries[near], written_entries)
    if not hit.any():
        return out, entries, n
    # created / slot of the compared entries only (keys of millions cost seconds)
    e_created = np.zeros(len(entries), dtype=bool)
    e_created[near] = ekey[near].isin(created_keys).to_numpy()
    slots = pd.Series("", index=entries.index, dtype=object)
    slots[near] = _slot_keys(entries[near]).to_numpy(dtype=object)
    held_slots = set(_slot_keys(held_entries)) if len(held_entries) else set()
    swap = hit & ~e_created & slots.isin(held_slots).to_numpy()
    drop = (hit & e_created) | swap
    kept = entries[~drop]
    if swap.any():
        back = held_entries[_slot_keys(held_entries).isin(set(slots[swap])).to_numpy()]
        if "held_empty" in back.columns:
            back = back[~back["held_empty"].astype(bool)].drop(columns="held_empty")
        if len(back):
            back = back.reindex(columns=entries.columns)
            for c in back.columns:  # the stored entries' dtypes: no all-missing object column
                back[c] = back[c].astype(entries[c].dtype)
            kept = pd.concat([kept, back], ignore_index=True)
    return out, kept, n + int(drop.sum())


# the held row of the digest of a record's values the write did not send
UNSENT = "_unsent"


def _unsent_digest(values: pd.DataFrame, sent: pd.DataFrame, fields: list[str]) -> np.ndarray:
    """Per row (``values`` and ``sent`` aligned by position): a digest of the values of
    ``fields`` that ``sent`` left empty (folded), to tell a hand edit of an unsent field."""
    text = pd.Series("", index=values.index, dtype=object)
    sent_folded = _folded_columns(sent, [f for f in fields if f in sent.columns])
    mine_folded = _folded_columns(values, [f for f in fields if f in values.columns])
    for f in fields:
        unsent = (sent_folded[f] == "").to_numpy() if f in sent.columns else True
        mine = mine_folded[f] if f in values.columns else pd.Series("", index=values.index)
        text = text + "\x1f" + mine.where(unsent, "").astype(object)
    return row_hashes64(text).astype(str).astype(object)


def _held_times(
    records: pd.DataFrame,
    key: pd.Series,
    written: pd.DataFrame,
    echoed: pd.DataFrame,
    created: np.ndarray,
    held: pd.DataFrame,
    fields: list[str],
) -> pd.DataFrame:
    """An updated record that reads back exactly as written (every value the write sent)
    is as recent as it was before the write: the write's own time would make its held
    values the newest of its connector and win survivorship over its twin's."""
    if "updated_at" not in records.columns or not len(held) or not len(written):
        return records
    sub = held[held["field"] == "updated_at"]
    if sub.empty:
        return records
    was = pd.Series(
        pd.to_datetime(sub["value"], utc=True, format="mixed").to_numpy(),
        index=sub["connector"].astype(str) + "\x1e" + sub["source_id"].astype(str),
    )
    was = was[~was.index.duplicated(keep="last") & was.notna().to_numpy()]
    w = written.drop_duplicates(["connector", "source_id"], keep="last")
    cols = [f for f in fields if f in w.columns]
    w_folded = _folded_columns(w, cols)
    sent = sum((w_folded[f] != "").astype(int) for f in cols)
    sent = pd.Series(
        np.asarray(sent), index=w["connector"].astype(str) + "\x1e" + w["source_id"].astype(str)
    )
    echoed_n = echoed.to_numpy().sum(axis=1) if echoed.shape[1] else np.zeros(len(records))
    complete = echoed_n == key.map(sent).fillna(-1).to_numpy()
    # and nothing the write did not send changed there since (a hand edit is fresh)
    unsent = held[held["field"] == UNSENT]
    then = pd.Series(
        unsent["value"].astype(str).to_numpy(),
        index=unsent["connector"].astype(str) + "\x1e" + unsent["source_id"].astype(str),
    )
    then = then[~then.index.duplicated(keep="last")]
    at = pd.Index(w["connector"].astype(str) + "\x1e" + w["source_id"].astype(str)).get_indexer(key)
    now = np.full(len(records), "", dtype=object)
    mine = at >= 0
    if mine.any():
        now[mine] = _unsent_digest(
            records[mine].reset_index(drop=True), w.iloc[at[mine]].reset_index(drop=True), cols
        )
    same_rest = key.map(then).fillna("\x00").to_numpy(dtype=object) == now
    restore = complete & same_rest & ~created & key.isin(was.index).to_numpy()
    if not restore.any():
        return records
    out = records.copy()
    times = pd.to_datetime(out["updated_at"], utc=True, format="mixed")
    times[restore] = key[restore].map(was).to_numpy()
    out["updated_at"] = times
    return out


def held_before(
    own: pd.DataFrame,
    own_entries: pd.DataFrame,
    written: pd.DataFrame,
    written_entries: pd.DataFrame,
    fields: Iterable[str],
    reads_as: ReadsAs | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What an update changes in its records, as they held it before (``own``: their own
    word, :func:`own_word`): (connector, source_id, field, value) of each written field
    whose value differs (folded, through ``reads_as``) from the record's, and the
    record's entries of each slot the payload fills differently (a slot it held empty
    gets one row, ``held_empty``). Stored with the update, so its echo can be told from
    the record's own word later."""
    fields = [f for f in fields if f in written.columns]
    key = ["connector", "source_id"]
    cols: dict[str, list[np.ndarray]] = {"connector": [], "source_id": [], "field": [], "value": []}

    def add(rows: pd.DataFrame, field: str, values: np.ndarray) -> None:
        # object arrays: a missing value stays None (a concat of frames would make the
        # column a datetime one, and None a NaT, as soon as one part holds times)
        cols["connector"].append(rows["connector"].to_numpy(dtype=object))
        cols["source_id"].append(rows["source_id"].to_numpy(dtype=object))
        cols["field"].append(np.full(len(rows), field, dtype=object))
        cols["value"].append(np.asarray(values, dtype=object))

    if len(written):
        w = written[key].astype(str).reset_index(drop=True)
        o = own.astype({k: str for k in key}).set_index(key)
        o = o[~o.index.duplicated(keep="last")].reindex(pd.MultiIndex.from_frame(w))
        sent_rows = written.reset_index(drop=True)
        # the rows of ``o`` are the written records': compared as their connector reads
        o_as_read = _as_read(
            o.reset_index(drop=True).assign(connector=w["connector"].to_numpy()),
            fields,
            reads_as,
        )
        sent_all = _folded_columns(sent_rows, fields)
        had_all = _folded_columns(o_as_read, [f for f in fields if f in o.columns])
        for f in fields:
            sent = sent_all[f].to_numpy()
            had = had_all[f].to_numpy() if f in o.columns else np.full(len(w), "")
            differ = (sent != "") & (sent != had)
            if differ.any():
                vals = (
                    o[f].to_numpy(dtype=object)[differ]
                    if f in o.columns
                    else np.full(int(differ.sum()), None, dtype=object)
                )
                add(w[differ], f, pd.Series(vals, dtype=object).where(pd.notna(vals), None))
        if "updated_at" in o.columns:
            # when each record last changed before the write, and what it held of what the
            # write did not send (see _held_times)
            add(w, "updated_at", o["updated_at"].to_numpy(dtype=object))
            # of the values as they are (a digest stored before ``reads_as`` still matches)
            add(w, UNSENT, _unsent_digest(o.reset_index(drop=True), sent_rows, fields))
    held = pd.DataFrame(
        {c: pd.Series(np.concatenate(v) if v else [], dtype=object) for c, v in cols.items()}
    )
    if written_entries.empty:
        return held, pd.DataFrame()
    we = written_entries.assign(slot=_slot_keys(written_entries).to_numpy())
    we["text"] = _entry_texts(written_entries).to_numpy()
    mine = own_entries
    if len(mine):
        mine = mine.assign(slot=_slot_keys(mine).to_numpy(), text=_entry_texts(mine).to_numpy())
        mine = mine[mine["slot"].isin(set(we["slot"]))]
    sig_w = we.groupby("slot")["text"].agg(lambda t: "\x1d".join(sorted(t)))
    sig_o = (
        mine.groupby("slot")["text"].agg(lambda t: "\x1d".join(sorted(t)))
        if len(mine)
        else pd.Series(dtype=object)
    )
    changed = sig_w.index[sig_w.to_numpy() != sig_o.reindex(sig_w.index).fillna("").to_numpy()]
    if not len(changed):
        return held, pd.DataFrame()
    back = mine[mine["slot"].isin(set(changed))] if len(mine) else pd.DataFrame()
    empty = sorted(set(changed) - set(back["slot"]) if len(back) else set(changed))
    first = we.drop_duplicates("slot").set_index("slot")
    blank = first.loc[empty, SLOT].reset_index(drop=True).assign(held_empty=True)
    back = back.drop(columns=["slot", "text"]).assign(held_empty=False) if len(back) else back
    rows = [f for f in (back, blank) if len(f)]
    return held, pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


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
