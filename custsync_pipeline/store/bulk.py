"""Bulk loading of DataFrames into state-DB tables and reading them back: PostgreSQL
``COPY`` in CSV both ways (``store.pg_copy``), SQLite multi-row ``INSERT ... VALUES``
statements in the caller's transaction.

SQLAlchemy's ``insert()`` with a list of dicts processes every bound value in
Python, about 20k rows/s; these paths skip that and write the values the way
SQLAlchemy itself stores and reads them (SQLite timestamps as
``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, PostgreSQL ``timestamptz``), so the readers
stay SQLAlchemy Core.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from custsync_pipeline.domain.hashing import row_hashes64
from custsync_pipeline.domain.times import iso_utc
from custsync_pipeline.store.db import metadata
from custsync_pipeline.store.pg_copy import read_copy, to_hex, write_copy

# rows per SQLite INSERT statement (its bound values capped by the connection's limit):
# one statement of many VALUES rows costs a third less than a prepared statement run per
# row (executemany), measured at a million rows of eight columns
SQLITE_ROWS_PER_INSERT = 500
# an insert of at least this many rows into an empty SQLite table drops the table's secondary
# indexes first and builds them after, in the same transaction: an index built from the
# sorted table costs a quarter of one updated row by row in random key order (a million
# identity-map rows into SQLite: 8.0 s with its golden-id index kept, 2.8 + 1.0 s so)
REBUILD_INDEX_ROWS = 50_000
# keys per DELETE ... IN (...): well under SQLite's bound-parameter limit (32,766)
IN_CHUNK = 5_000
# values per PostgreSQL ``= ANY(array)``: one parameter, however long
ANY_CHUNK = 100_000
# rows per fetch when text is read into Arrow strings
READ_BATCH = 200_000
ARROW_TEXT = pd.StringDtype("pyarrow")


def sqlite_times(when: pd.Series) -> np.ndarray:
    """UTC times as SQLAlchemy stores them in SQLite (``YYYY-MM-DD HH:MM:SS.ffffff``), None
    for NaT: each distinct time formatted once in C (``strftime`` costs ~10 s a million)."""
    naive = when.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[us]")
    codes, uniques = pd.factorize(naive)
    out = np.full(len(naive), None, dtype=object)
    if not len(uniques):
        return out
    text = np.char.replace(np.datetime_as_string(np.asarray(uniques), unit="us"), "T", " ")
    present = codes >= 0
    out[present] = text.astype(object)[codes[present]]
    return out


_TEXT = ("string", "empty")  # pandas.api.types.infer_dtype of a text column


def _column_values(series: pd.Series, column: sa.Column) -> np.ndarray:
    """One column as an object array of DB-API values (None for missing); times as
    SQLite's text."""
    return _values_and_missing(series, column)[0]


def _values_and_missing(series: pd.Series, column: sa.Column) -> tuple[np.ndarray, np.ndarray]:
    """``_column_values`` and which of them are missing, the mask from what the conversion
    finds anyway (no second pass over a column of Python objects)."""
    if isinstance(column.type, sa.DateTime):
        when = pd.to_datetime(series, utc=True, errors="coerce")
        return sqlite_times(when), when.isna().to_numpy()
    if isinstance(column.type, sa.Integer):  # Python ints (the DB-API binds no numpy int)
        ints = _integers(series)
        return ints.to_numpy(dtype=object, na_value=None), np.asarray(ints.isna(), dtype=bool)
    if isinstance(column.type, sa.Float):
        values = pd.to_numeric(series, errors="coerce")
        missing = values.isna().to_numpy()
        return values.astype(object).where(~missing, None).to_numpy(dtype=object), missing
    if isinstance(column.type, sa.Boolean):
        missing = series.isna().to_numpy()
        return series.astype(object).where(~missing, None).to_numpy(dtype=object), missing
    if isinstance(column.type, sa.LargeBinary):  # bytes as they are, anything else NULL
        out = series.to_numpy(dtype=object, copy=True)
        missing = pd.isna(out)
        if pd.api.types.infer_dtype(out[~missing], skipna=False) not in ("bytes", "empty"):
            missing |= np.array([not isinstance(v, bytes | bytearray | memoryview) for v in out])
        out[missing] = None
        return out, missing
    # text as it is (no conversion, one C pass for the missing values): a str column
    if isinstance(series.dtype, pd.StringDtype):
        return series.to_numpy(dtype=object, na_value=None), series.isna().to_numpy()
    if series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) in _TEXT:
        out = series.to_numpy(dtype=object, copy=True)
        missing = pd.isna(out)
        out[missing] = None
        return out, missing
    text = series.astype("string")
    missing = text.isna().to_numpy()
    return text.astype(object).where(~missing, None).to_numpy(dtype=object), missing


