"""Bulk loading of DataFrames into state-DB tables: PostgreSQL ``COPY`` through psycopg,
SQLite one prepared ``INSERT`` run over every row in the caller's transaction.

SQLAlchemy's ``insert()`` with a list of dicts processes every bound value in
Python, about 20k rows/s; these paths skip that and write the values the way
SQLAlchemy itself stores and reads them (SQLite timestamps as
``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, PostgreSQL ``timestamptz``), so the readers
stay SQLAlchemy Core.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa

# rows per executemany / COPY batch: bounded memory for the tuples of a large frame
BATCH = 50_000


def _column_values(series: pd.Series, column: sa.Column, dialect: str) -> np.ndarray:
    """One column as an object array of DB-API values (None for missing)."""
    if isinstance(column.type, sa.DateTime):
        when = pd.to_datetime(series, utc=True, errors="coerce")
        if dialect == "sqlite":
            text = when.dt.tz_convert("UTC").dt.strftime("%Y-%m-%d %H:%M:%S.%f")
            return text.astype(object).where(when.notna(), None).to_numpy(dtype=object)
        return when.astype(object).where(when.notna(), None).to_numpy(dtype=object)
    if isinstance(column.type, sa.Float | sa.Integer):
        values = pd.to_numeric(series, errors="coerce")
        out = values.astype(object).where(values.notna(), None).to_numpy(dtype=object)
        if isinstance(column.type, sa.Integer):
            out = np.array([None if v is None else int(v) for v in out], dtype=object)
        return out
    if isinstance(column.type, sa.Boolean):
        return series.astype(object).where(series.notna(), None).to_numpy(dtype=object)
    text = series.astype("string")
    return text.astype(object).where(text.notna(), None).to_numpy(dtype=object)


def insert_frame(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    """Insert every row of ``frame`` (its columns that ``table`` has) in the open
    transaction of ``conn``; returns the rows written."""
    if frame.empty:
        return 0
    cols = [c for c in frame.columns if c in table.c]
    dialect = conn.dialect.name
    arrays = [_column_values(frame[c], table.c[c], dialect) for c in cols]
    rows = list(zip(*arrays, strict=True))
    names = ", ".join(f'"{c}"' for c in cols)
    if dialect == "postgresql":
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            with cur.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
        return len(rows)
    marks = ", ".join("?" for _ in cols)
    sql = f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})'
    for start in range(0, len(rows), BATCH):
        conn.exec_driver_sql(sql, rows[start : start + BATCH])
    return len(rows)
