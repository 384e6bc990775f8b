"""A pull that is the one stored last is not validated and stored again.

Lanes often read what they read last time: a nightly export rewritten with the same rows,
a reconciliation's full snapshot of a target nobody touched, a feed without change times
that hands over everything on every run. Normalizing, validating and comparing every row
with the stored copy to find that nothing changed is most of such a run, so the canonical
step remembers, per lane, a key of what decided its last stored result: the raw rows and
the deleted ids the pull reported (a digest of every value), the lane's plan (mapping,
gates, aspects) and the code that normalizes, validates and stores (a digest of its
modules). Storing a pull again on the state it produced is a no-op (a snapshot replaces
with the same rows, an upsert writes what is there, a delete removes what is gone), so
when a pull has that key, the state DB still holds that result (the lane's record count
is the stored one) and the step's previous outputs are still on disk, the step reports
the stored figures again (``pull_unchanged: true``), moves the watermark, and leaves the
records, entries, quarantine and outputs as they are. One exception: a full snapshot after
an incremental pull of the same rows is not a no-op (it removes what the snapshot lacks),
so it validates. Anything else (a changed row, a new rule, an upgrade, a day window of
``<c>/changes``, an erasure by ``custsync forget``, which clears every key) validates as
usual.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine

from custsync_pipeline.defs.extract.pulls import FULL
from custsync_pipeline.store import core
from custsync_pipeline.store.bulk import (
    code_digest,
    frame_digest,
    inputs_key,
    save_digest,
    stored_digest,
)

REPLAY_PREFIX = "lane_pull:"
# the modules whose code decides what a pull validates and stores
CODE_MODULES = (
    "custsync_pipeline.domain.canonical",
    "custsync_pipeline.domain.normalize",
    "custsync_pipeline.domain.received",
    "custsync_pipeline.domain.schemas",
    "custsync_pipeline.domain.validate",
    "custsync_pipeline.domain.validate_aspects",
    "custsync_pipeline.defs.extract.assets",
    "custsync_pipeline.defs.extract.pulls",
    "custsync_pipeline.store.core",
    "custsync_pipeline.store.golden",
    "custsync_pipeline.store.quarantine",
)


def pull_key(
    raw: pd.DataFrame,
    deleted_ids: Iterable[str],
    lane: object,
    aspects: tuple[str, ...],
    connector_module: str,
) -> str:
    """What decides a pull's stored result: its rows and deleted ids, the lane's plan and
    stored aspects, the code."""
    return inputs_key(
        _rows_digest(raw),
        sorted(str(i) for i in deleted_ids),
        repr(lane),
        aspects,
        code_digest((*CODE_MODULES, connector_module)),
    )


def _rows_digest(raw: pd.DataFrame) -> str:
    try:
        return frame_digest(raw)
    except TypeError:  # nested JSON (lists, dicts) in a vendor's rows: hash their text
        nested = raw.select_dtypes(include="object").columns
        return frame_digest(raw.astype(dict.fromkeys(nested, str)))


def unchanged_pull(
    engine: Engine, connector: str, key: str, incremental: bool
) -> dict[str, Any] | None:
    """The figures of the lane's last stored pull when ``key`` is its key, storing this
    pull again would change nothing, and the state DB still holds that result; else None.
    (The step also checks that its last outputs are still on disk.)"""
    stored = stored_digest(engine, REPLAY_PREFIX + connector)
    if not stored:
        return None
    saved = json.loads(stored)
    if saved.get("key") != key:
        return None
    if not incremental and saved.get("mode") != FULL:
        return None  # a snapshot removes what an incremental pull of the same rows kept
    if core.source_record_counts(engine, connector).get(connector, 0) != saved.get("rows"):
        return None  # the stored records moved since (an erasure, a write found one gone)
    return saved


def remember_pull(
    engine: Engine,
    connector: str,
    key: str,
    mode: str,
    metadata: dict[str, Any],
    rejected_metadata: dict[str, Any],
) -> None:
    """Store the key and figures of a pull that passed its gate and was stored."""
    rows = core.source_record_counts(engine, connector).get(connector, 0)
    body = {
        "key": key,
        "mode": mode,
        "rows": rows,
        "metadata": metadata,
        "rejected": rejected_metadata,
    }
    with engine.begin() as conn:
        save_digest(conn, REPLAY_PREFIX + connector, json.dumps(body, default=_plain))


def forget_pull(engine: Engine, connector: str) -> None:
    """Records were stored another way (a day window), or a pull was not stored (its gate
    held): the next pull validates again."""
    if stored_digest(engine, REPLAY_PREFIX + connector) is not None:
        with engine.begin() as conn:
            save_digest(conn, REPLAY_PREFIX + connector, "{}")


def _plain(value: object) -> object:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return list(value)
    return str(value)
