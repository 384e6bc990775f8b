"""Every step of a delete is an event in the golden record's history (``golden_events``).

Field ``delete``; the value says the step: ``pending`` (gone from the source of truth),
``cancelled`` (back in it within the grace period), ``due`` (the grace period is over),
``queued <op>`` (a delete or archive queued for a target), ``deleted`` / ``archived`` (the
target acknowledged it), and ``gone from target`` (deleted there by someone else: never
created there again). ``connector`` names the system of the step. The event carries the
golden record's current version (a delete step changes no golden field), or a retired
record's last one.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from sqlalchemy.engine import Engine

from custsync_pipeline.store import core
from custsync_pipeline.store.bulk import insert_frame

DELETE_FIELD = "delete"


def record_delete_events(
    engine: Engine, golden_ids: Iterable[str], step: str, connector: str
) -> int:
    """Append one ``delete`` event per golden id; returns how many."""
    ids = pd.Series(sorted({str(g) for g in golden_ids}), dtype=object)
    if ids.empty:
        return 0
    versions = core.golden_versions(engine, ids)
    frame = pd.DataFrame(
        {
            "golden_id": ids,
            "version": ids.map(versions).fillna(0).astype("int64"),
            "field": DELETE_FIELD,
            "old_value": None,
            "new_value": step,
            "connector": connector,
            "at": pd.Timestamp(core.utcnow()),
        }
    )
    with engine.begin() as conn:
        insert_frame(conn, core.golden_events, frame)
    return len(frame)