def _integers(series: pd.Series) -> pd.api.extensions.ExtensionArray:
    """A column as nullable 64-bit integers: exact for ints (a detour through floats
    rounds past 2**53), else numbers parsed (fractions cut toward zero) with anything
    unparseable missing. A value beyond 64 signed bits raises, never wraps."""
    if pd.api.types.is_unsigned_integer_dtype(series.dtype) and len(series):
        if int(series.max()) > np.iinfo(np.int64).max:
            raise OverflowError(f"{series.name}: a value does not fit a signed 64-bit integer")
    try:
        return pd.array(series, dtype="Int64")
    except (TypeError, ValueError):
        return pd.array(np.trunc(pd.to_numeric(series, errors="coerce")), dtype="Int64")


def _sort_key(table: sa.Table, columns: Sequence[str]) -> list[str]:
    """The columns an insert of ``columns`` into ``table`` goes in the order of: the
    primary key, else the first index (by name) the columns hold; [] when none."""
    pk = [c.name for c in table.primary_key.columns]
    if not pk or not all(c in columns for c in pk):
        indexes = sorted(table.indexes, key=lambda i: i.name or "")
        indexed = [[c.name for c in i.columns] for i in indexes]
        pk = next((cols for cols in indexed if all(c in columns for c in cols)), [])
    return pk


def _index_order(frame: pd.DataFrame, pk: list[str]) -> np.ndarray | None:
    """The positions of ``frame``'s rows in the order of the columns ``pk`` (``_sort_key``:
    the table's primary key, else its first index): rows inserted in index order append
    to the index's B-tree instead of touching a random page each, about twice as fast in
    SQLite for millions of rows. Arrow sorts (stable: rows with equal keys keep their
    order); None when there is nothing to sort by."""
    if len(frame) < 2 or not pk:
        return None
    try:
        keys = pa.Table.from_pandas(frame[pk], preserve_index=False)
        order = pc.sort_indices(keys, sort_keys=[(c, "ascending") for c in pk])
    except Exception:  # noqa: BLE001 - keys Arrow cannot sort (mixed or huge values): as given
        return None
    return order.to_numpy()


def insert_frame(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    """Insert every row of ``frame`` (its columns that ``table`` has) in the open
    transaction of ``conn``, in the order of the table's key; returns the rows written.
    A big insert into an empty SQLite table builds its secondary indexes after the rows
    (``REBUILD_INDEX_ROWS``), in the same transaction: a failure leaves them as they were."""
    if frame.empty:
        return 0
    cols = [c for c in frame.columns if c in table.c]
    key = _sort_key(table, cols)
    order = _index_order(frame[cols], key)
    with _indexes_built_after(conn, table, len(frame), key):
        _insert(conn, table, frame, cols, order)
    if conn.dialect.name == "postgresql":
        _analyze_after(conn, table, len(frame))
    return len(frame)


# PostgreSQL: a write of at least this many rows, and more than a tenth of the rows last
# counted (autovacuum's own rule, with a floor: a small table plans well either way),
# is followed by ANALYZE of its table
ANALYZE_MIN_ROWS = 10_000


def _analyze_after(conn: sa.Connection, table: sa.Table, rows: int) -> None:
    """ANALYZE ``table`` after a write of ``rows`` (``ANALYZE_MIN_ROWS``). PostgreSQL plans
    every read by those statistics, and a bulk load leaves none until autovacuum comes by
    (a minute or more later; never where it is off): the next step's reads of a million
    rows were planned as of a few thousand. In the caller's transaction (it sees the
    rows; the statistics count for others from its commit), ``SKIP_LOCKED``: a writer of
    the same table in another transaction that analyzed it first holds its lock until
    its commit, and this one does not wait for it (lanes write source records side by
    side). A rollback keeps the row count ANALYZE noted (PostgreSQL writes it in place):
    a later write then counts against that."""
    if rows < ANALYZE_MIN_ROWS:
        return
    counted = conn.execute(
        sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:name)"),
        {"name": table.fullname},
    ).scalar()
    if rows > 0.1 * max(float(counted or 0), 0.0):
        name = conn.dialect.identifier_preparer.format_table(table)
        conn.execute(sa.text(f"ANALYZE (SKIP_LOCKED) {name}"))


