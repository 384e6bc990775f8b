"""PostgreSQL's CSV ``COPY`` both ways (``store.pg_copy``): every column kind the state DB
uses reads back as the cursor reads it, whatever the server's output settings, and the
hex forms of ``bytea`` agree with Python's own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from custsync_pipeline.store import bulk, pg_copy
from custsync_pipeline.store.db import make_engine

KINDS = sa.MetaData()
EVERY_KIND = sa.Table(
    "every_kind_copy",
    KINDS,
    sa.Column("k", sa.Integer, primary_key=True),
    sa.Column("text", sa.Text),
    sa.Column("name", sa.String(64)),
    sa.Column("big", sa.BigInteger),
    sa.Column("exact", sa.BigInteger),
    sa.Column("num", sa.Float),
    sa.Column("flag", sa.Boolean),
    sa.Column("at", sa.DateTime(timezone=True)),
    sa.Column("naive", sa.DateTime),
    sa.Column("blob", sa.LargeBinary),
)
TEXT = ["plain", "", None, 'quote " and, comma', "new\nline", "cr\rx", "\\.", "\\N", "ünï ✓"]


def _frame() -> pd.DataFrame:
    at = pd.Series(
        pd.to_datetime(
            ["2024-01-01T10:00:00.123456Z", "2024-06-30T23:59:59+02:00", None] * 3,
            utc=True,
            format="ISO8601",
        )
    )
    return pd.DataFrame(
        {
            "k": range(9),
            "text": TEXT,
            "name": ["a", None, "c", "", "e", "f", "g", "h", "i"],
            "big": pd.Series([0, -1, 2**63 - 1, -(2**63), None, 12, 2**53 + 1, 7, 8], dtype=object),
            "exact": [0, -1, 2**63 - 1, -(2**63), 12, 2**53 + 1, 7, 8, 9],
            "num": [0.1, 1e-7, 1e300, float("nan"), -2.5, 123456789.12345679, None, 3.0, 4.0],
            "flag": pd.Series(
                [True, False, None, True, False, True, None, False, True], dtype=object
            ),
            "at": at,
            "naive": at,
            "blob": pd.Series(
                [b"\x00\x01\xff", b"", None, b'\\\t\n,"', b"reach", None, b"\x80" * 40, None, b"b"],
                dtype=object,
            ),
        }
    )


def _cursor_read(engine: sa.Engine, stmt: sa.Select, monkeypatch, **kw) -> pd.DataFrame:
    """The same read through the driver's cursor (the path before COPY, and SQLite's)."""
    with monkeypatch.context() as m:
        m.setattr(bulk, "read_copy", lambda *a: None)
        return bulk.read_frame(engine, stmt, **kw)


def test_copy_reads_every_kind_as_the_cursor_does_whatever_the_server_settings(
    pg_url: str, monkeypatch
) -> None:
    """Written through CSV COPY, then read through CSV COPY on a database whose output
    settings differ from the defaults (dates day-first, escaped bytea, short floats,
    another zone; the cursor cannot even parse such times): the same frame, dtypes
    included, as the cursor read under the defaults, and the values that went in."""
    engine = make_engine(pg_url)
    KINDS.create_all(engine)
    frame = _frame()
    with engine.begin() as conn:
        assert bulk.insert_frame(conn, EVERY_KIND, frame) == len(frame)
    stmt = sa.select(EVERY_KIND).order_by(EVERY_KIND.c.k)
    parts = [stmt.where(EVERY_KIND.c.k < 4), stmt.where(EVERY_KIND.c.k >= 4)]
    by_cursor = _cursor_read(engine, stmt, monkeypatch)
    by_cursor_text = _cursor_read(engine, parts, monkeypatch, arrow_text=True)
    with engine.begin() as conn:
        db = conn.exec_driver_sql("SELECT current_database()").scalar()
        for setting in (
            "DateStyle = 'SQL, DMY'",
            "bytea_output = 'escape'",
            "extra_float_digits = 0",
            "TimeZone = 'America/New_York'",
        ):
            conn.exec_driver_sql(f'ALTER DATABASE "{db}" SET {setting}')
    engine.dispose()
    with engine.connect() as conn:  # the COPY path is taken (not the fallback)
        kinds = {c.name: c.type for c in stmt.selected_columns}
        assert pg_copy.read_copy(conn, [stmt], kinds, None) is not None
    copied = bulk.read_frame(engine, stmt)
    pd.testing.assert_frame_equal(copied, by_cursor)
    assert copied["text"].tolist() == TEXT
    # 64-bit extremes exact (a column with NULLs is floats in either read, as pandas has it)
    assert copied["exact"].dtype == np.int64
    assert copied["exact"].tolist() == frame["exact"].tolist()
    assert copied["big"].isna().tolist() == frame["big"].isna().tolist()
    assert copied["num"].tolist()[:3] == [0.1, 1e-7, 1e300]
    assert copied["num"].tolist()[5] == 123456789.12345679  # every digit back
    assert copied["flag"].tolist() == frame["flag"].tolist()
    assert str(copied["at"].dtype) == "datetime64[ns, UTC]"
    assert copied["at"].equals(frame["at"]) and copied["naive"].equals(frame["at"])
    assert copied["blob"].tolist() == frame["blob"].tolist()
    # Arrow-backed text, and a read in parts (one statement per chunk of keys)
    texts = bulk.read_frame(engine, parts, arrow_text=True)
    assert texts["text"].dtype == bulk.ARROW_TEXT
    assert texts["text"].astype(object).where(texts["text"].notna(), None).tolist() == TEXT
    pd.testing.assert_frame_equal(texts, by_cursor_text)
    engine.dispose()


def test_an_empty_read_and_a_kind_copy_does_not_carry_take_the_cursor(pg_url: str) -> None:
    """An empty read is typed as the cursor types it (the COPY gives no rows to type), and a
    column kind COPY does not carry falls back to the cursor read."""
    engine = make_engine(pg_url)
    KINDS.create_all(engine)
    empty = bulk.read_frame(engine, sa.select(EVERY_KIND))
    assert empty.empty and list(empty.columns) == [c.name for c in EVERY_KIND.c]
    with engine.begin() as conn:
        bulk.insert_frame(conn, EVERY_KIND, _frame())
    # a column of no known kind (here JSON): the cursor reads it
    counted = sa.select(
        sa.func.count().label("n"), sa.literal_column("'{}'::json").label("j")
    ).select_from(EVERY_KIND)
    with engine.connect() as conn:
        assert (
            pg_copy.read_copy(
                conn, [counted], {c.name: c.type for c in counted.selected_columns}, None
            )
            is None
        )
    assert bulk.read_frame(engine, counted)["n"].tolist() == [9]
    engine.dispose()


@pytest.mark.parametrize("seed", [0, 1])
def test_hex_forms_of_bytes_agree_with_python(seed: int) -> None:
    """``to_hex`` writes what PostgreSQL's ``bytea`` hex input reads, ``unhex`` reads its
    output: both as Python's ``bytes.hex`` has them, NULL and empty values included."""
    rng = np.random.default_rng(seed)
    values = [
        None
        if rng.random() < 0.2
        else bytes(rng.integers(0, 256, rng.integers(0, 40), dtype=np.uint8))
        for _ in range(500)
    ]
    arr = pa.array(values, type=pa.binary())
    text = pg_copy.to_hex(arr)
    assert text.to_pylist() == [None if v is None else "\\x" + v.hex() for v in values]
    assert pg_copy.unhex(text).to_pylist() == values
    upper = pa.array([None if v is None else "\\x" + v.hex().upper() for v in values])
    assert pg_copy.unhex(upper).to_pylist() == values
    # a slice of an array (its buffers start before the slice)
    assert pg_copy.unhex(text.slice(7, 50)).to_pylist() == values[7:57]
    assert pg_copy.to_hex(arr.slice(7, 50)).to_pylist() == text.slice(7, 50).to_pylist()
    with pytest.raises(ValueError, match="hex"):
        pg_copy.unhex(pa.array(["\\001abc"]))


