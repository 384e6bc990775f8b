"""``target_presence`` on a real SQLite state DB: a golden id that leaves a target is gone
from it (a delete there, or a pending delete at the source of truth), but one merged into
another golden id did not leave: its members moved to the survivor."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from custsync_pipeline.store import presence
from custsync_pipeline.store.db import StateDB
from custsync_pipeline.store.identity import golden_ids


def _golden_ids(engine, merged: dict[str, str | None]) -> None:  # noqa: ANN001
    now = pd.Timestamp.now(tz="UTC").to_pydatetime()
    with engine.begin() as conn:
        conn.execute(golden_ids.delete())
        conn.execute(
            golden_ids.insert(),
            [
                {
                    "golden_id": g,
                    "created_at": now,
                    "merged_into": into,
                    "merged_at": now if into else None,
                }
                for g, into in merged.items()
            ],
        )


def test_a_merged_golden_id_is_not_gone_and_a_removed_one_is(tmp_path: Path) -> None:
    engine = StateDB(f"sqlite:///{tmp_path / 'state.sqlite'}").create_all().engine
    key = presence.SOURCE_PREFIX + "salesforce"
    _golden_ids(engine, {"GA": None, "GB": None, "GC": None})
    assert presence.record_presence(engine, key, ["GA", "GB", "GC"]) == set()

    # GA is merged into GB; GC's only Contact is deleted
    _golden_ids(engine, {"GA": "GB", "GB": None, "GC": None})
    gone = presence.record_presence(engine, key, ["GB"])
    assert gone == {"GC"}
    runs = presence.gone_runs(engine, key)
    assert runs.to_dict() == {"GC": 1}
    # the next run counts GC's grace period on; GA never becomes a pending delete
    assert presence.record_presence(engine, key, ["GB"]) == {"GC"}
    assert presence.gone_runs(engine, key).to_dict() == {"GC": 2}
    held = pd.read_sql("select golden_id from target_presence", engine)["golden_id"]
    assert "GA" not in set(held)
    engine.dispose()