@contextlib.contextmanager
def _indexes_built_after(
    conn: sa.Connection, table: sa.Table, rows: int, sorted_by: list[str]
) -> Iterator[None]:
    """On SQLite, drop ``table``'s non-unique indexes, let the caller insert, create them
    again — when ``rows`` is big and the table empty; else nothing is done. An index on
    the columns the rows go in the order of (``sorted_by``) stays: it is appended to. One
    transaction throughout, its write lock taken first (``BEGIN IMMEDIATE``: SQLite's
    driver would open a transaction only at the first write, and a read transaction that
    must then turn into a write fails at once beside another writer instead of waiting out
    the busy timeout). Not on PostgreSQL: ``DROP INDEX`` would lock the table against
    readers until the commit, where ``COPY`` leaves them be."""
    indexes = sorted(
        (i for i in table.indexes if not i.unique and [c.name for c in i.columns] != sorted_by),
        key=lambda i: i.name or "",
    )
    if rows < REBUILD_INDEX_ROWS or not indexes or conn.dialect.name != "sqlite":
        yield
        return
    if not conn.in_transaction():
        conn.begin()
    raw = conn.connection.driver_connection
    if not raw.in_transaction:
        raw.execute("BEGIN IMMEDIATE")
    if conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first() is not None:
        yield  # rows already there: an index updated in place is cheaper than rebuilt
        return
    held = {i["name"] for i in sa.inspect(conn).get_indexes(table.name)}
    for index in indexes:
        if index.name in held:
            index.drop(conn)
    yield
    for index in indexes:
        index.create(conn)


def _insert(
    conn: sa.Connection,
    table: sa.Table,
    frame: pd.DataFrame,
    cols: list[str],
    order: np.ndarray | None,
) -> None:
    if conn.dialect.name == "postgresql":
        arrows = [_arrow_values(frame[c], table.c[c]) for c in cols]
        if order is not None:
            arrows = [a.take(order) for a in arrows]
        write_copy(conn, table.name, pa.Table.from_arrays(arrows, names=cols))
        return
    pairs = [_values_and_missing(frame[c], table.c[c]) for c in cols]
    arrays, missing = [p[0] for p in pairs], [p[1] for p in pairs]
    if order is not None:
        arrays, missing = [a[order] for a in arrays], [m[order] for m in missing]
    # a column with a default of its own (in the model) is written NULL, never left out
    always = np.array([table.c[c].server_default is not None for c in cols])
    _sqlite_insert(conn, table.name, cols, arrays, np.stack(missing, axis=1), always)


