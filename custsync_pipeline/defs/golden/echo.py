"""What custsync wrote to each target, read the way the target's records are read
(``domain.echo``): the canonical rows and aspect entries of the last acknowledged payload
of each record, and what an updated record held before the write changed it."""

import json
from collections.abc import Iterable

import pandas as pd
from sqlalchemy.engine import Engine

from custsync_pipeline.connectors.common import is_missing, jsonable, records_frame
from custsync_pipeline.domain.echo import ECHO_FIELDS, held_before, own_word
from custsync_pipeline.store import core

# the names a vendor API gives its record id (the written record's id goes under each)
_ID_FIELDS = ("id", "Id", "ID")


def read_payloads(
    connector: object, name: str, payloads: Iterable[str], target_ids: Iterable[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(canonical rows, aspect entries) of JSON ``payloads`` sent to the records
    ``target_ids`` of ``name``, read by the connector's own mapping (as its records are)."""
    ids = pd.Series(list(target_ids), dtype=object).astype(str)
    raw = records_frame([json.loads(p) for p in payloads])
    for col in _ID_FIELDS:
        raw[col] = ids.to_numpy()
    if hasattr(connector, "written_rows"):  # what the payload alone does not say (its type)
        raw = connector.written_rows(raw)
    canon = connector.to_canonical(raw)
    # a value the payload sent that reads back as no fact (HasOptedOutOfEmail=false: no
    # consent read) is what the connector's empty value holds (``empty_reads_as``)
    key_of = getattr(connector, "cleared_key", None)
    for field, value in (getattr(connector, "empty_reads_as", None) or {}).items():
        key = key_of(field) if key_of else None
        if key in raw.columns and field in canon.columns:
            sent = raw[key].notna().to_numpy() & canon[field].isna().to_numpy()
            if sent.any():
                canon[field] = canon[field].astype(object)
                canon.loc[sent, field] = value
    aspects = connector.to_aspects(raw)
    canon = canon.assign(connector=name, source_id=ids.to_numpy())
    if len(aspects):
        aspects = aspects.assign(connector=name)
    return canon, aspects


def held_frames(box: pd.DataFrame, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(connector, source_id, field, value) and slot entries of the ``held`` column of
    outbox rows: what each updated record held before its write changed it."""
    rows = box[box["held"].notna()] if "held" in box.columns else box.iloc[:0]
    fields: list[dict] = []
    entries: list[dict] = []
    for target_id, text in zip(rows["target_id"].astype(str), rows["held"], strict=True):
        held = json.loads(text)
        fields += [
            {"connector": name, "source_id": target_id, "field": f, "value": v}
            for f, v in held.get("fields", {}).items()
        ]
        entries += [
            {**e, "connector": name, "source_id": target_id} for e in held.get("entries", [])
        ]
    held_entries = pd.DataFrame(entries)
    if "seen_at" in held_entries.columns:
        held_entries["seen_at"] = pd.to_datetime(held_entries["seen_at"], utc=True, format="mixed")
    return pd.DataFrame(fields, columns=["connector", "source_id", "field", "value"]), held_entries


def held_json(held: pd.DataFrame, held_entries: pd.DataFrame) -> pd.Series:
    """source_id -> the ``held`` JSON of its outbox row (``domain.echo.held_before``)."""
    out: dict[str, dict] = {}
    for r in held.itertuples(index=False):
        out.setdefault(str(r.source_id), {}).setdefault("fields", {})[r.field] = (
            None if is_missing(r.value) else jsonable(r.value)
        )
    if len(held_entries):
        cols = [c for c in held_entries.columns if c not in ("connector", "source_id")]
        frame = held_entries[cols].astype(object).where(held_entries[cols].notna(), None)
        for sid, e in zip(
            held_entries["source_id"].astype(str), frame.to_dict("records"), strict=True
        ):
            entry = {k: jsonable(v) for k, v in e.items() if not is_missing(v)}
            out.setdefault(sid, {}).setdefault("entries", []).append(entry)
    return pd.Series(
        {k: json.dumps(v, sort_keys=True, default=str) for k, v in out.items()}, dtype=object
    )


def acked_writes(
    box: pd.DataFrame, connector: object, name: str
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(canonical rows with ``created``, entries, held values, held entries) of the last
    acknowledged upsert of each record in outbox rows ``box`` of target ``name`` (the
    ledger columns: a row queued again since keeps what the target holds); raises when
    the connector cannot read its own payloads."""
    box = box.copy()
    if "acked_payload" not in box.columns:
        box["acked_payload"] = box["acked_held"] = None
    # a row acknowledged before the ledger kept its payload: the payload is the ack's
    legacy = box["acked_payload"].isna() & (box["status"] == "acked")
    box.loc[legacy, "acked_payload"] = box.loc[legacy, "payload"]
    box.loc[legacy, "acked_held"] = box.loc[legacy, "held"] if "held" in box else None
    acked_hash = box["acked_hash"].astype("string").fillna("")
    box = box[
        box["acked_payload"].notna()
        & box["target_id"].notna()
        & ~acked_hash.str.startswith(("archive:", "delete"))
    ]
    if box.empty:
        return pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    created = set(box.loc[box["entity_key"].astype(str).str.startswith("new:"), "target_id"])
    # the newest write of each record only (a create, then updates of what it created)
    box = box.sort_values("updated_at", kind="stable").drop_duplicates("target_id", keep="last")
    box = box.assign(payload=box["acked_payload"], held=box["acked_held"])
    canon, aspects = read_payloads(connector, name, box["payload"], box["target_id"])
    held, held_entries = held_frames(box, name)
    canon = canon.assign(created=canon["source_id"].isin(created).to_numpy())
    return canon, aspects, held, held_entries


def reads_as(connectors: dict) -> dict[str, dict[str, str]]:
    """Per target, what an empty value of a golden field holds there as a write target
    (the connector's ``empty_reads_as``): echo compares through it."""
    return {
        name: dict(fills)
        for name, connector in connectors.items()
        if (fills := getattr(connector, "empty_reads_as", None))
    }


def written_canonical(
    engine: Engine, connectors: dict, keys: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """(canonical rows, aspect entries, held values, held entries, connectors that could
    not be read) of the payloads each target acknowledged, keyed by the target's record
    id (``source_id``); ``created`` tells a record custsync created there from one it
    updated (which keeps its own evidence: ``held``). Deletes and archives are no
    values; a connector whose mapping cannot read its own payloads is named, and its
    records are taken as they are. ``keys`` (connector, source_id): only the writes to
    those records."""
    parts: list[tuple[pd.DataFrame, ...]] = []
    unreadable: list[str] = []
    for name, connector in connectors.items():
        mine = None
        if keys is not None:  # only the writes to these records are read
            mine = keys.loc[keys["connector"].astype(str) == name, "source_id"].astype(str)
        box = core.load_outbox(engine, name, target_ids=mine)
        try:
            parts.append(acked_writes(box, connector, name))
        except Exception:  # noqa: BLE001 - echo safety is best effort per connector
            unreadable.append(name)
    frames = [
        pd.concat(f, ignore_index=True)
        if (f := [p[i] for p in parts if len(p[i])])
        else pd.DataFrame()
        for i in range(4)
    ]
    return (*frames, unreadable)


def held_for_updates(
    deltas: pd.DataFrame,
    connector: object,
    name: str,
    ledger: pd.DataFrame,
    members: pd.DataFrame,
    member_entries: pd.DataFrame,
) -> pd.Series:
    """The ``held`` JSON of each update in ``deltas`` (aligned with it; missing for the
    rest): what the record held, as its own word, of each value and slot its payload
    changes. Best effort: a connector that cannot read its payloads gets none."""
    out = pd.Series(None, index=deltas.index, dtype=object)
    if deltas.empty:
        return out
    upd = deltas[
        (deltas["op"] == "upsert")
        & deltas["target_id"].notna()
        & ~deltas["entity_key"].astype(str).str.startswith("new:")
        & ~deltas["payload_hash"].astype(str).str.startswith("archive:")
    ]
    if upd.empty:
        return out
    ids = set(upd["target_id"].astype(str))
    recs = members[members["source_id"].astype(str).isin(ids)]
    ents = (
        member_entries[member_entries["source_id"].astype(str).isin(ids)]
        if len(member_entries)
        else member_entries
    )
    try:
        before = acked_writes(ledger[ledger["target_id"].astype(str).isin(ids)], connector, name)
        fills = reads_as({name: connector})
        own, own_entries, _ = own_word(recs, ents, *before, ECHO_FIELDS, fills)
        sent, sent_entries = read_payloads(connector, name, upd["payload"], upd["target_id"])
    except Exception:  # noqa: BLE001 - echo safety is best effort per connector
        return out
    held = held_json(*held_before(own, own_entries, sent, sent_entries, ECHO_FIELDS, fills))
    out.loc[upd.index] = upd["target_id"].astype(str).map(held).to_numpy(dtype=object)
    return out


def own_records(
    engine: Engine, connectors: dict, records: pd.DataFrame
) -> tuple[pd.DataFrame, int, list[str]]:
    """``records`` as their own word (``domain.echo.own_word``) for what resolution reads:
    a value custsync wrote to a target record and reads back is no evidence that it is
    the person whose golden record it came from (else a wrong merge, once written out,
    holds through its own writes). Only the writes to these records are read. Returns
    (records, values set aside, targets whose payloads do not map back)."""
    if not connectors or records.empty:
        return records, 0, []
    mine = records["connector"].astype(str).isin(set(connectors)).to_numpy()
    if not mine.any():
        return records, 0, []
    keys = records.loc[mine, ["connector", "source_id"]]
    written, _, held, _, unreadable = written_canonical(engine, connectors, keys)
    out, _, n = own_word(
        records,
        pd.DataFrame(),
        written,
        pd.DataFrame(),
        held,
        pd.DataFrame(),
        ECHO_FIELDS,
        reads_as(connectors),
    )
    return out, n, unreadable
