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


def test_a_split_in_the_run_that_found_its_parent_gone_inherits_the_pending_delete(
    tmp_path: Path,
) -> None:
    """P held a Contact, then did not (pending delete). C1 split off P in that run: it
    inherits; C2 split off later (a steward's cannot-link in the grace period) and C3
    before the Contact went do not; C4 split off C1 in that run too (transitive). P back:
    its children are back too."""
    import time

    engine = StateDB(f"sqlite:///{tmp_path / 'state.sqlite'}").create_all().engine
    key = presence.SOURCE_PREFIX + "salesforce"
    records = pd.DataFrame({"golden_id": ["P", "X"], "source_id": ["c1", "x1"]})
    _golden_ids(engine, {"P": None, "X": None})
    presence.record_presence(engine, key, records["golden_id"], records)
    before = pd.Timestamp.now(tz="UTC").to_pydatetime()
    time.sleep(1.2)
    splits = pd.Timestamp.now(tz="UTC").to_pydatetime()
    with engine.begin() as conn:
        conn.execute(
            golden_ids.insert(),
            [
                {"golden_id": g, "created_at": at, "split_from": parent, "split_at": at}
                for g, parent, at in (
                    ("C1", "P", splits),
                    ("C3", "P", before - pd.Timedelta(hours=1)),
                    ("C4", "C1", splits),
                )
            ],
        )
    time.sleep(1.2)
    # the run that finds the Contact gone (its record deleted: held by nobody)
    left = records[records["golden_id"] == "X"]
    presence.record_presence(engine, key, left["golden_id"], left)
    assert sorted(presence.inherit_gone(engine, key, left["golden_id"])) == ["C1", "C4"]
    runs = presence.gone_runs(engine, key)
    assert sorted(runs.index) == ["C1", "C4", "P"]
    # a split of P made in a later run inherits nothing
    time.sleep(1.2)
    late = pd.Timestamp.now(tz="UTC").to_pydatetime()
    with engine.begin() as conn:
        conn.execute(
            golden_ids.insert(),
            [{"golden_id": "C2", "created_at": late, "split_from": "P", "split_at": late}],
        )
    presence.record_presence(engine, key, left["golden_id"], left)
    assert presence.inherit_gone(engine, key, left["golden_id"]) == []
    assert sorted(presence.gone_runs(engine, key).index) == ["C1", "C4", "P"]
    # the person is back in Salesforce (P holds a Contact again): so are its children
    back = pd.DataFrame({"golden_id": ["P", "X"], "source_id": ["c9", "x1"]})
    presence.record_presence(engine, key, back["golden_id"], back)
    presence.inherit_gone(engine, key, back["golden_id"])
    assert presence.gone_runs(engine, key).empty
