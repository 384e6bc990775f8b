"""The golden merge redoes only what changed (issue 14): the merge queue, member digests,
and an incremental merge that leaves exactly what a merge of everything would.

- domain: ``member_digests`` ignore member order and see a member join or leave;
  ``golden_scope`` takes the golden ids of queued records, moved members and publishes,
  and asks for everything when a connector is queued whole or most records changed;
- store (a real SQLite file): a write queues the records it changed and nothing else,
  a snapshot of entries rewrites and queues only the records whose entries changed; the
  identity step's queue of member changes accounts for the map only while no write came
  between;
- over sockets: after edits, deletes and additions in four sandbox systems the next
  run merges a part of the golden records (the moved ones as the identity step queued
  them), and a merge of everything afterwards finds nothing left to change; a map write
  that queued nothing is found by the member digests.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from custsync_pipeline.domain.merge_scope import golden_scope, member_digests, moved_members
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core, merge_scope
from custsync_pipeline.store import golden as golden_store
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import (
    SANDBOX_SECRETS,
    materialize_all,
    metadata_of,
    run_against_sandbox,
)


def _map(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["connector", "source_id", "golden_id"])


def test_member_digests_see_membership_not_order():
    a = _map([("sf", "1", "G1"), ("vf", "2", "G1"), ("sf", "3", "G2")])
    b = a.iloc[::-1].reset_index(drop=True)
    assert member_digests(a).to_dict() == member_digests(b).to_dict()
    joined = _map([("sf", "1", "G1"), ("vf", "2", "G1"), ("sf", "3", "G1")])
    moved = member_digests(joined)
    assert moved["G1"] != member_digests(a)["G1"] and "G2" not in moved
    assert member_digests(a.iloc[:0]).empty


def test_golden_scope_takes_queued_moved_and_written_ids():
    before = _map([("sf", str(i), f"G{i}") for i in range(20)])
    stored = member_digests(before)
    now = before.copy()
    now.loc[now["source_id"] == "1", "golden_id"] = "G0"  # G1's only record joins G0
    none = pd.DataFrame({"connector": [], "source_id": []}, dtype=object)
    written = pd.DataFrame({"golden_id": ["G5"], "target": ["sf"], "target_id": ["7"]})
    queued = pd.DataFrame({"connector": ["sf", "vf"], "source_id": ["3", "unknown"]})
    moved = moved_members(member_digests(now), stored)
    assert moved == {"G0", "G1"}
    scope = golden_scope(now, moved, 20, queued, written)
    # G0 gained, G1 is gone, record 3 was written, G5 and record 7's G7 were published
    assert scope == {"G0", "G1", "G3", "G5", "G7"}
    assert golden_scope(before, set(), 20, none, written.iloc[:0]) == set()
    whole = pd.DataFrame({"connector": ["sf"], "source_id": [None]})
    assert golden_scope(before, set(), 20, whole, written.iloc[:0]) is None
    many = pd.DataFrame({"connector": "sf", "source_id": [str(i) for i in range(10)]})
    assert golden_scope(before, set(), 20, many, written.iloc[:0]) is None


def _canonical(ids: list[str], city: str) -> pd.DataFrame:
    return pd.DataFrame({"connector": "crm", "source_id": ids, "first_name": "Anna", "city": city})


def _entries(ids: list[str], street: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "connector": "crm",
            "source_id": ids,
            "aspect": "addresses",
            "entry_key": [f"k{i}" for i in ids],
            "street": street,
            "city": "Lund",
        }
    )


def _queued(engine: sa.Engine) -> list[str]:
    q = merge_scope.read_queue(engine)
    return sorted(q["source_id"].fillna("*").tolist())


def _golden_output() -> pd.DataFrame:
    """The golden output as the steps after the merge read it (from the IO manager's file
    under ``$DAGSTER_HOME``: a merge of a part rewrites it in place and hands no value)."""
    from custsync_pipeline.defs.golden.assets import GOLDEN_CUSTOMERS, OUTPUT_STAMP
    from custsync_pipeline.defs.io import ParquetIOManager

    out = ParquetIOManager().held_output(GOLDEN_CUSTOMERS)
    assert out is not None and out.attrs.get(OUTPUT_STAMP)
    return out


def _assert_output_is_stored(out: pd.DataFrame, engine: sa.Engine) -> pd.DataFrame:
    """The golden output holds every stored golden record, as stored (compared as text);
    returns the stored records."""
    stored = core.load_golden_records(engine).sort_values("golden_id")
    cols = [c for c in out.columns if c in stored.columns]
    assert len(cols) > 10 and "last_name" in cols and len(out) == len(stored)

    def text(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame[cols].astype("string").fillna("")
        return frame.sort_values("golden_id").reset_index(drop=True)

    pd.testing.assert_frame_equal(text(out), text(stored))
    return stored


@contextlib.contextmanager
def _first_run(dagster_env, tmp_path: Path, seed: int, people: int):
    """A sandbox, the state DB of a sync job over it (no publish: the sources alone decide)
    and an instance on which its first run merged every golden record: (sandbox, state
    DB engine, instance)."""
    for k, v in SANDBOX_SECRETS.items():
        dagster_env.setenv(k, v)
    with Sandbox(seed=seed, people=people, base_port=0) as sb:
        db_url, _ = run_against_sandbox(dagster_env, tmp_path, sb.urls, publish=False)
        engine = StateDB(db_url).engine
        with dg.DagsterInstance.ephemeral() as instance:
            first = materialize_all(instance)
            assert first.success
            gold = metadata_of(first, "golden_customers")
            assert gold["merged_records"] == gold["dagster/row_count"]
            yield sb, engine, instance
        engine.dispose()


def _merge_everything_changes_nothing(instance, engine: sa.Engine, stored: pd.DataFrame) -> None:
    """Forget what the last merge covered and merge everything: it must find nothing left
    to change in the ``stored`` golden records."""
    with engine.begin() as conn:
        conn.execute(sa.text("delete from table_digests where name like 'golden_%'"))
    full = metadata_of(materialize_all(instance), "golden_customers")
    assert full["merged_records"] == full["dagster/row_count"] == len(stored)
    assert full["members_queued"] is False
    for k in ("changed_records", "field_changes", "entry_changes", "retired_ids"):
        assert full[k] == 0, (k, full)
    again = core.load_golden_records(engine).sort_values("golden_id")
    assert again["golden_id"].tolist() == stored["golden_id"].tolist()
    assert (again["version"].to_numpy() == stored["version"].to_numpy()).all()


def test_writes_queue_exactly_the_records_they_change(tmp_path: Path):
    engine = StateDB(f"sqlite:///{tmp_path / 'state.sqlite'}").create_all().engine
    core.replace_source_records(engine, "crm", _canonical(["1", "2", "3"], "Lund"))
    golden_store.replace_source_entries(engine, "crm", _entries(["1", "2", "3"], "Storgatan 1"))
    assert _queued(engine) == ["1", "1", "2", "2", "3", "3"]  # new records and entries
    with engine.begin() as conn:
        merge_scope.take_off(conn, merge_scope.read_queue(engine)["id"])
    # the same snapshot again: nothing changed, nothing queued
    core.replace_source_records(engine, "crm", _canonical(["1", "2", "3"], "Lund"))
    golden_store.replace_source_entries(engine, "crm", _entries(["1", "2", "3"], "Storgatan 1"))
    assert _queued(engine) == []
    # record 2 moves town, record 3's address changes, record 1 leaves the snapshot
    rows = _canonical(["2", "3"], "Lund")
    rows.loc[0, "city"] = "Malmö"
    core.replace_source_records(engine, "crm", rows)
    entries = _entries(["2", "3"], "Storgatan 1")
    entries.loc[1, "street"] = "Lilla torget 4"
    golden_store.replace_source_entries(engine, "crm", entries)
    assert _queued(engine) == ["1", "1", "2", "3"]
    stored = golden_store.load_source_entries(engine, ["crm"]).sort_values("source_id")
    assert stored["street"].tolist() == ["Storgatan 1", "Lilla torget 4"]
    with engine.begin() as conn:
        merge_scope.take_off(conn, merge_scope.read_queue(engine)["id"])
    # an incremental pull queues its own records; a big write queues its connector whole
    core.upsert_source_records(engine, "crm", _canonical(["4"], "Lund"), deleted_ids=["2"])
    assert _queued(engine) == ["2", "4"]
    many = [str(i) for i in range(merge_scope.QUEUE_MAX + 1)]
    core.upsert_source_records(engine, "crm", _canonical(many, "Ystad"))
    assert "*" in _queued(engine)
    engine.dispose()


def test_member_changes_account_for_the_map_only_while_no_write_came_between(tmp_path: Path):
    engine = StateDB(f"sqlite:///{tmp_path / 'state.sqlite'}").create_all().engine

    def queued(stamp: str) -> tuple[list[str], bool]:
        frame, whole = merge_scope.read_member_queue(engine, stamp)
        return sorted(frame["golden_id"]), whole

    def write(ids: list, before: str, after: str) -> bool:
        """A map write as the identity step makes it: queued first, then the stamp moved."""
        with engine.begin() as conn:
            ok = merge_scope.queue_member_changes(conn, ids, before)
        with engine.begin() as conn:
            merge_scope.note_member_changes(conn, before, after)
        return ok

    assert not write(["G1"], "", "s1")  # no merge noted yet: nothing accounts for the map
    assert queued("s1") == ([], False)
    with engine.begin() as conn:  # a merge digested every member at s1
        merge_scope.note_members_merged(conn, [], "s1")
    assert queued("s1") == ([], True)
    assert write(["G1", "G2", None, "G1"], "s1", "s2")
    assert write(["G3"], "s2", "s3")
    assert queued("s3") == (["G1", "G2", "G3"], True)
    assert queued("s4")[1] is False  # the map moved on without a queued write
    frame, _ = merge_scope.read_member_queue(engine, "s3")
    with engine.begin() as conn:  # the merge takes off what it read
        merge_scope.note_members_merged(conn, frame["id"], "s3")
    assert queued("s3") == ([], True)
    # a crash after the queue was written, before the map: ids queued, the note kept
    with engine.begin() as conn:
        assert merge_scope.queue_member_changes(conn, ["G5"], "s3")
    assert queued("s3") == (["G5"], True)
    # a write the queue does not know of (s3 -> s4), then a queued one: no account
    assert not write(["G4"], "s4", "s5")
    assert queued("s5")[1] is False
    # more golden ids than the queue takes: no account either
    with engine.begin() as conn:
        merge_scope.note_members_merged(conn, [], "s5")
    many = [f"G{i}" for i in range(merge_scope.QUEUE_MAX + 1)]
    assert not write(many, "s5", "s6")
    assert queued("s6")[1] is False
    engine.dispose()


def test_an_incremental_merge_leaves_what_a_merge_of_everything_would(dagster_env, tmp_path: Path):
    with _first_run(dagster_env, tmp_path, seed=23, people=400) as (sb, engine, instance):
        for system in ("salesforce", "voyado", "voucherify", "icomm"):
            sb.changes(system, edit=6, delete=2, add=3, seed=5)
        second = materialize_all(instance)
        assert second.success
        gold = metadata_of(second, "golden_customers")
        assert 0 < gold["merged_records"] < gold["dagster/row_count"] / 4, gold
        assert gold["changed_records"] > 0, gold
        assert gold["members_queued"] is True, gold  # no digest of every golden id
        assert merge_scope.read_queue(engine).empty  # the merge took what it read
        assert merge_scope.read_member_queue(engine, "")[0].empty
        # the output of a merge of a part: every stored golden record, as stored
        stored = _assert_output_is_stored(_golden_output(), engine)
        _merge_everything_changes_nothing(instance, engine, stored)


def test_a_map_write_that_queued_nothing_is_found_by_the_member_digests(
    dagster_env, monkeypatch, tmp_path: Path
):
    """A writer of the identity map that does not queue member changes (an older release)
    moves the map's stamp past the queue's note: the merge digests every golden record's
    members and merges the moved ones, and a merge of everything finds nothing left."""
    from custsync_pipeline.store import identity as identity_store

    with _first_run(dagster_env, tmp_path, seed=29, people=200) as (sb, engine, instance):
        # the identity step of an older release: it writes the map, queues nothing and
        # notes nothing
        monkeypatch.setattr(identity_store, "queue_member_changes", lambda *a: False)
        monkeypatch.setattr(identity_store, "note_member_changes", lambda *a: None)
        for system in ("salesforce", "voyado", "voucherify"):
            sb.changes(system, edit=4, delete=3, add=2, seed=9)
        second = materialize_all(instance)
        assert second.success
        gold = metadata_of(second, "golden_customers")
        assert gold["members_queued"] is False, gold
        assert 0 < gold["merged_records"] < gold["dagster/row_count"], gold
        stored = _assert_output_is_stored(_golden_output(), engine)
        _merge_everything_changes_nothing(instance, engine, stored)


def test_a_merge_of_a_part_starts_from_the_last_output_only_while_it_holds_the_state_db(
    dagster_env, tmp_path: Path, monkeypatch
):
    """The output of a merge of a part is the last output file with the merged records
    replaced in place (no read of every golden record) — but only while no golden record
    was written since that output: a golden record written out of band (here: by hand) moves the golden
    records' stamp, and the next output is read whole from the state DB, the hand-written
    value in it."""
    from custsync_pipeline.defs.golden import assets as golden_assets

    used: list[bool] = []
    updated_output = golden_assets._updated_output

    def spy(*args, **kwargs):
        frame = updated_output(*args, **kwargs)
        used.append(frame is not None)
        return frame

    monkeypatch.setattr(golden_assets, "_updated_output", spy)
    with Sandbox(seed=29, people=300, base_port=0) as sb:
        db_url, _ = run_against_sandbox(dagster_env, tmp_path, sb.urls, publish=False)
        engine = StateDB(db_url).engine
        with dg.DagsterInstance.ephemeral() as instance:

            def run_and_compare() -> pd.DataFrame:
                result = materialize_all(instance)
                assert result.success
                out = _golden_output()
                _assert_output_is_stored(out, engine)
                return out

            run_and_compare()
            assert used == []  # a merge of everything: its output is what it merged
            sb.changes("salesforce", edit=5, seed=3)
            run_and_compare()
            assert used == [True]
            # the file that merge rewrote in place carries the stamp the next one reads
            sb.changes("voucherify", edit=5, seed=5)
            run_and_compare()
            assert used == [True, True]
            # a golden record the next merge does not redo, written by hand
            stored = core.load_golden_records(engine)
            hand = stored.iloc[[0]].copy()
            hand["last_name"] = "Handwritten"
            hand["record_hash"] = "by-hand"
            core.save_golden_records(engine, hand, pd.DataFrame())
            sb.changes("voyado", edit=5, seed=4)
            out = run_and_compare()
            assert used == [True, True, False]
            by_id = out.set_index("golden_id")
            assert by_id.loc[hand["golden_id"].iloc[0], "last_name"] == "Handwritten"
        engine.dispose()


def test_an_output_another_run_left_at_the_path_is_not_taken_for_the_last(
    dagster_env, tmp_path: Path
):
    """Two runs on one state DB writing their outputs in two places (another DAGSTER_HOME:
    a scheduled run and one from a shell): the file at the first place is older than the
    last merge, with as many rows. The merge of a part there reads the golden records
    whole instead: its output is the state DB's, the records merged elsewhere included."""
    homes = tmp_path / "home1", tmp_path / "home2"
    for home in homes:
        home.mkdir()
    dagster_env.setenv("DAGSTER_HOME", str(homes[0]))
    with Sandbox(seed=29, people=300, base_port=0) as sb:
        db_url, _ = run_against_sandbox(dagster_env, tmp_path, sb.urls, publish=False)
        engine = StateDB(db_url).engine
        with dg.DagsterInstance.ephemeral() as instance:
            assert materialize_all(instance).success  # a merge of everything, in home1
            sb.changes("salesforce", edit=5, seed=3)
            dagster_env.setenv("DAGSTER_HOME", str(homes[1]))
            assert materialize_all(instance).success  # a merge of a part, in home2
            sb.changes("voyado", edit=5, seed=4)
            dagster_env.setenv("DAGSTER_HOME", str(homes[0]))
            third = materialize_all(instance)  # home1's file is the first run's
            assert third.success
            assert metadata_of(third, "golden_customers")["merged_records"] < 300
            _assert_output_is_stored(_golden_output(), engine)
        engine.dispose()