def _arrow_values(series: pd.Series, column: sa.Column) -> pa.Array:
    """One column as the Arrow array PostgreSQL's CSV ``COPY`` takes: times in UTC to the
    microsecond (cut, as SQLite's text keeps them), bytes as ``\\x``-hex text, NULL for
    missing. The values are those :func:`_column_values` gives the other path."""
    if isinstance(column.type, sa.DateTime):
        when = pd.to_datetime(series, utc=True, errors="coerce")
        return pa.array(when, from_pandas=True).cast(pa.timestamp("us", tz="UTC"), safe=False)
    if isinstance(column.type, sa.Integer):
        return pa.array(_integers(series), type=pa.int64())
    if isinstance(column.type, sa.Float):
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
        return pa.array(values, type=pa.float64(), from_pandas=True)
    values = _column_values(series, column)
    if isinstance(column.type, sa.Boolean):
        try:
            return pa.array(values, type=pa.bool_(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # 0/1, "t"/"true": PostgreSQL reads them
            return pa.array(series.astype("string").to_numpy(na_value=None), type=pa.string())
    if isinstance(column.type, sa.LargeBinary):
        return to_hex(pa.array(values, type=pa.binary()))
    return pa.array(values, type=pa.string())


def _sqlite_insert(
    conn: sa.Connection,
    table: str,
    names: list[str],
    arrays: list[np.ndarray],
    missing: np.ndarray,
    always: np.ndarray,
) -> None:
    """Every row of ``arrays`` (one object array per column), in their order, as
    multi-row ``INSERT`` statements (as many rows each as the bound-value limit lets).

    ``missing`` (rows x columns): a statement names only the columns some row of it
    fills (and those in ``always``); each bound value costs as much as a filled one, and
    the rows of a wide, sparse table (aspect entries: an e-mail fills its value, an
    address its street and city) leave most columns empty — a run of such rows binds
    its few filled columns, not a NULL for every other."""
    if not conn.in_transaction():
        conn.begin()  # as SQLAlchemy's own execute would: the caller's commit() then holds
    raw = conn.connection.driver_connection
    width, n = len(arrays), len(arrays[0])
    limit = raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    per = max(1, min(SQLITE_ROWS_PER_INSERT, limit // width))
    grid = np.empty((n, width), dtype=object)  # row-major: a slice's values in bind order
    for j, values in enumerate(arrays):
        grid[:, j] = values
    starts = np.arange(0, n, per)
    # per statement, the columns at least one of its rows fills
    filled = ~np.logical_and.reduceat(missing, starts, axis=0) | always
    quoted = [f'"{c}"' for c in names]
    made: dict[tuple[bytes, int], str] = {}

    def statement(use: np.ndarray, rows: int) -> str:
        key = (use.tobytes(), rows)
        if key not in made:
            cols = [quoted[j] for j in np.flatnonzero(use)] or quoted
            group = "(" + ", ".join("?" * len(cols)) + ")"
            head = f'INSERT INTO "{table}" ({", ".join(cols)}) VALUES '
            made[key] = head + ", ".join([group] * rows)
        return made[key]

    cur = raw.cursor()
    try:
        for k, start in enumerate(starts):
            use = filled[k] if filled[k].any() else np.ones(width, dtype=bool)
            part = grid[start : start + per]
            values = part if use.all() else part[:, use]
            cur.execute(statement(use, len(part)), values.ravel().tolist())
    finally:
        cur.close()


def chunks(values: Sequence, size: int = IN_CHUNK) -> Iterator[list]:
    """``values`` in lists of at most ``size`` (one ``IN (...)`` each)."""
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def one_of(dialect: str, column: sa.ColumnElement, values: Sequence) -> list[sa.ColumnElement]:
    """Conditions that together pick the rows whose ``column`` is one of ``values``, one
    statement each. PostgreSQL: ``= ANY(array)``, one bound array per ``ANY_CHUNK`` values
    (an ``IN`` list binds a placeholder per value, which psycopg and SQLAlchemy each parse
    in Python: seconds for the 57k keys of an incremental resolution); SQLite: ``IN`` over
    ``json_each`` of one bound JSON array per ``ANY_CHUNK`` values, for the same reason
    (SQLite parses the array in C; the column's index answers each value)."""
    if dialect == "postgresql":
        kind = postgresql.ARRAY(column.type)
        return [
            column == sa.any_(sa.bindparam(None, part, type_=kind))
            for part in chunks(values, ANY_CHUNK)
        ]
    if dialect == "sqlite":
        out = []
        for part in chunks(values, ANY_CHUNK):
            listed = _json_values(column, part)
            out += [column.in_(listed)] if listed is not None else _in_lists(column, part)
        return out
    return _in_lists(column, values)


def _in_lists(column: sa.ColumnElement, values: Sequence) -> list[sa.ColumnElement]:
    return [column.in_(part) for part in chunks(values)]


def _json_values(column: sa.ColumnElement, values: list) -> sa.Select | None:
    """SQLite: the ``values`` as a one-column subquery over ``json_each`` of one bound
    JSON array (a numpy scalar as its Python value). Cast to text for a text column, as
    an ``IN`` list's values would be by the column's affinity (``json_each`` gives a JSON
    number as a number: 123 would not find '123'). None when JSON cannot carry them as
    they are: a NaN or infinity (no JSON), a NUL in a text (SQLite's JSON ends the text
    there: ``a\\x00b`` would find ``a``) — the caller binds those as an ``IN`` list."""
    try:
        doc = json.dumps(
            values, allow_nan=False, default=lambda v: v.item() if hasattr(v, "item") else str(v)
        )
    except ValueError:
        return None
    if "\\u0000" in doc:
        return None
    value = sa.func.json_each(sa.bindparam(None, doc, type_=sa.Text)).table_valued("value").c.value
    return sa.select(sa.cast(value, sa.Text) if isinstance(column.type, sa.String) else value)


def _no_rows(conn: sa.Connection, table: sa.Table, where: tuple) -> bool:
    return (
        conn.execute(sa.select(sa.literal(1)).select_from(table).where(*where).limit(1)).first()
        is None
    )


def delete_in(
    conn: sa.Connection, table: sa.Table, column: str, values: Sequence, *where: object
) -> int:
    """Delete the rows of ``table`` whose ``column`` is one of ``values`` (and that match
    ``where``), a part of the keys per statement (``one_of``); returns the rows deleted."""
    if len(values) > IN_CHUNK and _no_rows(conn, table, where):
        return 0  # a first write: nothing to delete (no scan per chunk of keys)
    removed = 0
    for part in one_of(conn.dialect.name, table.c[column], values):
        removed += conn.execute(table.delete().where(*where, part)).rowcount
    return int(removed)


def key_queue(name: str, comment: str) -> sa.Table:
    """A queue of (connector, source_id) keys: a writer adds rows in its own transaction
    (``queue_keys``), a reader takes off by id the rows it read (an id is never reused, so
    a row queued meanwhile stays); a NULL source_id queues the connector whole."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("connector", sa.Text, nullable=False),
        # text, not a bounded key: a delete feed's ids are queued before any length check
        sa.Column("source_id", sa.Text),
        comment=comment,
        sqlite_autoincrement=True,
    )


def queue_keys(
    conn: sa.Connection, table: sa.Table, connector: str, source_ids: Iterable[object], most: int
) -> int:
    """Queue ``source_ids`` of ``connector`` in ``table`` (a ``key_queue``), in the caller's
    transaction — the connector whole (one row) when there are more than ``most``; returns
    the rows queued."""
    ids = pd.unique(pd.Series(list(source_ids), dtype=object).dropna().astype(str))
    if not len(ids):
        return 0
    table.create(conn, checkfirst=True)  # writers of a state DB made before it
    if len(ids) > most:
        conn.execute(table.insert().values(connector=connector, source_id=None))
        return 1
    return insert_frame(conn, table, pd.DataFrame({"connector": connector, "source_id": ids}))


def read_keyed(
    engine: sa.Engine,
    stmt: sa.Select,
    table: sa.Table,
    keys: pd.DataFrame,
    arrow_text: bool = False,
) -> pd.DataFrame:
    """The rows of ``stmt`` whose (connector, source_id) is one of ``keys``: a part of the
    source ids of one connector per statement (``one_of``: the primary key's index
    answers each); ``arrow_text``: as ``read_frame``."""
    dialect = engine.dialect.name
    parts = [
        stmt.where(table.c.connector == connector, part)
        for connector, ids in keys.groupby("connector", sort=True)["source_id"]
        for part in one_of(dialect, table.c.source_id, sorted(set(ids.astype(str))))
    ]
    return read_frame(engine, parts or [stmt.where(sa.false())], arrow_text=arrow_text)


def _typed(frame: pd.DataFrame, columns: dict[str, sa.types.TypeEngine]) -> pd.DataFrame:
    """Raw driver values -> what SQLAlchemy's result processors would give, one vectorized
    pass per column: timestamps as UTC ``datetime64``, SQLite's 0/1 booleans as bools."""
    for name, kind in columns.items():
        if name not in frame.columns:
            continue
        if isinstance(kind, sa.DateTime):
            fast = iso_utc(frame[name]) if frame[name].dtype == object else None
            frame[name] = (
                fast
                if fast is not None
                else pd.to_datetime(frame[name], utc=True, format="ISO8601", errors="coerce")
            )
        elif isinstance(kind, sa.Boolean) and frame[name].dtype != bool:
            col = frame[name]
            present = col.notna().to_numpy()
            if present.all():
                frame[name] = col.astype(bool)
            else:
                values = np.full(len(col), None, dtype=object)
                values[present] = col[present].astype(bool).to_numpy()
                frame[name] = values
    return frame


def read_frame(
    engine: sa.Engine,
    stmt: sa.Select | Sequence[sa.Select],
    arrow_text: bool = False,
    sparse: bool = False,
) -> pd.DataFrame:
    """The rows of ``stmt`` (of every statement, when several: the parts of one read) as a
    DataFrame, read as the driver returns them (no per-value processing in Python:
    SQLAlchemy parses every SQLite timestamp with a regex, about 10 s per million rows),
    then typed column by column.

    ``arrow_text``: text columns as Arrow-backed strings (``string[pyarrow]``), converted
    batch by batch: a million rows' strings then cost tens of MB instead of a Python
    object per value (GBs), and only one batch of Python objects lives at a time.

    ``sparse``: a wide table of which each row fills a few columns (aspect entries: an
    address its street and city, an e-mail its value). SQLite hands back a Python
    ``None`` per NULL, each as costly as a value: the columns that hold no value in any
    row are found first (one ``count`` per column, in SQL) and not fetched. For big
    reads: the count runs each statement once more (a read by keys is better without)."""
    stmts = [stmt] if isinstance(stmt, sa.Select) else list(stmt)
    kinds = {c.name: c.type for c in stmts[0].selected_columns}
    names = list(kinds)
    frames: list[pd.DataFrame] = []

    def typed(frame: pd.DataFrame) -> pd.DataFrame:
        frame = _typed(frame, kinds)
        if arrow_text:
            for name in frame.columns:
                if isinstance(kinds.get(name), sa.String):
                    frame[name] = arrow_strings(frame[name])
        return frame

    def add(rows: list) -> None:
        frames.append(typed(pd.DataFrame.from_records(rows, columns=names, coerce_float=False)))

    batch: list = []
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            copied = read_copy(conn, stmts, kinds, ARROW_TEXT if arrow_text else None)
            if copied is not None:
                return copied
        # the probe and the read see one snapshot: a value written between them would
        # otherwise come back missing
        sparse = sparse and conn.dialect.name == "sqlite"  # (a fallback from COPY: as it is)
        snapshot = sparse and _begin_read(conn)
        try:
            empty = _empty_columns(conn, stmts) if sparse else set()
            if empty:
                # fetch only the columns that hold a value somewhere; the others are added
                # back below, missing in every row, typed as a read of them would type them
                kept = [c for c in stmts[0].selected_columns if c.name not in empty]
                stmts = [one.with_only_columns(*kept) for one in stmts]
                names = [n for n in names if n not in empty]
            for one in stmts:
                cursor = conn.execute(one).cursor
                while cursor is not None:
                    rows = cursor.fetchmany(READ_BATCH) if arrow_text else cursor.fetchall()
                    batch.extend(rows)
                    if arrow_text and len(batch) >= READ_BATCH:
                        add(batch)
                        batch = []
                    if not arrow_text or len(rows) < READ_BATCH:
                        break
        finally:
            if snapshot:
                conn.connection.driver_connection.rollback()  # a read: nothing to keep
    if batch or not frames:
        add(batch)
    frame = _concat_batches(frames)
    if empty:  # one row typed as a read of them would type it, repeated
        one = typed(pd.DataFrame({c: [None] for c in sorted(empty)}))
        missing = one.iloc[np.zeros(len(frame), dtype=np.intp)].set_axis(frame.index)
        frame = pd.concat([frame, missing], axis=1)[list(kinds)]
    return frame


def arrow_strings(values: pd.Series) -> pd.Series:
    """Text as Arrow-backed strings (``ARROW_TEXT``): built by Arrow from the objects, in
    half the time of pandas' ``astype``; a column holding other values than text (a
    number a driver hands back) goes through ``astype``, which writes them as text."""
    if values.dtype == object:
        try:
            array = pa.array(values.to_numpy(), type=pa.string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return values.astype(ARROW_TEXT)
        return pd.Series(pd.arrays.ArrowStringArray(array), index=values.index, name=values.name)
    return values.astype(ARROW_TEXT)


def _begin_read(conn: sa.Connection) -> bool:
    """Open a read transaction on a SQLite connection outside one (its driver opens them
    only for writes): every statement until its end reads one snapshot. Whether it did."""
    raw = conn.connection.driver_connection
    if raw.in_transaction:
        return False
    raw.execute("BEGIN")
    return True


def _plain(stmt: sa.Select) -> bool:
    """Whether ``stmt`` reads rows of one table as they are: no limit, offset, order,
    grouping or DISTINCT (the probe would count other rows, or a column it drops could be
    named there) and one FROM."""
    shaped = (
        stmt._limit_clause is not None
        or stmt._offset_clause is not None
        or stmt._order_by_clauses
        or stmt._group_by_clauses
        or stmt._having_criteria
        or stmt._distinct
    )
    return not shaped and len(stmt.get_final_froms()) == 1


def _empty_columns(conn: sa.Connection, stmts: list[sa.Select]) -> set[str]:
    """The selected columns that are NULL in every row of every statement; none when the
    result has no row (an empty read keeps every column as it is)."""
    columns = list(stmts[0].selected_columns)
    if len({c.name for c in columns}) < len(columns) or not all(map(_plain, stmts)):
        return set()  # two columns of one name (a join), or more than rows of one table
    held = np.zeros(len(columns), dtype=bool)
    rows = 0
    for one in stmts:
        sub = one.subquery()
        probe = sa.select(sa.func.count(), *[sa.func.count(sub.c[c.name]) for c in columns])
        n, *counts = conn.execute(probe).one()
        rows += int(n)
        held |= np.asarray(counts, dtype=np.int64) > 0
    if not rows:
        return set()
    return {c.name for c, h in zip(columns, held, strict=True) if not h}


def stack_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """``pd.concat(frames, ignore_index=True)`` of frames with the same columns and types,
    column by column: a frame's concat checks an all-missing object column of one frame
    value by value (a Python call each, seconds at a million rows); a column's does not."""
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    columns = list(frames[0].columns)
    return pd.DataFrame(
        {c: pd.concat([f[c] for f in frames], ignore_index=True) for c in columns},
        columns=columns,
    )


def _concat_batches(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The batches of one read as one frame: a column that is all missing in a batch takes
    the type the column has where it holds values (pandas would otherwise warn that it
    will soon decide the column's type from that batch too)."""
    if len(frames) == 1:
        return frames[0]
    for name in frames[0].columns:
        kinds = {f[name].dtype for f in frames}
        if len(kinds) < 2:
            continue
        typed = next((f[name].dtype for f in frames if f[name].notna().any()), None)
        if typed is None:
            continue
        if typed.kind in "biu":  # numpy's bool and int hold no missing value: objects, as
            typed = np.dtype(object)  # pandas makes of them beside a batch of None
        for f in frames:
            if f[name].dtype == typed:
                continue
            if not f[name].notna().any():
                f[name] = pd.Series(None, index=f.index, dtype=object).astype(typed)
            elif typed.kind == "O":
                f[name] = f[name].astype(object)
    return pd.concat(frames, ignore_index=True)


# digests of derived tables that are rewritten whole (identity evidence): a rerun that
# derives the same rows compares one digest instead of rewriting a million rows
table_digests = sa.Table(
    "table_digests",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("digest", sa.Text, nullable=False),
)
_digests_made: set[str] = set()


def frame_digest(frame: pd.DataFrame) -> str:
    """An order-sensitive digest of every value of ``frame`` (and its columns)."""
    hashed = row_hashes64(frame)
    digest = hashlib.blake2b(hashed.tobytes(), digest_size=16).hexdigest()
    return f"{len(frame)}:{','.join(map(str, frame.columns))}:{digest}"


def hashes_digest(hashes: np.ndarray) -> str:
    """An order-free digest of a set of 64-bit row hashes (the same rows in any order, as
    a read with no ORDER BY may give them)."""
    digest = hashlib.blake2b(np.sort(hashes).tobytes(), digest_size=16).hexdigest()
    return f"{len(hashes)}:{digest}"


def rows_digest(frame: pd.DataFrame) -> str:
    """An order-free digest of the rows of ``frame`` (and its columns)."""
    hashed = row_hashes64(frame)
    return f"{','.join(map(str, frame.columns))}:{hashes_digest(hashed)}"


def stored_digest(engine: sa.Engine, name: str) -> str | None:
    url = engine.url.render_as_string(hide_password=True)
    if url not in _digests_made:
        metadata.create_all(engine, tables=[table_digests])
        _digests_made.add(url)
    with engine.connect() as conn:
        return conn.execute(
            sa.select(table_digests.c.digest).where(table_digests.c.name == name)
        ).scalar()


def digest_in(conn: sa.Connection, name: str) -> str | None:
    """The stored digest of ``name`` as the caller's transaction sees it."""
    table_digests.create(conn, checkfirst=True)
    return conn.execute(
        sa.select(table_digests.c.digest).where(table_digests.c.name == name)
    ).scalar()


def drop_digest(conn: sa.Connection, name: str) -> None:
    """Forget the digest of ``name`` in the caller's transaction (what it described moved)."""
    table_digests.create(conn, checkfirst=True)
    conn.execute(table_digests.delete().where(table_digests.c.name == name))


def save_digest(conn: sa.Connection, name: str, digest: str) -> None:
    """Store ``digest`` for ``name`` in the caller's transaction (with the rows it covers)."""
    drop_digest(conn, name)
    conn.execute(table_digests.insert().values(name=name, digest=digest))


def bump_stamp(conn: sa.Connection, name: str) -> None:
    """Mark ``name`` changed (a new random stamp) in the caller's transaction: steps that
    read it compare stamps to know whether there is anything new to do."""
    save_digest(conn, name, uuid.uuid4().hex)


def table_stamp(engine: sa.Engine, name: str) -> str:
    """The current stamp of ``name`` ("" before anything was stored)."""
    return stored_digest(engine, name) or ""


@functools.cache
def code_digest(modules: tuple[str, ...]) -> str:
    """A digest of the source of ``modules`` (read once per process): a step's stored
    result is no base for its next run when the code that made it changed."""
    h = hashlib.blake2b(digest_size=16)
    for name in modules:
        h.update(Path(importlib.import_module(name).__file__ or "").read_bytes())
    return h.hexdigest()


def inputs_key(*parts: object) -> str:
    """One short key for everything a step read (stamps, digests, the plan's rules): the
    step can skip its work when the key is the one it stored after its last run."""
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()
