"""Sparse reads (``bulk.read_frame(..., sparse=True)``): on SQLite the columns that hold no
value in any row are not fetched, and the frame is the one a full read gives — the same
values, columns, order and dtypes, with text as Arrow strings or not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from custsync_pipeline.store import bulk
from custsync_pipeline.store.db import make_engine

META = sa.MetaData()
WIDE = sa.Table(
    "wide_entries",
    META,
    sa.Column("connector", sa.Text, primary_key=True),
    sa.Column("source_id", sa.Text, primary_key=True),
    sa.Column("aspect", sa.Text, primary_key=True),
    sa.Column("value", sa.Text),
    sa.Column("street", sa.Text),
    sa.Column("city", sa.Text),
    sa.Column("size", sa.Float),
    sa.Column("rank", sa.Integer),
    sa.Column("primary", sa.Boolean),
    sa.Column("seen_at", sa.DateTime(timezone=True)),
    sa.Column("checked_at", sa.DateTime(timezone=True)),
)


@pytest.fixture
def engine(tmp_path) -> sa.Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'sparse.sqlite'}")
    META.create_all(engine)
    seen = pd.Timestamp("2026-01-02T03:04:05.123456Z")
    rows = pd.DataFrame(
        {
            "connector": ["crm"] * 4 + ["shop"] * 2,
            "source_id": ["1", "2", "3", "4", "a", "b"],
            "aspect": ["emails", "emails", "addresses", "phones", "emails", "emails"],
            "value": ["x@example.com", "y@example.com", None, "+4670", "z@example.com", None],
            # only one crm address fills street and city; only the shop's rows a size
            "street": [None, None, "Storgatan 1", None, None, None],
            "city": [None, None, "Lund", None, None, None],
            "size": [None, None, None, None, 1.5, None],
            "seen_at": [seen] * 6,
        }
    )
    with engine.begin() as conn:
        bulk.insert_frame(conn, WIDE, rows)
    return engine


def _statements(engine: sa.Engine) -> list[str]:
    seen: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


@pytest.mark.parametrize("arrow_text", [False, True])
def test_a_sparse_read_skips_empty_columns_and_gives_the_full_frame(
    engine: sa.Engine, arrow_text: bool
) -> None:
    stmt = sa.select(WIDE)
    key = ["connector", "source_id"]
    full = bulk.read_frame(engine, stmt, arrow_text=arrow_text).sort_values(key)
    statements = _statements(engine)
    sparse = bulk.read_frame(engine, stmt, arrow_text=arrow_text, sparse=True)
    pd.testing.assert_frame_equal(sparse.sort_values(key), full)
    assert list(sparse.columns) == [c.name for c in WIDE.columns]
    # the read itself (the last statement) names no column that is empty everywhere
    read = statements[-1]
    for empty in ("rank", "primary", "checked_at"):
        assert f'"{empty}"' not in read and f".{empty}," not in read and f".{empty} " not in read
    assert "street" in read and "size" in read
    assert sparse["checked_at"].isna().all() and str(sparse["checked_at"].dtype) == str(
        full["checked_at"].dtype
    )


def test_parts_of_one_read_keep_a_column_any_part_fills(engine: sa.Engine) -> None:
    """A read in parts (a statement per connector): the crm part fills street, the shop
    part size; each column is kept for both parts, and a part's rows hold missing values
    where it has none."""
    parts = [
        sa.select(WIDE).where(WIDE.c.connector == "crm", WIDE.c.source_id.in_(["3", "1"])),
        sa.select(WIDE).where(WIDE.c.connector == "shop", WIDE.c.source_id.in_(["a"])),
    ]
    full = bulk.read_frame(engine, parts, arrow_text=True)
    sparse = bulk.read_frame(engine, parts, arrow_text=True, sparse=True)
    order = ["connector", "source_id"]
    pd.testing.assert_frame_equal(
        sparse.sort_values(order).reset_index(drop=True),
        full.sort_values(order).reset_index(drop=True),
    )
    by_id = sparse.set_index("source_id")
    assert by_id.loc["3", "street"] == "Storgatan 1" and by_id.loc["a", "size"] == 1.5
    assert pd.isna(by_id.loc["a", "street"]) and pd.isna(by_id.loc["3", "size"])


def test_an_empty_sparse_read_keeps_every_column(engine: sa.Engine) -> None:
    stmt = sa.select(WIDE).where(WIDE.c.connector == "nobody")
    sparse = bulk.read_frame(engine, stmt, sparse=True)
    full = bulk.read_frame(engine, stmt)
    assert sparse.empty and list(sparse.columns) == list(full.columns)
    assert (sparse.dtypes == full.dtypes).all()


def test_arrow_strings_write_other_values_as_text() -> None:
    """A driver can hand back a number in a text column (SQLite's type affinity): it is
    written as text, as ``astype`` does, not refused."""
    mixed = pd.Series(["a", 5, None], dtype=object)
    out = bulk.arrow_strings(mixed)
    assert out.dtype == bulk.ARROW_TEXT
    assert out.tolist()[:2] == ["a", "5"] and pd.isna(out.iloc[2])
    text = pd.Series(["é", None, ""], dtype=object, name="t")
    pd.testing.assert_series_equal(bulk.arrow_strings(text), text.astype(bulk.ARROW_TEXT))


def test_stack_rows_is_a_concat_of_rows() -> None:
    """``stack_rows`` gives what ``pd.concat`` gives for frames of one set of types: one of
    them holds a column all missing (as a column of its own, as a cast leaves it) and an
    index of its own."""
    when = pd.to_datetime(["2026-01-01T10:00:00Z", None], utc=True)
    kept = pd.DataFrame(
        {"id": ["a", "b", "c"], "n": [1.5, None, 2.0], "at": [pd.NaT] * 3}, index=[7, 8, 9]
    )
    kept["at"] = pd.to_datetime(kept["at"], utc=True)
    kept["city"] = pd.Series([None] * 3, dtype=object, index=kept.index)
    kept["code"] = pd.Series([None, "x", None], dtype=bulk.ARROW_TEXT, index=kept.index)
    fresh = pd.DataFrame(
        {
            "id": ["d", "e"],
            "n": [None, 3.0],
            "at": when,
            "city": ["Lund", None],
            "code": pd.Series(["y", None], dtype=bulk.ARROW_TEXT),
        }
    )
    got = bulk.stack_rows([kept, fresh])
    pd.testing.assert_frame_equal(got, pd.concat([kept, fresh], ignore_index=True))
    assert got["city"].tolist()[3] == "Lund" and got["at"].iloc[3] == when[0]
    assert got["code"].dtype == bulk.ARROW_TEXT
    pd.testing.assert_frame_equal(bulk.stack_rows([kept]), kept.reset_index(drop=True))


def test_the_probe_and_the_read_see_one_snapshot(engine: sa.Engine, monkeypatch) -> None:
    """A row written by another connection between the probe and the read (its ``rank``,
    empty until then, filled) is not half-read: the read sees the table as the probe did."""
    probe = bulk._empty_columns

    def probe_then_write(conn, stmts):
        empty = probe(conn, stmts)
        assert "rank" in empty
        with engine.begin() as other:
            other.execute(
                WIDE.insert().values(connector="crm", source_id="9", aspect="emails", rank=7)
            )
        return empty

    monkeypatch.setattr(bulk, "_empty_columns", probe_then_write)
    got = bulk.read_frame(engine, sa.select(WIDE), sparse=True)
    assert "9" not in set(got["source_id"]) and len(got) == 6
    monkeypatch.setattr(bulk, "_empty_columns", probe)
    again = bulk.read_frame(engine, sa.select(WIDE), sparse=True)
    assert again.set_index("source_id").loc["9", "rank"] == 7


def test_shaped_statements_are_read_as_they_are(engine: sa.Engine) -> None:
    """A limit, an order by a label, a grouping or a second table: the probe would count
    other rows (or drop a column the statement names), so such a read is not sparse."""
    other = WIDE.alias("other")
    top = sa.select(WIDE).order_by(WIDE.c.street.desc()).limit(1)
    cases = [
        top,
        sa.select(WIDE.c.source_id, WIDE.c.rank.label("r")).order_by("r"),
        sa.select(WIDE.c.aspect, sa.func.count().label("n")).group_by(WIDE.c.aspect),
        sa.select(WIDE.c.source_id, other.c.rank.label("r2")).where(
            other.c.connector == WIDE.c.connector
        ),
    ]
    for stmt in cases:
        full = bulk.read_frame(engine, stmt)
        pd.testing.assert_frame_equal(bulk.read_frame(engine, stmt, sparse=True), full)
    assert bulk.read_frame(engine, top, sparse=True)["street"].tolist() == ["Storgatan 1"]


DEFAULTS = sa.Table(
    "defaulted_entries",
    META,
    sa.Column("connector", sa.Text, primary_key=True),
    sa.Column("source_id", sa.Text, primary_key=True),
    sa.Column("value", sa.Text),
    sa.Column("street", sa.Text),
    sa.Column("rank", sa.Integer),
    sa.Column("seen_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.Text, server_default="new"),
)


def test_a_sparse_insert_writes_each_row_as_it_is(tmp_path, monkeypatch) -> None:
    """Each insert statement names only the columns its rows fill (and a column with a
    default of its own, written NULL rather than left to its default); the rows go in
    their key order, and what is read back is what was written."""
    engine = make_engine(f"sqlite:///{tmp_path / 'insert.sqlite'}")
    META.create_all(engine)
    monkeypatch.setattr(bulk, "SQLITE_ROWS_PER_INSERT", 100)
    rng = np.random.default_rng(3)
    n = 3000
    kind = np.sort(rng.integers(0, 6, n))  # runs of rows that fill the same columns
    frame = pd.DataFrame(
        {
            "connector": "crm",
            "source_id": [f"r{i:05d}" for i in range(n)],
            "value": np.where(kind % 3 == 0, None, [f"v{i}" for i in range(n)]).astype(object),
            "street": np.where(kind == 4, [f"s{i}" for i in range(n)], None).astype(object),
            "rank": pd.array(np.where(kind % 2 == 0, kind, -1), dtype="Int64"),
            "seen_at": pd.to_datetime(kind, unit="D", utc=True),
            "status": pd.Series(np.where(kind % 5 == 0, "done", None), dtype=object),
        }
    ).sample(frac=1.0, random_state=1)  # given out of order: written in key order
    frame.loc[frame["rank"] == -1, "rank"] = pd.NA
    traced: list[str] = []
    with engine.begin() as conn:
        conn.connection.driver_connection.set_trace_callback(traced.append)
        assert bulk.insert_frame(conn, DEFAULTS, frame) == n
        conn.connection.driver_connection.set_trace_callback(None)
    heads = [t.split(" VALUES ")[0] for t in traced if t.startswith("INSERT")]
    assert len(heads) == n // 100
    assert any('"street"' not in h for h in heads) and any('"street"' in h for h in heads)
    assert all('"status"' in h for h in heads)  # a default of its own: written
    with engine.connect() as conn:
        order = [
            r[0]
            for r in conn.exec_driver_sql("SELECT source_id FROM defaulted_entries ORDER BY rowid")
        ]
    assert order == sorted(frame["source_id"])
    got = bulk.read_frame(engine, sa.select(DEFAULTS)).sort_values("source_id")
    want = frame.sort_values("source_id")
    for col in ("value", "street", "status"):
        assert got[col].tolist() == want[col].where(want[col].notna(), None).tolist(), col
    assert got["status"].isna().sum() > 0
    assert (got["seen_at"].to_numpy() == want["seen_at"].to_numpy()).all()
    assert (
        got["rank"].astype("Float64").fillna(-1).tolist()
        == want["rank"].astype("Float64").fillna(-1).tolist()
    )