def test_reads_and_deletes_by_many_keys(engine) -> None:
    """By 12,000 keys (quotes, commas, backslashes, unicode among them): PostgreSQL binds
    them as one array, SQLite as one JSON array (one statement each, not a placeholder
    per key); both read and delete exactly the rows named, by text or by integer (numpy's
    too)."""
    meta = sa.MetaData()
    table = sa.Table(
        "keyed",
        meta,
        sa.Column("connector", sa.Text, primary_key=True),
        sa.Column("source_id", sa.Text, primary_key=True),
        sa.Column("n", sa.Integer),
    )
    meta.create_all(engine)
    ids = [f"id-{i}" for i in range(30_000)] + ["o'brien", 'say "hi", then', "back\\slash", "ü"]
    frame = pd.DataFrame({"connector": "crm", "source_id": ids, "n": range(len(ids))})
    with engine.begin() as conn:
        bulk.insert_frame(conn, table, frame)
    wanted = ids[:30_000:2][:12_000] + ids[-4:]
    parts = bulk.one_of(engine.dialect.name, table.c.source_id, wanted)
    assert len(parts) == 1
    keys = pd.DataFrame({"connector": "crm", "source_id": wanted})
    got = bulk.read_keyed(engine, sa.select(table), table, keys)
    assert sorted(got["source_id"]) == sorted(wanted)
    with engine.begin() as conn:
        assert bulk.delete_in(conn, table, "source_id", wanted) == len(wanted)
    left = bulk.read_frame(engine, sa.select(table.c.source_id))["source_id"]
    assert sorted(left) == sorted(set(ids) - set(wanted))
    # values JSON cannot carry as they are go as an IN list (SQLite): a NaN, a NUL in a
    # text (SQLite's JSON would end it there and find "nul"; PostgreSQL stores no NUL)
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            conn.execute(table.insert().values(connector="crm", source_id="nul", n=-2))
            assert bulk.delete_in(conn, table, "n", [float("nan"), -2.0]) == 1
            conn.execute(table.insert().values(connector="crm", source_id="nul", n=-2))
            conn.execute(table.insert().values(connector="crm", source_id="nul\x00x", n=-3))
        nul = pd.DataFrame({"connector": ["crm"], "source_id": ["nul\x00x"]})
        assert bulk.read_keyed(engine, sa.select(table), table, nul)["n"].tolist() == [-3]
        with engine.begin() as conn:
            assert bulk.delete_in(conn, table, "source_id", ["nul\x00x"]) == 1
            assert bulk.delete_in(conn, table, "n", [-2]) == 1
    # a number names the text key it spells (as an IN list's value would)
    with engine.begin() as conn:
        conn.execute(table.insert().values(connector="crm", source_id="123", n=-1))
    got = bulk.read_keyed(
        engine, sa.select(table), table, pd.DataFrame({"connector": ["crm"], "source_id": [123]})
    )
    assert got["n"].tolist() == [-1]
    with engine.begin() as conn:
        assert bulk.delete_in(conn, table, "source_id", [np.int64(123)]) == 1
    numbers = np.arange(1, 30_000, 2)[:5_000]  # odd n: rows not deleted above
    with engine.begin() as conn:
        assert bulk.delete_in(conn, table, "n", numbers.tolist()[:10]) == 10
        assert bulk.delete_in(conn, table, "n", numbers[10:]) == len(numbers) - 10
    assert len(bulk.read_frame(engine, sa.select(table.c.n))) == len(left) - len(numbers)


