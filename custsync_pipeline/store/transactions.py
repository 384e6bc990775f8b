"""State-DB tables of transactions: the linked transactions, each target's ledger, and the
``order_history`` aspect of the golden records.

* ``transactions``: one row per (source, transaction_id): ``TRANSACTION_COLUMNS`` plus the
  link (``golden_id``, ``link_rule``), the content hash and when it was stored. Buyer keys
  are kept (the link is re-derived from them when identity changes), never logged.
* ``transaction_ledger``: one row per (target, transaction_id): the hash the target
  acknowledged, its id there, status and error. A transaction whose id and hash are in the
  ledger as ``sent`` is never sent again (a replay sends nothing).
* ``golden_order_history``: one row per (golden_id, currency) (``ORDER_HISTORY_COLUMNS``).

Writes are bulk (``store.bulk.insert_frame``): delete the keys of the batch, insert the
frame, in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from custsync_pipeline.domain.transactions import ORDER_HISTORY_COLUMNS, TRANSACTION_COLUMNS
from custsync_pipeline.store.bulk import delete_in, insert_frame, one_of
from custsync_pipeline.store.db import metadata

TS = sa.DateTime(timezone=True)
_TYPES = {
    "total": sa.Float(),
    "ordered_at": TS,
    "updated_at": TS,
    "guest": sa.Boolean(),
    "line_count": sa.Integer(),
}

transactions = sa.Table(
    "transactions",
    metadata,
    *[
        sa.Column(c, _TYPES.get(c, sa.Text()), primary_key=c in ("source", "transaction_id"))
        for c in TRANSACTION_COLUMNS
    ],
    sa.Column("golden_id", sa.Text, index=True),
    sa.Column("link_rule", sa.Text, nullable=False),
    sa.Column("tx_hash", sa.Text, nullable=False),
    sa.Column("stored_at", TS, nullable=False),
    comment="web shop / POS transactions, linked to golden records",
)

transaction_ledger = sa.Table(
    "transaction_ledger",
    metadata,
    sa.Column("target", sa.Text, primary_key=True),
    sa.Column("transaction_id", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("golden_id", sa.Text),
    sa.Column("tx_hash", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),  # sent | failed
    sa.Column("target_id", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("sent_at", TS),
    comment="what each target acknowledged per transaction (id + hash)",
)

golden_order_history = sa.Table(
    "golden_order_history",
    metadata,
    sa.Column("golden_id", sa.Text, primary_key=True),
    sa.Column("currency", sa.Text, primary_key=True),
    sa.Column("orders_count", sa.Integer, nullable=False),
    sa.Column("first_order_at", TS),
    sa.Column("last_order_at", TS),
    sa.Column("total_spend", sa.Float),
    sa.Column("source", sa.Text),
    sa.Column("transactions", sa.Text),
    sa.Column("computed_at", TS, nullable=False),
    comment="order_history aspect of golden records, with provenance",
)

TABLES = (transactions, transaction_ledger, golden_order_history)


def create_tables(engine: Engine) -> None:
    metadata.create_all(engine, tables=list(TABLES))


def _read(engine: Engine, stmt: sa.Select) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(stmt)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def upsert_transactions(engine: Engine, frame: pd.DataFrame) -> int:
    """Replace the stored rows of these (source, transaction_id) and insert ``frame``."""
    if frame.empty:
        return 0
    with engine.begin() as conn:
        for source, part in frame.groupby("source"):
            ids = part["transaction_id"].astype(str).tolist()
            delete_in(conn, transactions, "transaction_id", ids, transactions.c.source == source)
        return insert_frame(conn, transactions, frame)


def load_transactions(
    engine: Engine, golden_ids: Iterable[str] | None = None, linked_only: bool = False
) -> pd.DataFrame:
    stmt = sa.select(transactions)
    if linked_only:
        stmt = stmt.where(transactions.c.golden_id.is_not(None))
    if golden_ids is None:
        return _read(engine, stmt)
    ids = sorted(set(golden_ids))
    column = transactions.c.golden_id
    parts = [_read(engine, stmt.where(p)) for p in one_of(engine.dialect.name, column, ids)]
    return pd.concat(parts, ignore_index=True) if parts else _read(engine, stmt.where(sa.false()))


def load_ledger(engine: Engine, target: str) -> pd.DataFrame:
    return _read(engine, sa.select(transaction_ledger).where(transaction_ledger.c.target == target))


def record_ledger(engine: Engine, target: str, rows: pd.DataFrame) -> int:
    """Write the outcome of sending ``rows`` (``transaction_id, source, golden_id, tx_hash,
    status, target_id, error, sent_at``) to ``target``; attempts count up."""
    if rows.empty:
        return 0
    old = load_ledger(engine, target).set_index("transaction_id")["attempts"]
    frame = rows.copy()
    frame["target"] = target
    frame["attempts"] = frame["transaction_id"].map(old).fillna(0).astype(int) + 1
    with engine.begin() as conn:
        ids = frame["transaction_id"].astype(str).tolist()
        delete_in(
            conn, transaction_ledger, "transaction_id", ids, transaction_ledger.c.target == target
        )
        return insert_frame(conn, transaction_ledger, frame)


def replace_order_history(engine: Engine, golden_ids: Iterable[str], history: pd.DataFrame) -> int:
    """The order_history aspect of ``golden_ids`` becomes ``history`` (their rows)."""
    ids = sorted(set(golden_ids))
    with engine.begin() as conn:
        delete_in(conn, golden_order_history, "golden_id", ids)
        return insert_frame(conn, golden_order_history, history[list(ORDER_HISTORY_COLUMNS)])


def load_order_history(engine: Engine, golden_id: str | None = None) -> pd.DataFrame:
    create_tables(engine)
    stmt = sa.select(golden_order_history)
    if golden_id is not None:
        stmt = stmt.where(golden_order_history.c.golden_id == golden_id)
    return _read(
        engine, stmt.order_by(golden_order_history.c.golden_id, golden_order_history.c.currency)
    )