def test_the_golden_output_from_a_file_without_a_column_keeps_the_column_typed(
    monkeypatch,
) -> None:
    """A last output that predates a column (an older file) gives that column missing in
    its rows, typed as the state DB gives it: times stay times, text stays text."""
    from custsync_pipeline.defs.golden.assets import OUTPUT_DROPS, _stored_after

    fresh = pd.DataFrame(
        {
            "golden_id": ["G2"],
            "first_name": ["Ann"],
            "born_at": pd.to_datetime(["2024-01-01T00:00:00Z"], utc=True),
            "code": pd.array(["x"], dtype="string"),
            "rank": pd.array([1], dtype="Int64"),
            **{c: [None] for c in OUTPUT_DROPS},
        }
    )
    monkeypatch.setattr(core, "load_golden_records", lambda engine, ids: fresh.copy())
    before = pd.DataFrame({"golden_id": ["G1", "G2"], "first_name": ["Bo", "Old"]})
    got = _stored_after(None, before, fresh[["golden_id"]], [])
    want = fresh.drop(columns=OUTPUT_DROPS)
    assert got.dtypes.to_dict() == want.dtypes.to_dict()
    assert got["golden_id"].tolist() == ["G1", "G2"]
    assert got["first_name"].tolist() == ["Bo", "Ann"]
    assert got[["born_at", "code", "rank"]].iloc[0].isna().all()
    assert got["born_at"].iloc[1] == want["born_at"].iloc[0]
