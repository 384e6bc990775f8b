"""The identity asset resolves only what changed, and stores what a full resolution would.

On a real state DB (a SQLite file and PostgreSQL): the tests' independent generator's
records are stored and resolved in full; 1% of them change (and some are deleted and
added); the next materialization resolves the change's scope alone. The map, golden
ids, evidence and review queue it leaves in the state DB must equal a full resolution
of the stored records with the stored match parameters. A run tagged as a full
snapshot (the nightly reconciliation) resolves everything again.
"""

from __future__ import annotations

from dataclasses import replace

import dagster as dg
import numpy as np
import pandas as pd
import sqlalchemy as sa

from custsync_pipeline.config import load_sync_config
from custsync_pipeline.defs.extract.pulls import FULL_SNAPSHOT_TAG
from custsync_pipeline.defs.identity.assets import build_identity_assets, resolution_basis
from custsync_pipeline.defs.resources import StateDBResource
from custsync_pipeline.domain.identity import (
    LINK_COLUMNS,
    KnownWords,
    resolution_columns,
    resolve_identities,
)
from custsync_pipeline.store import core
from custsync_pipeline.store.bulk import read_frame
from custsync_pipeline.store.identity import (
    RESOLVED_SOURCE,
    identity_links,
    load_identity_conflicts,
    load_identity_state,
    load_match_params,
    load_resolution_records,
)
from custsync_pipeline_tests.identity_datagen import generate
from custsync_pipeline_tests.test_identity_scope import _changed, _rows


def _plan(connectors: list[str]):
    plan = load_sync_config().plan()
    template = next(iter(plan.connectors.values()))
    # a small population: a change of 8% of the records reaches about half of them; the
    # generator's connectors are no publish targets
    return replace(
        plan,
        connectors={c: replace(template, name=c) for c in connectors},
        identity_scope_max_share=0.7,
        publish=(),
    )


def _store(engine, records: pd.DataFrame) -> None:
    for connector, part in records.groupby("connector"):
        core.replace_source_records(engine, str(connector), part.reset_index(drop=True))


def _materialize(plan, url: str, tags: dict | None = None) -> dict:
    result = dg.materialize(
        build_identity_assets(plan), resources={"state_db": StateDBResource(url=url)}, tags=tags
    )
    assert result.success
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        if mat.asset_key.to_user_string() == "identity_map":
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError("no identity_map materialization")


def _resolved_once(engine, seed: int, people: int) -> tuple[str, pd.DataFrame, object, dict]:
    """A generated population stored and resolved in full: (url, records, plan, metadata)."""
    url = engine.url.render_as_string(hide_password=False)
    records, _ = generate(seed=seed, people=people)
    plan = _plan(sorted(records["connector"].astype(str).unique()))
    _store(engine, records)
    return url, records, plan, _materialize(plan, url)


def _member_of_a_shared_golden(engine, records: pd.DataFrame) -> tuple[str, pd.Series, pd.Series]:
    """A golden id with two or more records, one of its map rows, and that record's row mask
    in ``records``."""
    id_map, _, _ = load_identity_state(engine)
    sizes = id_map.groupby("golden_id").size()
    golden = str(sizes[sizes >= 2].index[0])
    member = id_map[id_map["golden_id"] == golden].iloc[0]
    at = (records["connector"].astype(str) == member["connector"]) & (
        records["source_id"].astype(str) == member["source_id"]
    )
    return golden, member, at


