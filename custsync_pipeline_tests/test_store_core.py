"""State-DB core tables on a real SQLite file and a real PostgreSQL: one code path."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB


def test_sqlite_uses_wal_and_busy_timeout(tmp_path) -> None:
    db = StateDB(f"sqlite:///{tmp_path / 's.sqlite'}").create_all()
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        # a page cache large enough for a bulk insert's index (the default is 2 MiB)
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -64 * 1024


def test_bulk_inserts_go_in_key_order_and_keep_every_value(tmp_path) -> None:
    from custsync_pipeline.store.bulk import insert_frame

    db = StateDB(f"sqlite:///{tmp_path / 's.sqlite'}").create_all()
    ids = ["9", "3", None, "7", "1"]
    golden = pd.DataFrame(
        {
            "golden_id": ["g9", "g3", "g5", "g7", "g1"],
            "first_name": ids,
            "version": [1, 2, 3, 4, 5],
            "record_hash": ["h"] * 5,
            "updated_at": pd.Timestamp("2024-01-01T10:00:00Z"),
        }
    )
    # events of two records interleaved: each record's events keep their order
    events = pd.DataFrame(
        {
            "golden_id": ["g2", "g1", "g2", "g1"],
            "version": 1,
            "field": ["a", "b", "c", "d"],
            "at": pd.Timestamp("2024-01-01T10:00:00Z"),
        }
    )
    with db.engine.begin() as conn:
        insert_frame(conn, core.golden_records, golden)
        insert_frame(conn, core.golden_events, events)
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT golden_id, first_name, version FROM golden_records ORDER BY rowid"
        ).all()
        fields = conn.exec_driver_sql(
            "SELECT golden_id, field FROM golden_events ORDER BY id"
        ).all()
    assert rows == [("g1", "1", 5), ("g3", "3", 2), ("g5", None, 3), ("g7", "7", 4), ("g9", "9", 1)]
    assert fields == [("g1", "b"), ("g1", "d"), ("g2", "a"), ("g2", "c")]
    # keys Arrow cannot sort (an integer beyond 64 bits) go in as given, as text
    from custsync_pipeline.store.merge_scope import golden_members

    huge = pd.DataFrame({"golden_id": pd.Series([2**64, 7], dtype=object), "members_hash": "h"})
    with db.engine.begin() as conn:
        insert_frame(conn, golden_members, huge)
        held = conn.exec_driver_sql("SELECT golden_id FROM golden_members ORDER BY rowid").all()
    assert held == [(str(2**64),), ("7",)]


def test_source_records_round_trip_and_replace(engine) -> None:
    frame = conform(
        pd.DataFrame(
            {
                "connector": ["crm", "crm"],
                "source_id": ["1", "2"],
                "email": ["a@x.se", None],
                "loyalty_points": [10.5, None],
                "updated_at": pd.to_datetime(["2024-01-01T10:00:00Z", "2024-01-02T00:00:00Z"]),
            }
        )
    )
    assert core.replace_source_records(engine, "crm", frame) == 2
    core.replace_source_records(engine, "shop", frame.assign(connector="shop"))
    back = core.load_source_records(engine, ["crm"]).sort_values("source_id").reset_index(drop=True)
    assert back["email"].tolist()[0] == "a@x.se" and pd.isna(back["email"][1])
    assert back["loyalty_points"][0] == 10.5
    assert back["updated_at"][0] == pd.Timestamp("2024-01-01T10:00:00Z")
    core.replace_source_records(engine, "crm", frame.iloc[:1])
    assert core.source_record_counts(engine) == {"crm": 1, "shop": 2}


def test_outbox_ack_failure_and_requeue(engine) -> None:
    deltas = pd.DataFrame(
        {
            "entity_key": ["T1", "new:G2"],
            "golden_id": ["G1", "G2"],
            "target_id": ["T1", None],
            "op": ["upsert", "upsert"],
            "payload": ['{"a":1}', '{"a":2}'],
            "payload_hash": ["h1", "h2"],
        }
    )
    core.enqueue_deltas(engine, "crm", deltas)
    assert len(core.load_outbox(engine, "crm", ["pending"])) == 2
    core.record_publish_results(
        engine,
        "crm",
        pd.DataFrame(
            {
                "entity_key": ["T1", "new:G2"],
                "target_id": ["T1", None],
                "status": ["acked", "failed"],
                "last_error": [None, "503 Service Unavailable"],
            }
        ),
    )
    box = core.load_outbox(engine, "crm").set_index("entity_key")
    assert box.loc["T1", "status"] == "acked" and box.loc["T1", "acked_hash"] == "h1"
    assert box.loc["new:G2", "status"] == "failed"
    assert box.loc["new:G2", "last_error"] == "503 Service Unavailable"
    assert int(box.loc["new:G2", "attempts"]) == 1
    # a new payload for an acked entity is pending again, keeping the old ack
    held = '{"fields": {"a": 0}}'
    core.enqueue_deltas(
        engine, "crm", deltas.iloc[:1].assign(payload='{"a":3}', payload_hash="h1b", held=held)
    )
    box = core.load_outbox(engine, "crm").set_index("entity_key")
    assert box.loc["T1", "status"] == "pending" and box.loc["T1", "acked_hash"] == "h1"
    # ... and what the target holds of custsync's (echo safety reads it while this waits)
    assert box.loc["T1", "acked_payload"] == '{"a":1}' and box.loc["T1", "held"] == held
    ack = pd.DataFrame(
        {"entity_key": ["T1"], "target_id": ["T1"], "status": ["acked"], "last_error": [None]}
    )
    core.record_publish_results(engine, "crm", ack)
    core.enqueue_deltas(engine, "crm", deltas.iloc[:1].assign(payload='{"a":4}', payload_hash="h4"))
    box = core.load_outbox(engine, "crm").set_index("entity_key")
    assert box.loc["T1", "acked_payload"] == '{"a":3}' and box.loc["T1", "acked_held"] == held


def test_outbox_rows_of_some_records_only(engine) -> None:
    """An update's entity key is its record's id; a create's record id is its target_id
    once acknowledged: both are found by the record id, and no other row."""
    core.enqueue_deltas(
        engine,
        "crm",
        pd.DataFrame(
            {
                "entity_key": ["T1", "new:G2", "T3"],
                "golden_id": ["G1", "G2", "G3"],
                "target_id": ["T1", None, "T3"],
                "op": "upsert",
                "payload": "{}",
                "payload_hash": ["h1", "h2", "h3"],
            }
        ),
    )
    core.record_publish_results(
        engine,
        "crm",
        pd.DataFrame({"entity_key": ["new:G2"], "target_id": ["T2"], "status": ["acked"],
                      "last_error": [None]}),
    )  # fmt: skip
    got = core.load_outbox(engine, "crm", target_ids=["T1", "T2", "T9"])
    assert got["entity_key"].tolist() == ["T1", "new:G2"]
    assert core.load_outbox(engine, "crm", target_ids=[]).empty
    assert len(core.load_outbox(engine, "crm")) == 3


def test_watermark(engine) -> None:
    assert core.get_watermark(engine, "crm") is None
    when = datetime(2024, 5, 1, 12, tzinfo=UTC)
    core.set_watermark(engine, "crm", when)
    assert core.get_watermark(engine, "crm") == when


def test_a_newer_computation_supersedes_what_an_older_one_queued(engine) -> None:
    # run 1, the target was down: G1 queued as a create, and its send failed
    stale = pd.DataFrame(
        {
            "entity_key": ["new:G1", "new:G2"],
            "golden_id": ["G1", "G2"],
            "target_id": [None, None],
            "op": ["upsert", "upsert"],
            "payload": ['{"a":1}', '{"a":2}'],
            "payload_hash": ["h1", "h2"],
            "golden_version": [1, 1],
        }
    )
    core.enqueue_deltas(engine, "crm", stale)
    core.record_publish_results(
        engine,
        "crm",
        pd.DataFrame(
            {
                "entity_key": ["new:G1", "new:G2"],
                "target_id": [None, None],
                "status": ["failed", "failed"],
                "last_error": ["unreachable", "unreachable"],
            }
        ),
    )
    # run 2: the target holds T1 for G1 now (an update), G2 still needs a create
    fresh = pd.DataFrame(
        {
            "entity_key": ["T1", "new:G2"],
            "golden_id": ["G1", "G2"],
            "target_id": ["T1", None],
            "op": ["upsert", "upsert"],
            "payload": ['{"a":3}', '{"a":4}'],
            "payload_hash": ["h3", "h4"],
            "golden_version": [2, 2],
        }
    )
    core.enqueue_deltas(engine, "crm", fresh)
    box = core.load_outbox(engine, "crm").set_index("entity_key")
    assert box.loc["new:G1", "status"] == "superseded"
    queued = core.load_outbox(engine, "crm", core.QUEUED).set_index("entity_key")
    assert sorted(queued.index) == ["T1", "new:G2"]
    assert queued["golden_version"].tolist() == [2, 2]
    assert queued.loc["new:G2", "payload_hash"] == "h4"
    # an empty computation (nothing to write) supersedes whatever was still queued
    core.enqueue_deltas(engine, "crm", fresh.iloc[:0])
    assert core.load_outbox(engine, "crm", core.QUEUED).empty
    assert core.supersede_rows(engine, "crm", ["T1"]) == 0


def test_arrow_text_reads_the_same_values_in_batches(engine, monkeypatch) -> None:
    """The golden step's read: text as Arrow-backed strings, fetched batch by batch (a batch
    smaller than the rows here), the same values, times and missing values as the plain read."""
    from custsync_pipeline.domain.golden import GOLDEN_INPUT_COLUMNS
    from custsync_pipeline.store import bulk

    monkeypatch.setattr(bulk, "READ_BATCH", 3)
    n = 8
    frame = conform(
        pd.DataFrame(
            {
                "connector": ["crm"] * n,
                "source_id": [str(i) for i in range(n)],
                "email": [f"p{i}@x.se" if i % 3 else None for i in range(n)],
                "loyalty_points": [float(i) if i % 2 else None for i in range(n)],
                "updated_at": pd.to_datetime([f"2024-01-0{i + 1}T10:00:00Z" for i in range(n)]),
            }
        )
    )
    core.replace_source_records(engine, "crm", frame)
    plain = core.load_source_records(engine, ["crm"], columns=GOLDEN_INPUT_COLUMNS)
    arrow = core.load_source_records(engine, ["crm"], columns=GOLDEN_INPUT_COLUMNS, arrow_text=True)
    assert len(arrow) == n and list(arrow.columns) == list(plain.columns)
    assert arrow["email"].dtype == bulk.ARROW_TEXT
    arrow, plain = (f.sort_values("source_id").reset_index(drop=True) for f in (arrow, plain))
    # the same values, a missing one missing on both sides (<NA> there, None here)
    same = [f.astype(object).where(f.notna(), None) for f in (arrow, plain)]
    pd.testing.assert_frame_equal(*same)
    assert arrow["updated_at"][2] == pd.Timestamp("2024-01-03T10:00:00Z")


def test_sqlite_bulk_insert_spans_statements_and_stays_in_the_callers_transaction(
    tmp_path, monkeypatch
) -> None:
    """Rows go in several multi-row statements (the last one short), every kind of value
    reads back as SQLAlchemy reads it, and a rollback of the caller's transaction takes
    them all back."""
    from custsync_pipeline.store import bulk

    monkeypatch.setattr(bulk, "SQLITE_ROWS_PER_INSERT", 7)
    db = StateDB(f"sqlite:///{tmp_path / 's.sqlite'}").create_all()
    n = 53  # seven full statements and one of four rows
    frame = pd.DataFrame(
        {
            "golden_id": [f"g{i:03d}" for i in range(n)][::-1],
            "first_name": [None if i % 5 == 0 else f"Å{i}" for i in range(n)],
            "version": list(range(n)),
            "record_hash": "h",
            "updated_at": pd.Timestamp("2024-01-01T10:00:00.123456Z")
            + pd.to_timedelta(range(n), unit="s"),
        }
    )
    with db.engine.begin() as conn:
        assert bulk.insert_frame(conn, core.golden_records, frame) == n
    back = (
        pd.read_sql(sa.select(core.golden_records), db.engine).set_index("golden_id").sort_index()
    )
    want = frame.set_index("golden_id").sort_index()
    assert len(back) == n
    assert back["first_name"].tolist() == want["first_name"].tolist()
    assert back["version"].tolist() == want["version"].tolist()
    assert (pd.to_datetime(back["updated_at"], utc=True) == want["updated_at"]).all()
    more = frame.assign(golden_id=frame["golden_id"] + "x")
    with pytest.raises(RuntimeError, match="undo"):
        with db.engine.begin() as conn:
            bulk.insert_frame(conn, core.golden_records, more)
            raise RuntimeError("undo")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM golden_records").scalar() == n
    # a frame wider than the bound-value limit allows per statement still goes in
    monkeypatch.setattr(bulk, "SQLITE_ROWS_PER_INSERT", 10**9)
    with db.engine.begin() as conn:
        bulk.insert_frame(conn, core.golden_records, more)
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM golden_records").scalar() == 2 * n
    # a connection used commit-as-you-go (no begin()): its commit() keeps the rows
    third = frame.assign(golden_id=frame["golden_id"] + "y")
    with db.engine.connect() as conn:
        bulk.insert_frame(conn, core.golden_records, third)
        conn.commit()
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM golden_records").scalar() == 3 * n


def test_bulk_insert_keeps_every_kind_of_value(engine) -> None:
    """Every column kind through the bulk path (PostgreSQL: COPY; SQLite: multi-row
    INSERTs) and read back by SQLAlchemy unchanged: text COPY must escape, 64-bit
    extremes (exact: no detour through floats), floats, NULLs, bytes, times in any zone."""
    from custsync_pipeline.store import bulk

    kinds = sa.MetaData()
    table = sa.Table(
        "every_kind",
        kinds,
        sa.Column("k", sa.Integer, primary_key=True),
        sa.Column("text", sa.Text),
        sa.Column("big", sa.BigInteger),
        sa.Column("num", sa.Float),
        sa.Column("flag", sa.Boolean),
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("blob", sa.LargeBinary),
    )
    kinds.create_all(engine)
    text = ["plain", "", None, "tab\there", "new\nline", "cr\rx", "back\\slash", "\\N", "ünï ✓"]
    big = [0, -1, 2**63 - 1, -(2**63), None, 12, 2**53 + 1, 7, 8]
    num = [0.1, 1e-7, 1e20, float("nan"), -2.5, 123456789.12345679, None, 3.0, 4.0]
    flag = [True, False, None, True, False, True, None, False, True]
    at = pd.Series(
        pd.to_datetime(
            ["2024-01-01T10:00:00.123456Z", "2024-06-30T23:59:59+02:00", None] * 3,
            utc=True,
            format="ISO8601",
        )
    )
    blob = [b"\x00\x01\xff", b"", None, b"\\\t\n", b"reach", np.nan, b"\x80" * 40, pd.NA, b"b"]
    frame = pd.DataFrame(
        {
            "k": range(9, 0, -1),
            "text": text,
            "big": pd.Series(big, dtype=object),
            "num": num,
            "flag": pd.Series(flag, dtype=object),
            "at": at,
            "blob": pd.Series(blob, dtype=object),
        }
    )
    with engine.begin() as conn:
        assert bulk.insert_frame(conn, table, frame) == 9
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.k.desc())).all()

    def utc(v):
        return None if v is None else (v if v.tzinfo else v.replace(tzinfo=UTC))

    assert [r.text for r in rows] == text
    assert [r.big for r in rows] == big
    assert [r.num for r in rows] == [None if v != v else v for v in num]
    assert [r.flag for r in rows] == flag
    assert [utc(r.at) for r in rows] == [None if pd.isna(t) else t.to_pydatetime() for t in at]
    assert [None if r.blob is None else bytes(r.blob) for r in rows] == [
        b if isinstance(b, bytes) else None for b in blob
    ]


def test_a_read_in_batches_keeps_column_types_across_all_missing_batches(
    engine, monkeypatch
) -> None:
    """A large read comes in batches (Arrow-backed text); a batch where a time, number or
    text column holds no value must not turn the column's type (nor make pandas warn that
    it soon will)."""
    import warnings

    from custsync_pipeline.store import bulk

    meta = sa.MetaData()
    table = sa.Table(
        "batched",
        meta,
        sa.Column("k", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text),
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("num", sa.Float),
        sa.Column("count", sa.Integer),
        sa.Column("flag", sa.Boolean),
    )
    meta.create_all(engine)
    frame = pd.DataFrame(
        {
            "k": range(6),
            "name": ["a", "b", None, None, "e", None],
            "at": pd.to_datetime(["2024-01-01T00:00:00Z", None, None, None, None, None], utc=True),
            "num": [1.5, None, None, None, None, 2.5],
            "count": pd.Series([1, 2, None, None, 5, 6], dtype=object),
            "flag": pd.Series([True, False, None, None, True, True], dtype=object),
        }
    )
    with engine.begin() as conn:
        bulk.insert_frame(conn, table, frame)
    monkeypatch.setattr(bulk, "READ_BATCH", 2)  # batches: k 0-1, 2-3 (all missing), 4-5
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        back = bulk.read_frame(engine, sa.select(table).order_by(table.c.k), arrow_text=True)
    assert str(back["at"].dtype) == "datetime64[ns, UTC]"
    assert back["num"].dtype == np.float64
    assert back["name"].dtype == bulk.ARROW_TEXT
    assert back["at"].isna().tolist() == [False, True, True, True, True, True]
    assert back["name"].isna().tolist() == [False, False, True, True, False, True]
    assert back["num"].tolist()[0] == 1.5 and np.isnan(back["num"].tolist()[2])
    # ints beside a batch of nothing keep their values: Python ints and None as pandas has
    # them (SQLite's batches), or floats and NaN as any one-piece read (PostgreSQL's COPY)
    assert [None if pd.isna(v) else v for v in back["count"]] == [1, 2, None, None, 5, 6]
    assert back["flag"].tolist() == [True, False, None, None, True, True]


def test_an_older_state_db_gets_the_columns_and_indexes_it_lacks(engine) -> None:
    """A state DB made by an older release is brought up to date in place: a nullable
    column and an index of the model that it lacks are added, the rows stay; bringing it
    up again makes nothing more."""
    from custsync_pipeline.store import db
    from custsync_pipeline.store.golden import source_entries

    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE source_entries DROP COLUMN seen_at"))
        conn.execute(sa.text("DROP INDEX ix_source_entries_local_id"))
        conn.execute(
            sa.text(
                "INSERT INTO source_entries (connector, source_id, aspect, entry_key) "
                "VALUES ('crm', '1', 'addresses', 'home')"
            )
        )
    db._up_to_date.clear()
    assert db.add_missing_columns(engine, [source_entries]) == ["source_entries.seen_at"]
    assert db.add_missing_indexes(engine, [source_entries]) == [
        "source_entries.ix_source_entries_local_id"
    ]
    db._up_to_date.clear()
    assert db.add_missing_columns(engine, [source_entries]) == []
    assert db.add_missing_indexes(engine, [source_entries]) == []
    columns = {c["name"] for c in sa.inspect(engine).get_columns("source_entries")}
    assert "seen_at" in columns
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM source_entries")).scalar() == 1


def test_history_gives_a_new_records_first_values_field_by_field(engine) -> None:
    """A new golden record's creation is one event; its history reads the first values
    back one field each — from the record, or from the old value of a field's first
    change — with the connector each came from, then the changes; a retired record too."""
    from custsync_pipeline.cli_golden import format_history
    from custsync_pipeline.domain.canonical import GOLDEN_FIELDS
    from custsync_pipeline.domain.golden import CREATED, diff_golden, empty_golden_entries
    from custsync_pipeline.store.golden import golden_history, save_golden_aspects

    def golden(email: str) -> pd.DataFrame:
        row = dict.fromkeys(GOLDEN_FIELDS) | {"first_name": "Ann", "email": email}
        return pd.DataFrame([row | {"golden_id": "G1"}])

    provenance = pd.DataFrame(
        {
            "golden_id": "G1",
            "field": ["first_name", "email"],
            "connector": ["crm", "shop"],
            "source_id": ["c1", "s1"],
        }
    )
    t1, t2 = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-02-01", tz="UTC")
    v1, ev1, _ = diff_golden(golden("ann@shop.se"), pd.DataFrame(), provenance, t1)
    core.save_golden_records(engine, v1, ev1)
    entries = empty_golden_entries()
    sources = pd.DataFrame(columns=["golden_id", "aspect", "entry_key", "connector"])
    save_golden_aspects(engine, ["G1"], entries, sources, provenance)
    v2, ev2, _ = diff_golden(golden("ann.b@shop.se"), v1, provenance, t2)
    core.save_golden_records(engine, v2, ev2)
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT field FROM golden_events ORDER BY id").all()
    assert stored == [(CREATED,), ("email",)]  # one row for the first version
    want = [
        [1, "first_name", None, "Ann", "crm"],
        [1, "email", None, "ann@shop.se", None],  # changed since: its giver is not recorded
        [2, "email", "ann@shop.se", "ann.b@shop.se", "shop"],
    ]
    cols = ["version", "field", "old_value", "new_value", "connector"]
    hist = golden_history(engine, "G1")
    assert hist[cols].values.tolist() == want
    text = format_history("G1", hist)
    assert "first_name: set" in text and "(from crm)" in text
    assert "ann@shop.se" not in text  # masked as every e-mail is
    # retired (merged away): its last values cleared in a version of its own, the first
    # version read back from those events
    stored_v2 = core.load_golden_records(engine)
    _, ev3, gone = diff_golden(golden("x").iloc[:0], stored_v2, provenance.iloc[:0], t2)
    core.save_golden_records(engine, pd.DataFrame(), ev3)
    save_golden_aspects(engine, gone, entries, sources, provenance.iloc[:0])
    core.delete_golden_records(engine, gone)
    assert gone == ["G1"]
    hist = golden_history(engine, "G1")
    assert hist[cols].values.tolist()[:1] == [[1, "first_name", None, "Ann", None]]
    assert hist[cols].values.tolist()[1:] == [
        [1, "email", None, "ann@shop.se", None],
        want[2],
        [3, "first_name", "Ann", None, None],
        [3, "email", "ann.b@shop.se", None, None],
    ]
    # a delete step of the retired record carries its last version (not 0); a live
    # record's step its current one
    from custsync_pipeline.store.delete_events import record_delete_events

    v1b = diff_golden(golden("b@shop.se").assign(golden_id="G2"), pd.DataFrame(), provenance, t1)
    core.save_golden_records(engine, v1b[0], v1b[1])
    assert record_delete_events(engine, ["G1", "G2"], "pending", "crm") == 2
    steps = golden_history(engine, "G1")
    assert steps[cols].values.tolist()[-1] == [3, "delete", None, "pending", "crm"]
    assert golden_history(engine, "G2")["version"].tolist()[-1] == 1
