"""Delta computation: which golden records must be written to a target, and how.

For each golden record and target: the target's members (records of that
golden id living in the target) are updated when what they hold differs from
the golden values — fields, and the aspects the target takes, compared in the
target's own shape (a Contact holds two addresses: a golden record with three
compares on the two it can hold); a golden record with no member there is
created, keyed by its golden id. A create already acknowledged with the same payload hash is
not sent again, so a rerun on unchanged data publishes nothing; but the ledger never hides
drift: a member whose fields differ from the golden values is updated whatever was
acknowledged before (someone changed it by hand in the target since). Each delta carries
the golden ``version`` it was computed from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from custsync_pipeline.domain.aspects import ASPECT_COLUMNS
from custsync_pipeline.domain.golden import field_strings, row_hash

DELTA_COLUMNS = ["entity_key", "golden_id", "target_id", "op", "payload_hash", "golden_version"]


def hold_back(
    golden: pd.DataFrame, kinds: Sequence[str] | None, required: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The golden records a target can take, and how many were held back, by reason.

    A target may take only some kinds (Salesforce Contacts are people) and refuse
    records without a field (a Contact needs a LastName): sending those would
    only dead-letter them.
    """
    keep = pd.Series(True, index=golden.index)
    reasons: dict[str, int] = {}
    if kinds is not None:
        wrong_kind = ~golden["kind"].isin(list(kinds))
        reasons["kind_not_taken"] = int(wrong_kind.sum())
        keep &= ~wrong_kind
    for fld in required:
        missing = keep & golden[fld].isna()
        reasons[f"missing_{fld}"] = int(missing.sum())
        keep &= ~missing
    return golden[keep], reasons