def test_an_incremental_run_stores_what_a_full_resolution_decides(engine) -> None:
    url, records, plan, first = _resolved_once(engine, seed=7, people=1200)
    connectors = sorted(plan.connectors)
    assert first["resolved_records"] == 0 and first["changed_records"] == 0  # a full one
    prior_map, prior_gids, decisions = load_identity_state(engine)
    same, params, known = load_match_params(engine, resolution_basis(plan, decisions))
    assert same and params is not None and known is not None and len(known) > 100

    after = _changed(records, np.random.default_rng(7), 0.01)
    _store(engine, after)
    # a few links written before their hash column existed (NULL): those are written again
    with engine.begin() as conn:
        conn.execute(
            identity_links.update().where(identity_links.c.link_id % 50 == 0).values(row_hash=None)
        )
    links_before = read_frame(engine, sa.select(identity_links))
    unhashed = set(links_before.loc[links_before["row_hash"].isna(), "link_id"])
    second = _materialize(plan, url)
    n = len(after)
    assert 0 < second["changed_records"] <= second["resolved_records"] < 0.6 * n, second
    # what changed came from the resolution queue (edits, deletions and additions), not
    # from a read of every record's hash; the rows it read are taken off
    assert second["changed_records"] <= second["queued_records"] < 0.1 * n, second
    assert _queued(engine) == 0

    stored = load_resolution_records(
        engine, connectors, resolution_columns(list(plan.identifiers), plan.matching)
    )
    full = resolve_identities(
        stored,
        list(plan.identifiers),
        prior_map=prior_map,
        golden_ids=prior_gids,
        decisions=decisions,
        matching=plan.matching,
        match_params=params,
        known_words=KnownWords(known),
    )
    got_map, got_gids, _ = load_identity_state(engine)
    cols = ["connector", "source_id", "golden_id", "rule"]
    assert _rows(got_map, cols) == _rows(full.identity_map, cols)
    gid_cols = ["golden_id", "merged_into", "split_from"]
    assert _rows(got_gids, gid_cols) == _rows(full.golden_ids, gid_cols)
    conflict_cols = ["conflict_id", "kind", "connector_a", "source_id_a", "golden_id_a"]
    assert _rows(load_identity_conflicts(engine), conflict_cols) == _rows(
        full.conflicts, conflict_cols
    )
    links = read_frame(engine, sa.select(*[identity_links.c[c] for c in LINK_COLUMNS]))
    assert _rows(links, LINK_COLUMNS) == _rows(full.links.drop_duplicates(), LINK_COLUMNS)
    # evidence the change left as it was stays as it was stored (its rows not rewritten,
    # though the resolution reached their golden records)
    links_after = read_frame(engine, sa.select(identity_links))
    both = links_before.merge(links_after, on=list(LINK_COLUMNS), suffixes=("_was", ""))
    assert len(both) > 0.9 * len(links_after)
    hashed = ~both["link_id_was"].isin(unhashed)
    assert unhashed and hashed.sum() > 0.9 * len(both)
    assert (both.loc[hashed, "link_id_was"] == both.loc[hashed, "link_id"]).all()

    # the nightly reconciliation's tag: everything resolved again, the parameters estimated
    _store(engine, _changed(after, np.random.default_rng(8), 0.005))
    third = _materialize(plan, url, tags={FULL_SNAPSHOT_TAG: "true"})
    assert third["resolved_records"] == 0 and third["changed_records"] == 0


def test_a_stamped_copy_joins_and_stays_without_resolving_again(engine) -> None:
    url, records, plan, _ = _resolved_once(engine, seed=9, people=600)
    golden, member, at = _member_of_a_shared_golden(engine, records)
    row = records[at]
    # a target record custsync created for that golden record: its copy, stamped
    copy = row.assign(source_id="stamped-copy-1", custsync_id=golden)
    with_copy = pd.concat([records, copy], ignore_index=True)
    _store(engine, with_copy)
    second = _materialize(plan, url)
    assert second["resolved_records"] == 0 and second["stamped_records"] == 1
    id_map, _, _ = load_identity_state(engine)
    mine = id_map[id_map["source_id"] == "stamped-copy-1"]
    assert mine[["golden_id", "rule"]].values.tolist() == [[golden, "custsync_id"]]
    links = read_frame(engine, sa.select(identity_links))
    assert (links["source_id_a"] == "stamped-copy-1").sum() == 1

    # another record of the same person changes: resolved again, the copy stays
    edited = with_copy.copy()
    others = (edited["source_id"] != "stamped-copy-1") & (
        edited["source_id"].astype(str) != member["source_id"]
    )
    first_other = edited.index[others][0]
    edited.loc[first_other, "city"] = "Någonstans"
    _store(engine, edited)
    third = _materialize(plan, url)
    assert third["changed_records"] >= 1 and third["resolved_records"] < len(edited) / 2
    id_map, _, _ = load_identity_state(engine)
    assert id_map.loc[id_map["source_id"] == "stamped-copy-1", "golden_id"].tolist() == [golden]
    assert (id_map["source_id"] == "stamped-copy-1").sum() == 1
    links = read_frame(engine, sa.select(identity_links))
    assert (links["source_id_a"] == "stamped-copy-1").sum() == 1

    # the copy is deleted in its target: the incremental run drops its map row and link
    _store(engine, edited[edited["source_id"] != "stamped-copy-1"].reset_index(drop=True))
    fourth = _materialize(plan, url)
    assert fourth["stamped_records"] == 0
    id_map, _, _ = load_identity_state(engine)
    assert (id_map["source_id"] == "stamped-copy-1").sum() == 0
    assert len(id_map) == len(edited) - 1
    links = read_frame(engine, sa.select(identity_links))
    assert (links["source_id_a"] == "stamped-copy-1").sum() == 0