def test_a_bulk_write_leaves_postgresql_statistics_of_the_rows_written(pg_url: str) -> None:
    """A write of at least ``ANALYZE_MIN_ROWS`` and more than a tenth of the table is
    followed by ANALYZE in its transaction: PostgreSQL plans the next reads on the rows
    there, not on an empty table's guess; a small write leaves the statistics be. A second
    writer of the table does not wait for the first one's commit (``SKIP_LOCKED``)."""
    engine = make_engine(pg_url)
    meta = sa.MetaData()
    table = sa.Table(
        "analyzed", meta, sa.Column("k", sa.Integer, primary_key=True), sa.Column("v", sa.Text)
    )
    meta.create_all(engine)
    floor = bulk.ANALYZE_MIN_ROWS

    def counted() -> float:
        with engine.connect() as conn:
            q = "SELECT reltuples FROM pg_class WHERE relname = 'analyzed'"
            return float(conn.execute(sa.text(q)).scalar())

    def rows(start: int, n: int) -> pd.DataFrame:
        return pd.DataFrame({"k": range(start, start + n), "v": "x"})

    def write(start: int, n: int) -> None:
        with engine.begin() as conn:
            bulk.insert_frame(conn, table, rows(start, n))

    assert counted() <= 0  # never analyzed (-1 since PostgreSQL 14)
    write(0, 2 * floor)
    assert counted() == 2 * floor
    write(2 * floor, floor // 2)  # under the floor: no ANALYZE
    assert counted() == 2 * floor
    write(3 * floor, floor)
    assert counted() == 3.5 * floor
    # two writers of the table at once: the second one's ANALYZE is skipped, not queued
    # behind the first transaction (a lock timeout would fail it)
    with engine.begin() as first:
        bulk.insert_frame(first, table, rows(10 * floor, floor))
        with engine.begin() as second:
            second.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
            bulk.insert_frame(second, table, rows(20 * floor, floor))
    assert counted() == 4.5 * floor  # the first writer's count (it saw its own rows)
    engine.dispose()


def test_copy_holds_on_long_rows_autocommit_other_encodings_and_loose_booleans(
    pg_url: str, monkeypatch
) -> None:
    """A row longer than Arrow's parse block, a connection in autocommit (SET LOCAL needs
    the read's own transaction), a client encoding other than UTF-8 both ways, booleans
    given as 0/1: each reads and writes what the cursor would."""
    meta = sa.MetaData()
    table = sa.Table(
        "loose",
        meta,
        sa.Column("k", sa.Integer, primary_key=True),
        sa.Column("text", sa.Text),
        sa.Column("flag", sa.Boolean),
        sa.Column("at", sa.DateTime(timezone=True)),
    )
    engine = make_engine(pg_url)
    meta.create_all(engine)
    latin1 = sa.create_engine(
        engine.url, connect_args={"options": "-c client_encoding=LATIN1 -c DateStyle=SQL,DMY"}
    )
    frame = pd.DataFrame(
        {
            "k": [1, 2, 3],
            "text": ["café", "x" * 5_000, None],
            "flag": pd.Series([1, 0, None], dtype=object),
            "at": pd.to_datetime(
                ["2024-03-01T10:00:00Z", None, "2024-12-31T23:00:00+01:00"], utc=True
            ),
        }
    )
    with latin1.begin() as conn:  # Arrow's UTF-8 through a LATIN1 session
        bulk.insert_frame(conn, table, frame)
    stmt = sa.select(table).order_by(table.c.k)
    monkeypatch.setattr(pg_copy, "_BLOCK", 1_024)  # the long row straddles blocks
    for reader in (engine, latin1.execution_options(isolation_level="AUTOCOMMIT")):
        back = bulk.read_frame(reader, stmt)
        assert back["text"].tolist() == ["café", "x" * 5_000, None]
        assert back["flag"].tolist() == [True, False, None]
        assert back["at"].tolist()[0] == pd.Timestamp("2024-03-01T10:00:00Z")
        assert back["at"].isna().tolist() == [False, True, False]
    with engine.connect() as conn:  # stored as UTF-8 text, not its bytes taken as LATIN1
        assert conn.execute(sa.select(table.c.text).where(table.c.k == 1)).scalar() == "café"
    with engine.connect() as conn:  # read by COPY (the long row again as one block)
        kinds = {c.name: c.type for c in stmt.selected_columns}
        assert pg_copy.read_copy(conn, [stmt], kinds, None) is not None
        # the read's own transaction is over: nothing left open on the connection
        assert conn.connection.driver_connection.info.transaction_status.name == "IDLE"
    latin1.dispose()
    engine.dispose()


def _indexed_table(meta: sa.MetaData) -> sa.Table:
    return sa.Table(
        "indexed_rows",
        meta,
        sa.Column("connector", sa.Text, primary_key=True),
        sa.Column("source_id", sa.Text, primary_key=True),
        sa.Column("golden_id", sa.Text, index=True),
        sa.Column("code", sa.Text, unique=True),
    )


@pytest.fixture
def dropped(monkeypatch) -> list[str]:
    """The names of the indexes dropped while the test runs."""
    names: list[str] = []
    real_drop = sa.Index.drop
    monkeypatch.setattr(
        sa.Index, "drop", lambda self, bind: (names.append(self.name), real_drop(self, bind))[1]
    )
    return names


def test_a_big_insert_into_an_empty_table_builds_its_indexes_after(
    engine, monkeypatch, dropped: list[str]
) -> None:
    """A big insert into an empty SQLite table drops its non-unique indexes and builds
    them after the rows (in one transaction); an insert that fails leaves the indexes and
    the table as they were; an insert into a table that holds rows keeps its indexes in
    place. PostgreSQL keeps them in place always (a dropped index would lock the table
    against readers until the commit)."""
    sqlite = engine.dialect.name == "sqlite"
    monkeypatch.setattr(bulk, "REBUILD_INDEX_ROWS", 100)
    meta = sa.MetaData()
    table = _indexed_table(meta)
    meta.create_all(engine)

    def indexes() -> set[str]:
        return {i["name"] for i in sa.inspect(engine).get_indexes(table.name)}

    before = indexes()
    assert "ix_indexed_rows_golden_id" in before
    ids = np.random.default_rng(0).permutation(500)
    frame = pd.DataFrame(
        {
            "connector": "crm",
            "source_id": [f"s{i}" for i in ids],
            "golden_id": [f"G{i % 97}" for i in ids],
            "code": [f"c{i}" for i in ids],
        }
    )
    bad = pd.concat([frame, frame.iloc[[3]].assign(source_id="other")], ignore_index=True)
    # a duplicate code: the whole insert fails (the driver's own error: a bulk path)
    with pytest.raises(Exception, match="(?i)unique"):
        with engine.begin() as conn:
            bulk.insert_frame(conn, table, bad)
    # the unique one is kept in place
    assert dropped == (["ix_indexed_rows_golden_id"] if sqlite else [])
    assert indexes() == before
    assert bulk.read_frame(engine, sa.select(table)).empty
    with engine.begin() as conn:
        assert bulk.insert_frame(conn, table, frame) == len(frame)
    assert indexes() == before and len(dropped) == (2 if sqlite else 0)
    got = bulk.read_frame(engine, sa.select(table).where(table.c.golden_id == "G5"))
    assert sorted(got["source_id"]) == sorted(frame.loc[frame["golden_id"] == "G5", "source_id"])
    more = frame.assign(connector="shop", code=frame["code"] + "x")
    with engine.begin() as conn:
        bulk.insert_frame(conn, table, more)
    assert len(dropped) == (2 if sqlite else 0)  # the table held rows: updated in place
    assert len(bulk.read_frame(engine, sa.select(table))) == 2 * len(frame)


def test_an_index_the_rows_go_in_the_order_of_stays_in_place(
    engine, monkeypatch, dropped: list[str]
) -> None:
    """Rows without their key (an id the table numbers) go in the order of the first index
    they hold (by name: golden_id): that index is appended to, not dropped and built
    again; the other is built after the rows."""
    monkeypatch.setattr(bulk, "REBUILD_INDEX_ROWS", 100)
    meta = sa.MetaData()
    table = sa.Table(
        "numbered_events",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("golden_id", sa.Text, index=True),
        sa.Column("kind", sa.Text, index=True),
    )
    meta.create_all(engine)
    frame = pd.DataFrame({"golden_id": [f"G{i % 37}" for i in range(400)], "kind": "a"})
    with engine.begin() as conn:
        bulk.insert_frame(conn, table, frame)
    assert dropped == (["ix_numbered_events_kind"] if engine.dialect.name == "sqlite" else [])
    got = bulk.read_frame(engine, sa.select(table).order_by(table.c.id))
    assert got["golden_id"].tolist() == sorted(frame["golden_id"])  # in index order


def test_a_big_insert_waits_out_another_writer(tmp_path, monkeypatch) -> None:
    """The rebuild takes SQLite's write lock first: beside another connection's write it
    waits for the busy timeout, as an insert does, instead of failing with "database is
    locked" when a read transaction would turn into a write."""
    import sqlite3
    import threading

    monkeypatch.setattr(bulk, "REBUILD_INDEX_ROWS", 100)
    path = tmp_path / "busy.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    meta = sa.MetaData()
    table = _indexed_table(meta)
    other = sa.Table("other_rows", meta, sa.Column("k", sa.Integer, primary_key=True))
    meta.create_all(engine)
    writer = sqlite3.connect(path, timeout=30, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute(f'INSERT INTO "{other.name}" (k) VALUES (1)')
    timer = threading.Timer(1.0, writer.commit)
    timer.start()
    frame = pd.DataFrame(
        {"connector": "crm", "source_id": [f"s{i}" for i in range(300)], "golden_id": "G"}
    )
    try:
        with engine.begin() as conn:
            assert bulk.insert_frame(conn, table, frame) == 300
    finally:
        timer.join()
        writer.close()
    assert len(bulk.read_frame(engine, sa.select(table))) == 300