def compute_deltas(
    golden: pd.DataFrame,
    members: pd.DataFrame,
    fields: Sequence[str],
    acked: pd.DataFrame,
    writable_types: Sequence[str] | None = None,
    aspect_hashes: pd.Series | None = None,
    member_aspect_hashes: pd.Series | None = None,
    member_want_hashes: pd.Series | None = None,
    empty_reads_as: Mapping[str, str] | None = None,
    withdrawn: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Upsert deltas for one target.

    ``golden``: golden_id + fields. ``members``: the target's current records
    (golden_id, source_id, + fields, canonical). ``acked``: the ledger
    (entity_key, acked_hash). ``writable_types``: the member object types the
    target's writes address (Salesforce writes Contacts): a member of another
    type (a Lead, an Account) is left alone, and its golden record is not
    created again beside it. Returns ``DELTA_COLUMNS`` rows, one per entity to
    write: ``entity_key`` is the member's id, or ``new:<golden_id>`` for a create;
    ``golden_version`` is ``golden``'s ``version`` column when it has one.

    The ledger suppresses a delta of an already acknowledged payload hash only when the
    target's current record does not contradict it: a member whose fields differ from
    the golden values (drift) is always updated.

    ``aspect_hashes`` (golden_id -> hash) and ``member_aspect_hashes`` (member
    source_id -> hash) are :func:`aspect_payload_hashes` of the aspects the target
    takes; an empty golden aspect payload (``EMPTY_ASPECTS``) is never a difference,
    as an empty field is not. ``member_want_hashes`` (member source_id -> hash): what
    each member should hold of the aspects (:func:`member_views`: its own entries kept in
    the target's slots); an update's payload hash is then the member's own.
    ``empty_reads_as`` (field -> value): what a member whose field reads empty holds as the
    target stores it (a Salesforce Contact not opted out holds e-mail consent "yes").
    ``withdrawn`` (source_id, field): member values custsync wrote that the golden record
    no longer holds (:func:`withdrawn_values`): the member is updated to hold none.
    """
    fields = list(fields)
    present = members["golden_id"]
    if writable_types is not None:
        members = members[members["object_type"].isin(list(writable_types))]
    g = golden[["golden_id", *fields]].reset_index(drop=True)
    version = (
        golden["version"].reset_index(drop=True)
        if "version" in golden
        else pd.Series(pd.NA, index=g.index)
    )
    g_str = field_strings(g, fields)
    hashed = fields
    if aspect_hashes is not None:
        g["aspects_hash"] = g["golden_id"].map(aspect_hashes).fillna(EMPTY_ASPECTS)
        hashed = [*fields, "aspects_hash"]
    g["payload_hash"] = row_hash(g, hashed)

    # updates: a member differs from what it would hold after receiving the
    # golden values (golden fields that are empty are never sent, so they keep
    # the member's value)
    m = members[["golden_id", "source_id", *fields]].merge(
        g[["golden_id", "payload_hash"]], on="golden_id"
    )
    for fld, value in (empty_reads_as or {}).items():
        if fld in fields:
            m[fld] = m[fld].astype(object).where(m[fld].notna(), value)
    upd = pd.DataFrame()
    if not m.empty:
        m_str = field_strings(m, fields)
        g_for_m = g_str.set_index(g["golden_id"]).loc[m["golden_id"]].reset_index(drop=True)
        expected = g_for_m.where(g_for_m != "", m_str.reset_index(drop=True))
        if withdrawn is not None and len(withdrawn):
            for fld, part in withdrawn.groupby("field"):
                if fld in expected.columns:
                    hit = m["source_id"].astype(str).isin(set(part["source_id"].astype(str)))
                    expected.loc[hit.to_numpy(), fld] = ""
        differs = (expected != m_str.reset_index(drop=True)).any(axis=1).to_numpy()
        drift = differs.copy()  # field drift: never hidden by the ledger
        if aspect_hashes is not None:
            want = m["golden_id"].map(aspect_hashes).fillna(EMPTY_ASPECTS)
            if member_want_hashes is not None:
                want = m["source_id"].map(member_want_hashes).fillna(want)
                own = g.set_index("golden_id").loc[m["golden_id"]].reset_index()
                own["aspects_hash"] = want.to_numpy()
                m["payload_hash"] = row_hash(own, hashed).to_numpy()
            have = m["source_id"].map(
                member_aspect_hashes if member_aspect_hashes is not None else {}
            )
            have = have.fillna(EMPTY_ASPECTS)
            differs |= ((want != EMPTY_ASPECTS) & (want != have)).to_numpy()
        upd = m.loc[differs, ["golden_id", "source_id", "payload_hash"]].rename(
            columns={"source_id": "target_id"}
        )
        upd["entity_key"] = upd["target_id"]
        upd["op"] = "upsert"
        upd["drift"] = drift[differs]

    # creates: golden records with no member in the target
    missing = g[~g["golden_id"].isin(present)]
    new = pd.DataFrame(
        {
            "golden_id": missing["golden_id"],
            "target_id": pd.Series([None] * len(missing), index=missing.index, dtype="object"),
            "payload_hash": missing["payload_hash"],
            "entity_key": "new:" + missing["golden_id"].astype(str),
            "op": "upsert",
            "drift": False,
        }
    )
    parts = [d for d in (upd, new) if not d.empty]
    if not parts:
        return pd.DataFrame(columns=DELTA_COLUMNS)
    deltas = pd.concat(parts, ignore_index=True)
    deltas["golden_version"] = deltas["golden_id"].map(
        pd.Series(version.to_numpy(), index=g["golden_id"].to_numpy())
    )
    # drop what the target already acknowledged with this exact payload, unless the
    # target's current record shows it no longer holds it
    if not acked.empty:
        ack = acked[["entity_key", "acked_hash"]].drop_duplicates("entity_key", keep="last")
        deltas = deltas.merge(ack, on="entity_key", how="left")
        deltas = deltas[
            deltas["acked_hash"].isna()
            | (deltas["acked_hash"] != deltas["payload_hash"])
            | deltas["drift"].astype(bool)
        ]
    return deltas[DELTA_COLUMNS].reset_index(drop=True)


def _comparable(values: pd.Series) -> pd.Series:
    """A value as a member's and a written payload's read compare it: numbers as numbers,
    text without case or surrounding space ("" for missing)."""
    numbers = pd.to_numeric(values, errors="coerce")
    text = _folded_keys(values).fillna("")
    return text.where(numbers.isna(), numbers.astype("float64").astype("string"))


def withdrawn_values(
    golden: pd.DataFrame, members: pd.DataFrame, written: pd.DataFrame, fields: Sequence[str]
) -> pd.DataFrame:
    """(source_id, field) of the members' values that custsync wrote there (``written``:
    its last acknowledged payload to each, read as the target's records are) and that the
    golden record no longer holds — a loyalty tier whose member the loyalty platform
    deleted. A value the target's users set, or one custsync wrote and they changed since,
    is theirs: never withdrawn."""
    out = pd.DataFrame(columns=["source_id", "field"])
    fields = [f for f in fields if f in members.columns and f in golden.columns]
    if not fields or members.empty or written.empty:
        return out
    m = members[["golden_id", "source_id", *fields]].merge(
        golden[["golden_id", *fields]], on="golden_id", suffixes=("", "__golden")
    )
    wrote = (
        written.assign(source_id=written["source_id"].astype(str))
        .drop_duplicates("source_id", keep="last")
        .set_index("source_id")
    )
    sid = m["source_id"].astype(str)
    parts = []
    for fld in fields:
        if fld not in wrote.columns:
            continue
        have = _comparable(m[fld])
        ours = _comparable(sid.map(wrote[fld]))
        gone = m[f"{fld}__golden"].isna() | (m[f"{fld}__golden"].astype("string") == "")
        hit = (gone & (have != "") & (have == ours)).to_numpy()
        parts.append(pd.DataFrame({"source_id": sid[hit].to_numpy(), "field": fld}))
    return pd.concat(parts, ignore_index=True) if parts else out


def clear_withdrawn(
    deltas: pd.DataFrame,
    withdrawn: pd.DataFrame,
    cleared_key: Callable[[str], str | None],
    dumps: Callable[[dict], str],
) -> pd.DataFrame:
    """Each update's payload (``payload`` JSON) with a null for every withdrawn value of
    its member, under the key ``cleared_key`` gives the field (None: not sent)."""
    if deltas.empty or withdrawn is None or withdrawn.empty:
        return deltas
    keyed = withdrawn.groupby(withdrawn["source_id"].astype(str))["field"].agg(list)
    hit = deltas["entity_key"].astype(str).map(keyed)
    at = hit.notna().to_numpy().nonzero()[0]
    if not len(at):
        return deltas
    out = deltas.copy()
    payloads = []
    for text, fields in zip(out["payload"].iloc[at], hit.iloc[at], strict=True):
        body = json.loads(text)
        # a key the body already fills (an address block an entry gives) keeps its value
        body.update({k: None for f in fields if (k := cleared_key(f)) and body.get(k) is None})
        payloads.append(dumps(body))
    out.loc[out.index[at], "payload"] = payloads
    return out


EMPTY_ASPECTS = "-"


def entry_lists(entries: pd.DataFrame, aspect: str, by: str = "golden_id") -> pd.Series:
    """``by`` -> the entries of ``aspect`` as a list of dicts (the aspect's columns plus
    ``entry_key``/``parent_key``, missing values left out), ordered by entry key: the
    shape a connector's ``from_canonical`` receives in the aspect's column."""
    sub = entries[entries["aspect"] == aspect]
    if sub.empty:
        return pd.Series(dtype=object)
    cols = ["entry_key", "parent_key", *ASPECT_COLUMNS[aspect]]
    sub = sub.sort_values([by, "entry_key"])
    values = sub[cols].astype(object).where(sub[cols].notna(), None)
    dicts = [{k: v for k, v in r.items() if v is not None} for r in values.to_dict("records")]
    return pd.Series(dicts, index=sub[by].to_numpy()).groupby(level=0, sort=False).agg(list)


def aspect_payload_hashes(
    frame: pd.DataFrame,
    aspects: Sequence[str],
    to_payloads: Callable[[pd.DataFrame], list[dict]],
    key: str = "golden_id",
) -> pd.Series:
    """``key`` -> a hash of what the target would hold of ``aspects`` (its payload built
    from the aspect columns alone, case and spacing folded); ``EMPTY_ASPECTS`` when that
    payload is empty."""
    if frame.empty or not aspects:
        return pd.Series(dtype="string")
    only = frame[list(aspects)].copy()
    for a in aspects:  # a record without entries holds an empty list, not a missing value
        only[a] = [v if isinstance(v, list) else [] for v in only[a]]
    blank = pd.DataFrame({a: [[]] for a in aspects})
    payloads = to_payloads(pd.concat([blank, only], ignore_index=True))
    texts = [json.dumps(p, sort_keys=True, default=str) for p in payloads]
    text = pd.Series(texts[1:], index=frame[key].to_numpy(), dtype="string")
    # the same address typed two ways is one entry: case and spacing are no difference
    # worth a write (nor a reason for two targets to echo each other's spelling)
    text = text.str.replace(r"\s+", "", regex=True).str.casefold()
    hashed = row_hash(text.to_frame("p"), ["p"])
    blank_text = "".join(texts[0].split()).casefold()
    return hashed.where(text != blank_text, EMPTY_ASPECTS)


def member_views(
    golden: pd.DataFrame, members: pd.DataFrame, aspects: Sequence[str]
) -> pd.DataFrame:
    """One row per member (``source_id``, indexed by it): its golden record's fields and
    aspect entries, ordered: the golden record's primary entry (the one its single-valued
    fields of the same names hold: the address its ``city`` and ``postal_code`` are)
    first, then the entries the member itself holds (``members``' aspect columns), then
    the rest. A target with fewer slots than a golden record has entries (a Contact's
    Mailing and Other address) then holds the golden primary entry, as its flat fields do,
    and keeps a member's own other entries in its other slots instead of trading them for
    others: two duplicates of one person keep their own second address, and no write
    takes away the only copy of an entry."""
    view = members[["source_id", "golden_id"]].merge(golden, on="golden_id", how="inner")
    held = members.set_index("source_id")
    for a in aspects:
        mine = view["source_id"].map(held[a]) if a in held.columns else None
        lists = [v if isinstance(v, list) else [] for v in view[a]]
        if mine is None:
            view[a] = lists
            continue
        shared = [c for c in ASPECT_COLUMNS.get(a, ()) if c in view.columns]
        flat = (
            view[shared].astype(object).where(view[shared].notna(), None).to_dict("records")
            if shared
            else [{}] * len(view)
        )
        keys = [
            {e.get("entry_key") for e in own} if isinstance(own, list) else set() for own in mine
        ]
        view[a] = [
            _member_order(entries, k, f) if k else entries
            for entries, k, f in zip(lists, keys, flat, strict=True)
        ]
    return view.set_index("source_id", drop=False)


def _member_order(entries: list[dict], held: set, flat: dict) -> list[dict]:
    """``entries`` with the golden primary one (the first the flat fields hold) first, then
    those in ``held``, then the rest, each group in golden order."""
    primary = next((i for i, e in enumerate(entries) if _is_primary(e, flat)), None)
    order = sorted(
        range(len(entries)),
        key=lambda i: (i != primary, entries[i].get("entry_key") not in held),
    )
    return [entries[i] for i in order]


def _is_primary(entry: dict, flat: dict) -> bool:
    """Whether ``entry`` is what the golden record's single-valued fields of the same names
    hold (every one of them that has a value, and at least one)."""
    compared = [(entry.get(c), v) for c, v in flat.items() if v is not None]
    return bool(compared) and all(
        str(e or "").replace(" ", "").casefold() == str(v).replace(" ", "").casefold()
        for e, v in compared
    )


def attach_payloads(
    deltas: pd.DataFrame,
    golden: pd.DataFrame,
    to_payloads: Callable[[pd.DataFrame], list[dict]],
    dumps: Callable[[dict], str],
    members: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Add the target-shaped JSON payload of each delta's golden record (an update's from
    its member's view, :func:`member_views`, when ``members`` holds it)."""
    if deltas.empty:
        return deltas.assign(payload=pd.Series([], dtype="object"))
    rows = golden.set_index("golden_id").loc[deltas["golden_id"]].reset_index()
    if members is not None and len(members):
        key = deltas["entity_key"].astype(str)
        mine = key.isin(members.index).to_numpy()
        if mine.any():
            view = members.loc[key[mine], rows.columns].reset_index(drop=True)
            rows = rows.astype(object)
            rows.iloc[mine.nonzero()[0]] = view.to_numpy(dtype=object)
    payloads = to_payloads(rows)
    out = deltas.copy()
    out["payload"] = [dumps(p) for p in payloads]
    return out


def _folded_keys(values: pd.Series) -> pd.Series:
    """Key values as a target keyed by them compares them: trimmed, case-folded."""
    return values.astype("string").str.strip().str.casefold()


def key_clashes(golden: pd.DataFrame, members: pd.DataFrame, key_field: str | None) -> pd.DataFrame:
    """(golden_id, source_id, field) of each target record an update must not give its
    golden record's ``key_field`` value (unique there, compared trimmed and case-folded):
    another of the target's records holds it already (two Voyado contacts of one person,
    left by a merge: the one with the e-mail keeps it), or another update would give it
    too (the first by source id gets it). Such a record keeps its own value: deltas accept
    it (no write to change it, none on every run) and the payload leaves the field out."""
    if (
        key_field is None
        or members.empty
        or key_field not in golden.columns
        or key_field not in members.columns
    ):
        return pd.DataFrame(columns=["golden_id", "source_id", "field"])
    values = golden.drop_duplicates("golden_id").set_index("golden_id")[key_field]
    want = _folded_keys(members["golden_id"].map(values)).fillna("")
    have = _folded_keys(members[key_field]).fillna("")
    change = ((want != "") & (want != have)).to_numpy()
    taken = want.isin(set(have[have != ""])).to_numpy()
    order = np.argsort(members["source_id"].astype(str).to_numpy(), kind="stable")
    first = np.zeros(len(members), dtype=bool)
    free = np.flatnonzero(change & ~taken)
    if len(free):
        ranked = order[np.isin(order, free)]
        first[ranked[~pd.Series(want.to_numpy()[ranked]).duplicated().to_numpy()]] = True
    clash = change & (taken | ~first)
    out = members.loc[clash, ["golden_id", "source_id"]].astype(str)
    return out.assign(field=key_field).reset_index(drop=True)


def hold_taken_keys(
    deltas: pd.DataFrame, golden: pd.DataFrame, members: pd.DataFrame, key_field: str | None
) -> tuple[pd.DataFrame, int]:
    """Creates the target could not make: its records are keyed by ``key_field`` (unique
    there, compared trimmed and case-folded), so a create whose value one of its records
    already holds (a member of another golden record) would fail, or overwrite someone
    else's record, and creates sharing a value would land on one record. Those creates are
    dropped; returns (the rest, how many were dropped)."""
    if key_field is None or deltas.empty or key_field not in golden.columns:
        return deltas, 0
    creates = deltas["entity_key"].astype(str).str.startswith("new:").to_numpy()
    values = golden.drop_duplicates("golden_id").set_index("golden_id")[key_field]
    value = _folded_keys(deltas["golden_id"].map(values)).where(creates)
    held = (
        _folded_keys(members[key_field]).dropna()
        if key_field in members.columns
        else pd.Series(dtype="string")
    )
    taken = value.isin(set(held)).fillna(False).to_numpy()
    shared = (value.notna() & value.duplicated(keep=False)).to_numpy()
    drop = creates & (taken | shared)
    return deltas[~drop].reset_index(drop=True), int(drop.sum())