def test_a_record_stamped_since_it_was_resolved_keeps_its_map_row(engine) -> None:
    # a publish wrote the golden id back into a record custsync had resolved: the next
    # incremental run attaches it by its stamp (it must not be deleted as gone)
    url, records, plan, _ = _resolved_once(engine, seed=9, people=600)
    golden, member, at = _member_of_a_shared_golden(engine, records)
    stamped = records.copy()
    stamped["custsync_id"] = stamped.get("custsync_id")
    stamped.loc[at, "custsync_id"] = golden
    _store(engine, stamped)
    second = _materialize(plan, url)
    assert second["stamped_records"] == 1 and second["resolved_records"] < len(records)
    id_map, _, _ = load_identity_state(engine)
    mine = id_map[
        (id_map["connector"] == member["connector"]) & (id_map["source_id"] == member["source_id"])
    ]
    assert mine[["golden_id", "rule"]].values.tolist() == [[golden, "custsync_id"]]
    assert len(id_map) == len(records)


def test_a_map_written_before_reach_existed_resolves_everything_once(engine) -> None:
    """A map row with no reach (an older release wrote it) cannot bound a change's scope:
    the next run resolves every record and writes every reach; the one after that is
    incremental again."""
    url, records, plan, _ = _resolved_once(engine, seed=11, people=400)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE identity_map SET reach = NULL WHERE rule <> 'custsync_id'"))
    after = _changed(records, np.random.default_rng(3), 0.01)
    _store(engine, after)
    again = _materialize(plan, url)
    assert again["resolved_records"] == 0 and again["changed_records"] == 0, again  # in full
    prior_map, _, _ = load_identity_state(engine, with_reach=True)
    assert prior_map["reach"].notna().all()
    _store(engine, _changed(after, np.random.default_rng(4), 0.01))
    third = _materialize(plan, url)
    assert third["changed_records"] > 0 and third["resolved_records"] > 0, third


