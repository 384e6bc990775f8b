"""Which golden records the next merge must redo: the merge queue and the member digests.

Every write of a source record or of its aspect entries queues the record's key in the
same transaction (``queue_records``); a write of more than ``QUEUE_MAX`` records queues
its whole connector instead (one row, no source id). The golden step reads the queue,
merges the golden records of the queued records (and those whose members changed, told
by ``golden_members``), then takes off the rows it read, by id: a row queued while it
merged stays for the next merge.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from custsync_pipeline.store.bulk import delete_in, insert_frame, key_queue, queue_keys, read_frame
from custsync_pipeline.store.db import metadata

# a write of more records than this queues its connector whole (a snapshot of a
# million records is merged whole anyway: one row instead of a million)
QUEUE_MAX = 50_000

merge_queue = key_queue("merge_queue", "source records written since the last golden merge")

golden_members = sa.Table(
    "golden_members",
    metadata,
    sa.Column("golden_id", sa.Text, primary_key=True),
    sa.Column("members_hash", sa.Text, nullable=False),
    comment="digest of each golden record's members at its last merge",
)


def queue_records(conn: sa.Connection, connector: str, source_ids: Iterable[object]) -> int:
    """Queue ``source_ids`` of ``connector`` for the next merge, in the caller's
    transaction; returns the rows queued."""
    return queue_keys(conn, merge_queue, connector, source_ids, QUEUE_MAX)


def read_queue(engine: Engine) -> pd.DataFrame:
    """Every queued row: id, connector, source_id (missing: the whole connector)."""
    c = merge_queue.c
    frame = read_frame(engine, sa.select(c.id, c.connector, c.source_id))
    return frame.astype({"id": "int64", "connector": object, "source_id": object})


def take_off(conn: sa.Connection, ids: Iterable[int]) -> int:
    """Remove the queued rows a merge read (by id: rows queued since stay)."""
    return delete_in(conn, merge_queue, "id", sorted(int(i) for i in ids))


def load_member_digests(engine: Engine) -> pd.Series:
    """golden_id -> digest of its members at its last merge."""
    c = golden_members.c
    frame = read_frame(engine, sa.select(c.golden_id, c.members_hash))
    return pd.Series(
        frame["members_hash"].to_numpy(dtype=object), index=frame["golden_id"].astype(str)
    )


def save_member_digests(
    conn: sa.Connection, digests: pd.Series, golden_ids: Iterable[str] | None = None
) -> None:
    """Store ``digests`` (golden_id -> digest) of ``golden_ids`` (every golden id when
    None), dropping the stored digests of those ids that no longer exist."""
    if golden_ids is None:
        conn.execute(golden_members.delete())
        rows = digests
    else:
        ids = sorted(set(golden_ids))
        delete_in(conn, golden_members, "golden_id", ids)
        rows = digests[digests.index.isin(ids)]
    insert_frame(
        conn,
        golden_members,
        pd.DataFrame({"golden_id": rows.index.astype(str), "members_hash": rows.to_numpy()}),
    )
