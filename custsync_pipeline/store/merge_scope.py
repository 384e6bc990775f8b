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

from custsync_pipeline.store.bulk import (
    delete_in,
    digest_in,
    drop_digest,
    insert_frame,
    key_queue,
    one_of,
    queue_keys,
    read_frame,
    save_digest,
    stored_digest,
)
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


# every change of a golden record's members since the last merge, queued by the
# identity step before it writes the map (``queue_member_changes``)
member_queue = sa.Table(
    "member_queue",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("golden_id", sa.Text, nullable=False),
    comment="golden ids whose members changed since the last golden merge",
    sqlite_autoincrement=True,
)
# table_digests row: the identity map's stamp up to which ``member_queue`` accounts for
# every change of members (absent or another stamp: the merge digests every member)
MEMBERS_QUEUED = "golden_members_queued"


def queue_member_changes(conn: sa.Connection, golden_ids: Iterable[object], map_stamp: str) -> bool:
    """Queue ``golden_ids`` (the identity step is about to change their members) in the
    caller's transaction, committed before the map is written: a crash in between leaves
    golden ids queued, never a change the queue does not know of. Only while the queue
    accounts for the map at ``map_stamp`` (its stamp now); otherwise, or for more than
    ``QUEUE_MAX`` ids, the note is dropped until a merge digests every golden record's
    members again. Returns whether the queue still accounts for the map."""
    if digest_in(conn, MEMBERS_QUEUED) != map_stamp:
        drop_digest(conn, MEMBERS_QUEUED)
        return False
    ids = pd.unique(pd.Series(list(golden_ids), dtype=object).dropna().astype(str))
    if len(ids) > QUEUE_MAX:
        drop_digest(conn, MEMBERS_QUEUED)
        return False
    member_queue.create(conn, checkfirst=True)
    insert_frame(conn, member_queue, pd.DataFrame({"golden_id": ids}))
    return True


def note_member_changes(conn: sa.Connection, stamp_before: str, stamp_after: str) -> None:
    """In the transaction that moves the identity map's stamp from ``stamp_before`` to
    ``stamp_after``: the queue accounts for the map at ``stamp_after`` when it did at
    ``stamp_before`` (the write queued its changes first, ``queue_member_changes``)."""
    if digest_in(conn, MEMBERS_QUEUED) == stamp_before:
        save_digest(conn, MEMBERS_QUEUED, stamp_after)
    else:
        drop_digest(conn, MEMBERS_QUEUED)


def read_member_queue(engine: Engine, identity_stamp: str) -> tuple[pd.DataFrame, bool]:
    """(id, golden_id of every queued member change; whether the queue accounts for every
    change of members of the map at ``identity_stamp``)."""
    with engine.begin() as conn:
        member_queue.create(conn, checkfirst=True)
    frame = read_frame(engine, sa.select(member_queue.c.id, member_queue.c.golden_id))
    note = stored_digest(engine, MEMBERS_QUEUED)
    return frame.astype({"id": "int64", "golden_id": object}), note == identity_stamp


def note_members_merged(conn: sa.Connection, queue_ids: Iterable[int], identity_stamp: str) -> None:
    """In a merge's last transaction: take off the member changes it read and note that
    the stored member digests and the queue (empty of them) account for the map at
    ``identity_stamp``."""
    member_queue.create(conn, checkfirst=True)
    delete_in(conn, member_queue, "id", sorted(int(i) for i in queue_ids))
    save_digest(conn, MEMBERS_QUEUED, identity_stamp)


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


def load_member_digests(engine: Engine, golden_ids: Iterable[str] | None = None) -> pd.Series:
    """golden_id -> digest of its members at its last merge (of ``golden_ids`` only, when
    given)."""
    c = golden_members.c
    stmt = sa.select(c.golden_id, c.members_hash)
    if golden_ids is None:
        frame = read_frame(engine, stmt)
    else:
        ids = sorted({str(g) for g in golden_ids})
        parts = [stmt.where(part) for part in one_of(engine.dialect.name, c.golden_id, ids)]
        frame = read_frame(engine, parts or stmt.where(sa.false()))
    return pd.Series(
        frame["members_hash"].to_numpy(dtype=object), index=frame["golden_id"].astype(str)
    )


def member_digest_count(engine: Engine) -> int:
    """Golden records at the last merge (one member digest each)."""
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(golden_members)).scalar())


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