def _queued(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM resolution_queue")).scalar_one())


def test_the_queue_brings_the_stored_map_up_to_date_as_a_read_of_every_record(engine) -> None:
    """The current records built from the stored map and the queued keys are the records a
    read of every one gives: edited ones with their new hash, deleted ones gone, new ones
    added, stamps as stored; each kept one at its row of the map."""
    from custsync_pipeline.domain.identity_scope import current_records
    from custsync_pipeline.store.identity import read_resolution_queue

    _, records, plan, _ = _resolved_once(engine, seed=5, people=500)
    after = _changed(records, np.random.default_rng(5), 0.02)
    after["custsync_id"] = after.get("custsync_id")
    after.loc[after.index[:2], "custsync_id"] = ["g-stamp-1", "g-stamp-2"]
    _store(engine, after)
    connectors = sorted(plan.connectors)
    queue = read_resolution_queue(engine, connectors)
    assert queue.keys is not None and 0 < len(queue.keys) < len(after) / 5
    prior, _, _ = load_identity_state(engine, with_reach=True)
    cols = ["connector", "source_id", "row_hash", "custsync_id"]
    fresh = core.load_source_records(engine, connectors, columns=cols, keys=queue.keys)
    got, at = current_records(
        prior, queue.keys, fresh, core.stamped_source_records(engine, connectors)
    )
    every = core.load_source_records(engine, connectors, columns=cols)
    assert _rows(got, cols) == _rows(every, cols)
    kept = at >= 0
    assert (prior["source_id"].to_numpy()[at[kept]] == got["source_id"].to_numpy()[kept]).all()
    assert not prior["source_id"].isin(["new-0"]).any() and "new-0" in set(got["source_id"])
    assert set(got.loc[~kept, "source_id"]) == set(got["source_id"]) - set(prior["source_id"])


def test_a_change_the_queue_cannot_account_for_reads_every_record(engine) -> None:
    """No account in the queue — a record written by a writer that does not queue (an older
    release), a connector queued whole, the stored note of the last resolution cleared (as
    ``custsync forget`` does) — makes the run read every record's hash: nothing is missed."""
    from custsync_pipeline.domain.canonical import conform
    from custsync_pipeline.store import identity as identity_store
    from custsync_pipeline.store.bulk import bump_stamp, insert_frame

    url, records, plan, _ = _resolved_once(engine, seed=13, people=400)
    # a record edited without queueing it (the source stamp moves, as with any write)
    one = records.iloc[0]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE source_records SET email = 'unqueued@example.com', row_hash = 'x' "
                "WHERE connector = :c AND source_id = :s"
            ),
            {"c": str(one["connector"]), "s": str(one["source_id"])},
        )
        bump_stamp(conn, core.SOURCE_STAMP)
    second = _materialize(plan, url)
    assert second["queued_records"] == 0 and second["changed_records"] >= 1, second
    prior, _, _ = load_identity_state(engine)
    mine = (prior["connector"] == one["connector"]) & (prior["source_id"] == one["source_id"])
    assert prior.loc[mine, "source_hash"].tolist() == ["x"]

    # a record added without queueing it beside one that is queued: the count tells
    extra = records.iloc[[1]].assign(source_id="unqueued-1", email="unqueued-1@example.com")
    with engine.begin() as conn:
        insert_frame(conn, core.source_records, conform(extra).assign(row_hash="y"))
    core.remove_source_records(
        engine, str(records.iloc[2]["connector"]), [records.iloc[2]["source_id"]]
    )
    again = _materialize(plan, url)
    assert again["queued_records"] == 0 and again["changed_records"] >= 2, again
    id_map, _, _ = load_identity_state(engine)
    assert "unqueued-1" in set(id_map["source_id"])

    # a write of more records than the queue holds one by one queues the connector whole
    saved = identity_store.RESOLUTION_QUEUE_MAX
    identity_store.RESOLUTION_QUEUE_MAX = 2
    state = _changed(records, np.random.default_rng(14), 0.01)
    try:
        _store(engine, state)
    finally:
        identity_store.RESOLUTION_QUEUE_MAX = saved
    third = _materialize(plan, url)
    assert third["queued_records"] == 0 and third["changed_records"] > 0, third
    assert _queued(engine) == 0

    # the note of the last resolution gone: the queue's rows are no account
    after = _changed(state, np.random.default_rng(15), 0.01)
    _store(engine, after)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM table_digests WHERE name = :n"), {"n": RESOLVED_SOURCE})
    fourth = _materialize(plan, url)
    assert fourth["queued_records"] == 0 and fourth["changed_records"] > 0, fourth
    assert _queued(engine) == 0
    id_map, _, _ = load_identity_state(engine)
    stored = core.load_source_records(engine, sorted(plan.connectors), columns=["source_id"])
    assert set(id_map["source_id"]) == set(stored["source_id"])
    # and the one after is read from the queue again
    _store(engine, _changed(after, np.random.default_rng(16), 0.01))
    fifth = _materialize(plan, url)
    assert fifth["queued_records"] > 0, fifth


def test_an_entries_write_and_a_long_deleted_id_keep_the_queue_an_account(engine) -> None:
    """A write of a record's aspect entries alone moves the source stamp: it queues the
    record too, so the next resolution still reads what changed from the queue (found in a
    review: it read every record). A delete feed's id longer than a key column is queued
    as text on both state DBs (a review: PostgreSQL refused the whole write)."""
    from custsync_pipeline.store import golden as golden_store

    url, records, plan, _ = _resolved_once(engine, seed=17, people=200)
    one = records.iloc[0]
    entry = pd.DataFrame(
        {
            "connector": str(one["connector"]),
            "source_id": [str(one["source_id"])],
            "aspect": "addresses",
            "entry_key": ["k-review"],
            "street": "Storgatan 9",
            "city": "Lund",
        }
    )
    golden_store.upsert_source_entries(
        engine, str(one["connector"]), entry, [str(one["source_id"])], []
    )
    second = _materialize(plan, url)
    assert second["queued_records"] == 1 and second["changed_records"] == 0, second
    assert _queued(engine) == 0

    long_id = "x" * 300
    edited = records.iloc[[0]].assign(city="Någonstans")  # a write, with an id never stored
    core.upsert_source_records(engine, str(one["connector"]), edited, [long_id])
    third = _materialize(plan, url)
    assert third["queued_records"] == 2 and third["changed_records"] == 1, third
