"""What custsync wrote to the records it created in each target, read the way the target's
records are read (``domain.echo``): the canonical rows and aspect entries of the last
acknowledged payload of each."""

import json

import pandas as pd
from sqlalchemy.engine import Engine

from custsync_pipeline.connectors.common import records_frame
from custsync_pipeline.store import core

# the names a vendor API gives its record id (the written record's id goes under each)
_ID_FIELDS = ("id", "Id", "ID")


def written_canonical(
    engine: Engine, connectors: dict
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(canonical rows, aspect entries, connectors that could not be read) of the payloads
    each target acknowledged, keyed by the target's record id (``source_id``). Deletes and
    archives are no values; a connector whose mapping cannot read its own payloads is
    named, and its records are taken as they are."""
    rows: list[pd.DataFrame] = []
    entries: list[pd.DataFrame] = []
    unreadable: list[str] = []
    for name, connector in connectors.items():
        box = core.load_outbox(engine, name, statuses=["acked"])
        box = box[
            (box["op"] == "upsert")
            & box["target_id"].notna()
            & ~box["payload_hash"].astype(str).str.startswith("archive:")
        ]
        # records custsync created there: every value they hold came from custsync, until
        # someone edits them there (a record it only updated keeps its own evidence: a
        # value it already held and custsync wrote again is still its word)
        created = set(box.loc[box["entity_key"].astype(str).str.startswith("new:"), "target_id"])
        box = box[box["target_id"].isin(created)]
        if box.empty:
            continue
        # the newest write of a record last (a create, then updates of what it created)
        box = box.sort_values("updated_at", kind="stable")
        raw = records_frame([json.loads(p) for p in box["payload"]])
        for col in _ID_FIELDS:
            raw[col] = box["target_id"].astype(str).to_numpy()
        try:
            canon = connector.to_canonical(raw)
            aspects = connector.to_aspects(raw)
        except Exception:  # noqa: BLE001 - echo safety is best effort per connector
            unreadable.append(name)
            continue
        canon = canon.assign(connector=name, source_id=box["target_id"].astype(str).to_numpy())
        rows.append(canon)
        if len(aspects):
            entries.append(aspects.assign(connector=name))
    return (
        pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(),
        pd.concat(entries, ignore_index=True) if entries else pd.DataFrame(),
        unreadable,
    )
