"""The identity tables in a real state DB: a SQLite file and the PostgreSQL server."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.domain.identity import resolve_identities
from custsync_pipeline.store.bulk import ARROW_TEXT
from custsync_pipeline.store.db import make_engine
from custsync_pipeline.store.identity import identity_conflicts as ic
from custsync_pipeline.store.identity import identity_links as il
from custsync_pipeline.store.identity import (
    list_decisions,
    load_identity_state,
    remove_decision,
    save_identity_result,
    set_decision,
)
from custsync_pipeline_tests.test_identity import RULES


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    # a real SQLite file, or a fresh PostgreSQL database of the shared fixture
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    else:
        url = request.getfixturevalue("pg_url")
    eng = make_engine(url)
    yield eng
    eng.dispose()


RECORDS = conform(
    pd.DataFrame(
        [
            dict(
                connector="crm", source_id="a", salesforce_id="a", email="a@x.se", first_name="Al"
            ),
            dict(
                connector="shop", source_id="a2", web_user_id="wa", email="a@x.se", first_name="Al"
            ),
            dict(
                connector="crm", source_id="b", salesforce_id="b", email="fam@x.se", first_name="Bo"
            ),
            dict(
                connector="crm", source_id="c", salesforce_id="c", email="fam@x.se", first_name="Cy"
            ),
        ]
    )
)


def run(engine, records, now):
    prior, gids, decisions = load_identity_state(engine)
    result = resolve_identities(records, RULES, prior, gids, decisions, now=now)
    return result, save_identity_result(engine, result)


def test_round_trip_and_rerun_writes_nothing(engine):
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    first, written = run(engine, RECORDS, t0)
    assert written["identity_map"] == 4 and written["golden_ids"] == 3
    prior, gids, _ = load_identity_state(engine)
    got = prior.sort_values(["connector", "source_id"]).reset_index(drop=True)
    want = first.identity_map.sort_values(["connector", "source_id"]).reset_index(drop=True)
    assert got[["connector", "source_id", "golden_id", "rule"]].equals(
        want[["connector", "source_id", "golden_id", "rule"]]
    )
    assert (got["updated_at"] == t0).all()
    assert set(gids["golden_id"]) == set(first.golden_ids["golden_id"])

    second, written = run(engine, RECORDS, t0 + pd.Timedelta(days=1))
    assert written["identity_map"] == 0 and written["golden_ids"] == 0
    assert second.identity_map.set_index(["connector", "source_id"])["golden_id"].equals(
        first.identity_map.set_index(["connector", "source_id"])["golden_id"]
    )
    with engine.connect() as conn:
        conflicts = conn.execute(sa.select(ic.c.kind, ic.c.key_masked)).all()
        links = conn.execute(sa.select(il.c.rule, il.c.key)).all()
    assert conflicts == [("name_mismatch", "f***@x.se")]
    assert links == [("email", "a***@x.se")]


def test_merge_is_stored_and_gone_records_leave_the_map(engine):
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    first, _ = run(engine, RECORDS, t0)
    g = first.identity_map.set_index("source_id")["golden_id"]
    # c leaves; b and a are now known to be one person (steward)
    set_decision(
        engine, "must_link", ("crm", "b"), ("crm", "a"), note="same person, checked by phone"
    )
    second, written = run(engine, RECORDS[RECORDS.source_id != "c"], t0 + pd.Timedelta(days=1))
    assert written["identity_map_deleted"] == 1
    prior, gids, decisions = load_identity_state(engine)
    assert set(prior["source_id"]) == {"a", "a2", "b"}
    assert prior["golden_id"].nunique() == 1
    merged = gids.dropna(subset=["merged_into"])
    assert len(merged) == 1
    assert merged["merged_into"].item() in {g["a"], g["b"]}
    assert decisions["decision"].tolist() == ["must_link"]


def test_decisions_replace_each_other_and_can_be_removed(engine):
    set_decision(engine, "must_link", ("crm", "a"), ("shop", "b"))
    set_decision(engine, "cannot_link", ("shop", "b"), ("crm", "a"), decided_by="steward@corp")
    d = list_decisions(engine)
    assert d[
        ["decision", "connector_a", "source_id_a", "connector_b", "source_id_b"]
    ].values.tolist() == [["cannot_link", "crm", "a", "shop", "b"]]
    assert remove_decision(engine, ("crm", "a"), ("shop", "b")) == 1
    assert list_decisions(engine).empty
    with pytest.raises(ValueError):
        set_decision(engine, "maybe_link", ("crm", "a"), ("shop", "b"))


def test_split_history_is_stored_and_an_older_db_gains_the_columns(engine):
    # a state DB created before split history existed: golden_ids without the columns
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE golden_ids (golden_id VARCHAR(32) PRIMARY KEY, "
                "created_at TIMESTAMP NOT NULL, merged_into VARCHAR(32), merged_at TIMESTAMP)"
            )
        )
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    records = pd.concat(
        [
            RECORDS,
            conform(pd.DataFrame([dict(connector="erp", source_id="a3", salesforce_id="a")])),
        ],
        ignore_index=True,
    )
    first, _ = run(engine, records, t0)
    g = first.identity_map.set_index("source_id")["golden_id"]
    assert g["a"] == g["a2"] == g["a3"]
    # the shop account changes its email: it splits off a's golden record
    changed = records.copy()
    changed.loc[changed.source_id == "a2", "email"] = "new@x.se"
    t1 = t0 + pd.Timedelta(days=1)
    second, _ = run(engine, changed, t1)
    _, gids, _ = load_identity_state(engine)
    new = second.identity_map.set_index("source_id").loc["a2", "golden_id"]
    assert new != g["a"]
    row = gids.set_index("golden_id").loc[new]
    assert row["split_from"] == g["a"] and row["split_at"] == t1
    assert gids["split_from"].notna().sum() == 1


def test_resolution_loads_only_the_columns_it_reads_and_resolves_the_same(engine):
    from custsync_pipeline.domain.identity import resolution_columns
    from custsync_pipeline.store import core
    from custsync_pipeline.store.db import metadata
    from custsync_pipeline.store.identity import load_resolution_records

    metadata.create_all(engine, tables=[core.source_records])
    for connector, part in RECORDS.assign(city="Lund").groupby("connector"):
        core.replace_source_records(engine, connector, part)
    slim = load_resolution_records(engine, ["crm", "shop"], resolution_columns(RULES))
    assert "city" not in slim.columns and "email" in slim.columns and "custsync_id" in slim.columns
    # text as Arrow-backed strings (resolution's kernels run in Arrow, not over objects)
    assert slim["email"].dtype == ARROW_TEXT and slim["source_id"].dtype == ARROW_TEXT
    full = core.load_source_records(engine, ["crm", "shop"])
    t = pd.Timestamp("2026-01-01", tz="UTC")
    a = resolve_identities(slim, RULES, now=t)
    pd.testing.assert_frame_equal(
        a.identity_map, resolve_identities(full, RULES, now=t).identity_map
    )
    # the same resolution as of Python objects (None for missing): map, evidence, review queue
    text = [c for c in slim.columns if slim[c].dtype == ARROW_TEXT]
    objects = slim.assign(**{c: slim[c].to_numpy(dtype=object, na_value=None) for c in text})
    b = resolve_identities(objects, RULES, now=t)
    pd.testing.assert_frame_equal(a.identity_map, b.identity_map)
    for part in ("links", "conflicts"):
        left, right = getattr(a, part), getattr(b, part)
        assert len(left) and left.astype(str).equals(right.astype(str)), part
    assert set(
        load_resolution_records(engine, ["shop"], ["connector", "source_id"])["connector"]
    ) == {"shop"}


@pytest.mark.parametrize("hashes_stored", [True, False])
def test_evidence_is_written_as_a_diff(engine, hashes_stored):
    """A changed link replaces only itself: the links that still hold keep their rows,
    whether their row hashes are stored or (rows of an older release) are not."""
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    run(engine, RECORDS, t0)
    cols = [c for c in il.c if c.name != "row_hash"]
    with engine.begin() as conn:
        assert conn.execute(sa.select(il.c.row_hash).where(il.c.row_hash.is_(None))).first() is None
        if not hashes_stored:
            conn.execute(il.update().values(row_hash=None))
    with engine.connect() as conn:
        before = {tuple(r[1:]): r[0] for r in conn.execute(sa.select(*cols)).all()}
    more = pd.concat(
        [RECORDS, conform(pd.DataFrame([dict(connector="shop", source_id="c2",
                                             web_user_id="wc", email="c@x.se",
                                             salesforce_id="c", first_name="Cy")]))],
        ignore_index=True,
    )  # fmt: skip
    prior, gids, decisions = load_identity_state(engine)
    result = resolve_identities(more, RULES, prior, gids, decisions, now=t0)
    written = save_identity_result(engine, result, stored=(prior, gids))
    with engine.connect() as conn:
        after = {tuple(r[1:]): r[0] for r in conn.execute(sa.select(*cols)).all()}
        unhashed = conn.execute(sa.select(il.c.link_id).where(il.c.row_hash.is_(None))).all()
    kept = set(before) & set(after)
    assert kept and all(before[k] == after[k] for k in kept)  # untouched rows
    added = set(after) - set(before)
    assert added and written["identity_links"] == len(added) + len(set(before) - set(after))
    want = result.links.drop_duplicates()
    assert len(after) == len(want)
    # new rows carry their hash; kept rows of an older release keep theirs missing
    assert len(unhashed) == (0 if hashes_stored else len(kept))
