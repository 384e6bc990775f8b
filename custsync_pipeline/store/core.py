"""Core state-DB tables and their readers/writers: source records, golden records and
their change events, the publish outbox/ledger, and extraction watermarks.

Every function takes an ``Engine`` and uses SQLAlchemy Core only, so the same
code runs on SQLite and PostgreSQL. Frames go in and come out; transactions
are short (one per call) so SQLite's single writer is never held for long.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from custsync_pipeline.domain.canonical import (
    BOOL_COLUMNS,
    CANONICAL_COLUMNS,
    DATETIME_COLUMNS,
    GOLDEN_FIELDS,
    NUMERIC_COLUMNS,
    conform,
)
from custsync_pipeline.domain.hashing import row_hashes64
from custsync_pipeline.store.bulk import (
    bump_stamp,
    chunks,
    delete_in,
    insert_frame,
    one_of,
    read_frame,
    read_keyed,
)
from custsync_pipeline.store.db import metadata
from custsync_pipeline.store.identity import queue_for_resolution
from custsync_pipeline.store.merge_scope import queue_records


def _column_type(col: str) -> sa.types.TypeEngine:
    if col in DATETIME_COLUMNS:
        return sa.DateTime(timezone=True)
    if col in NUMERIC_COLUMNS:
        return sa.Float()
    if col in BOOL_COLUMNS:
        return sa.Boolean()
    return sa.Text()


source_records = sa.Table(
    "source_records",
    metadata,
    *[
        sa.Column(c, _column_type(c), primary_key=c in ("connector", "source_id"))
        for c in CANONICAL_COLUMNS
    ],
    sa.Column("last_seen_at", sa.DateTime(timezone=True)),  # when the row last changed
    sa.Column("row_hash", sa.Text),  # its values' hash: a row that did not change is not rewritten
    # the few records read back with a custsync stamp, found without a scan of every row
    # (an incremental resolution asks); partial: the others cost nothing here
    sa.Index(
        "ix_source_records_stamped",
        "connector",
        "source_id",
        "custsync_id",
        sqlite_where=sa.text("custsync_id IS NOT NULL"),
        postgresql_where=sa.text("custsync_id IS NOT NULL"),
    ),
    comment="latest valid canonical row per (connector, source_id)",
)

golden_records = sa.Table(
    "golden_records",
    metadata,
    sa.Column("golden_id", sa.Text, primary_key=True),
    *[sa.Column(c, _column_type(c)) for c in GOLDEN_FIELDS],
    sa.Column("entries_hash", sa.Text),  # digest of the record's aspect entries
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("record_hash", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

golden_events = sa.Table(
    "golden_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("golden_id", sa.Text, nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("field", sa.Text, nullable=False),
    sa.Column("old_value", sa.Text),
    sa.Column("new_value", sa.Text),
    sa.Column("connector", sa.Text),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

# One row per entity and target: the outbox (pending work) and the ledger
# (what the target acknowledged) in one place, so a crash between sending and
# recording leaves the row pending and the next publish re-sends it by upsert.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("target", sa.Text, primary_key=True),
    sa.Column("entity_key", sa.Text, primary_key=True),  # target record id or "new:<golden_id>"
    sa.Column("golden_id", sa.Text, nullable=False, index=True),
    sa.Column("target_id", sa.Text),
    sa.Column("op", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("payload_hash", sa.Text, nullable=False),
    sa.Column("acked_hash", sa.Text),
    # pending | acked | failed (sent: a transient failure outlived the retries, or the
    # target refused custsync's credential, 401/403; sent again) | dead (the API refused
    # the payload for good) | superseded (a newer computation replaced it unsent)
    # | gone (the record an update addressed was deleted there since it was read)
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("golden_version", sa.Integer),  # the golden record version the op came from
    # an update's record as it held, before this write, each value and slot the write
    # changes (JSON): read back, the write's echo is told from the record's own word
    sa.Column("held", sa.Text),
    # the payload and held values of the last acknowledged write: what the target holds
    # of custsync's, kept while a newer op of the entity waits (or failed)
    sa.Column("acked_payload", sa.Text),
    sa.Column("acked_held", sa.Text),
)

# statuses the publisher sends: ``sending`` is a batch on its way when its run died (it
# may have reached the target; an upsert or a create by external id sent again is safe)
QUEUED = ("pending", "failed", "sending")
SENDING = "sending"

watermarks = sa.Table(
    "watermarks",
    metadata,
    sa.Column("connector", sa.Text, primary_key=True),
    sa.Column("watermark", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _records(frame: pd.DataFrame) -> list[dict]:
    """Frame -> list of dicts with None for every missing value (DB-API friendly)."""
    if frame.empty:
        return []
    obj = frame.astype(object).where(frame.notna(), None)
    out = obj.to_dict("records")
    for col in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[col]):
            for row in out:
                if row[col] is not None:
                    row[col] = row[col].to_pydatetime()
    return out


def _read_frame(
    engine: Engine, stmt: sa.Select | list[sa.Select], arrow_text: bool = False
) -> pd.DataFrame:
    return read_frame(engine, stmt, arrow_text=arrow_text)


# --- source records ---------------------------------------------------------


SOURCE_STAMP = "source_records"  # table_digests row: changes whenever a source record does


def row_hashes(rows: pd.DataFrame) -> np.ndarray:
    """A hash of every conformed canonical row (its values, not when it was seen)."""
    cols = [c for c in CANONICAL_COLUMNS if c in rows.columns]
    return row_hashes64(rows[cols]).astype(str)


# an incremental pull of up to this many records reads only its own stored hashes
SCOPED_HASHES_MAX = 50_000


def queue_changed(conn: sa.Connection, connector: str, source_ids: list[str]) -> None:
    """Queue records a write changed (their values, entries, or deletion) for the next
    resolution and the next merge, in the write's transaction: every writer of source
    records or entries calls this with the source stamp it moves."""
    queue_for_resolution(conn, connector, source_ids)
    queue_records(conn, connector, source_ids)


def _stored_hashes(
    conn: sa.Connection, connector: str, ids: list[str] | None = None
) -> pd.DataFrame:
    """Stored (source_id, row_hash) of ``connector``: every record, or those of ``ids``."""
    c = source_records.c
    stmt = sa.select(c.source_id, c.row_hash).where(c.connector == connector)
    if ids is None or len(ids) > SCOPED_HASHES_MAX:
        rows = conn.execute(stmt).cursor.fetchall()
    else:
        rows = [
            r
            for part in one_of(conn.dialect.name, c.source_id, list(ids))
            for r in conn.execute(stmt.where(part)).cursor.fetchall()
        ]
    return pd.DataFrame(rows, columns=["source_id", "row_hash"])


def _delete_ids(conn: sa.Connection, connector: str, ids: list[str]) -> int:
    return delete_in(
        conn, source_records, "source_id", ids, source_records.c.connector == connector
    )


def _write_changed(
    conn: sa.Connection, connector: str, rows: pd.DataFrame, gone: list[str], scoped: bool = False
) -> tuple[int, int]:
    """Write the rows whose hash differs from the stored copy and delete ``gone``; the
    source stamp moves when anything changed. ``scoped``: compare with the stored copies
    of ``rows`` only (an incremental pull), not the connector's every record. Returns
    (rows written, rows deleted)."""
    rows["row_hash"] = row_hashes(rows)
    stored = _stored_hashes(
        conn, connector, rows["source_id"].astype(str).tolist() if scoped else None
    )
    if len(stored):
        old = (
            rows["source_id"]
            .astype(str)
            .map(pd.Series(stored["row_hash"].to_numpy(), index=stored["source_id"].astype(str)))
        )
        changed = rows[(old != rows["row_hash"]).to_numpy()]
        _delete_ids(conn, connector, changed.loc[old.notna(), "source_id"].astype(str).tolist())
    else:
        changed = rows
    removed = _delete_ids(conn, connector, gone) if gone else 0
    written = insert_frame(conn, source_records, changed)
    if written or removed:
        bump_stamp(conn, SOURCE_STAMP)
        queue_changed(conn, connector, [*changed["source_id"].astype(str), *gone])
    return written, removed


def replace_source_records(engine: Engine, connector: str, frame: pd.DataFrame) -> int:
    """Store the latest valid canonical rows of one connector (full snapshot semantics):
    only rows that changed are written, stored rows the snapshot lacks are deleted.
    Returns the rows the connector now holds."""
    rows = conform(frame)
    rows["last_seen_at"] = pd.Timestamp(utcnow())  # when the row last changed
    with engine.begin() as conn:
        held = _stored_hashes(conn, connector)["source_id"].astype(str)
        gone = held[~held.isin(rows["source_id"].astype(str))].tolist()
        _write_changed(conn, connector, rows, gone)
    return len(rows)


def upsert_source_records(
    engine: Engine, connector: str, frame: pd.DataFrame, deleted_ids: Iterable[str] = ()
) -> tuple[int, int]:
    """Store the rows of an incremental pull: each replaces its stored copy when it changed
    (others of the connector stay), and ``deleted_ids`` leave. Returns (rows stored,
    deleted ids removed)."""
    rows = conform(frame)
    rows["last_seen_at"] = pd.Timestamp(utcnow())
    pulled = set(rows["source_id"].astype(str))
    gone = [i for i in dict.fromkeys(str(i) for i in deleted_ids) if i not in pulled]
    with engine.begin() as conn:
        _, removed = _write_changed(conn, connector, rows, gone, scoped=True)
    return len(rows), removed


def remove_source_records(engine: Engine, connector: str, source_ids: Iterable[str]) -> int:
    """Drop stored records of ``connector`` known to be deleted there (a write found them
    gone), as a delete feed would; returns how many were held."""
    ids = sorted({str(i) for i in source_ids})
    if not ids:
        return 0
    with engine.begin() as conn:
        removed = _delete_ids(conn, connector, ids)
        if removed:
            bump_stamp(conn, SOURCE_STAMP)
            queue_changed(conn, connector, ids)
    return removed


def source_record_ids(engine: Engine, connector: str) -> set[str]:
    """The stored source ids of one connector."""
    stmt = sa.select(source_records.c.source_id).where(source_records.c.connector == connector)
    with engine.connect() as conn:
        return {str(r) for r in conn.execute(stmt).scalars()}


def stored_source_ids(engine: Engine, connector: str, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` are stored source ids of ``connector``."""
    keys = pd.DataFrame({"connector": connector, "source_id": sorted({str(i) for i in ids})})
    stmt = sa.select(source_records.c.source_id)
    return set(read_keyed(engine, stmt, source_records, keys)["source_id"].astype(str))


def load_source_records(
    engine: Engine,
    connectors: Iterable[str] | None = None,
    columns: Iterable[str] | None = None,
    arrow_text: bool = False,
    keys: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The stored valid records (of ``connectors``; of ``keys``, connector and source_id,
    when given): every canonical column, conformed; or only ``columns`` as stored
    (resolution reads a handful: a million full canonical rows would cost about 2 GB more).
    ``arrow_text``: text as Arrow-backed strings (with ``columns``; see
    ``bulk.read_frame``)."""
    if columns is None:
        wanted = list(CANONICAL_COLUMNS)
    else:
        wanted = [c for c in dict.fromkeys(columns) if c in source_records.c]
    stmt = sa.select(*[source_records.c[c] for c in wanted])
    if connectors is not None:
        stmt = stmt.where(source_records.c.connector.in_(list(connectors)))
    arrow = arrow_text and columns is not None
    if keys is not None:
        frame = read_keyed(engine, stmt, source_records, keys, arrow_text=arrow)
    else:
        frame = _read_frame(engine, stmt, arrow_text=arrow)
    if columns is None:
        return conform(frame)
    if "updated_at" in frame.columns:
        frame["updated_at"] = pd.to_datetime(frame["updated_at"], utc=True, errors="coerce")
    return frame


def stamped_source_records(engine: Engine, connectors: Iterable[str]) -> pd.DataFrame:
    """connector, source_id, custsync_id of the stored records of ``connectors`` that carry
    a custsync stamp (few: those read back from a target custsync writes to)."""
    c = source_records.c
    stmt = sa.select(c.connector, c.source_id, c.custsync_id).where(
        c.connector.in_(list(connectors)), c.custsync_id.is_not(None)
    )
    return _read_frame(engine, stmt)


def source_record_counts(engine: Engine, connector: str | None = None) -> dict[str, int]:
    """Stored source records per connector (of ``connector`` only: its rows of the primary
    key's index, not a count of every connector's)."""
    stmt = sa.select(source_records.c.connector, sa.func.count()).group_by(
        source_records.c.connector
    )
    if connector is not None:
        stmt = stmt.where(source_records.c.connector == connector)
    with engine.connect() as conn:
        return {c: int(n) for c, n in conn.execute(stmt)}


# --- golden records ---------------------------------------------------------


def load_golden_records(engine: Engine, golden_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """The stored golden records (of ``golden_ids`` only, when given)."""
    if golden_ids is None:
        frame = _read_frame(engine, sa.select(golden_records))
    else:
        stmt = sa.select(golden_records)
        ids = sorted(golden_ids)
        parts = [
            stmt.where(p) for p in one_of(engine.dialect.name, golden_records.c.golden_id, ids)
        ]
        frame = _read_frame(engine, parts or [stmt.where(sa.false())])
    for col in DATETIME_COLUMNS:
        if col in frame:
            frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


GOLDEN_STAMP = "golden_records"  # table_digests row: changes whenever a golden record does


def save_golden_records(engine: Engine, golden: pd.DataFrame, events: pd.DataFrame) -> None:
    """Replace changed golden rows and append their change events in one transaction."""
    with engine.begin() as conn:
        if not golden.empty:
            delete_in(conn, golden_records, "golden_id", golden["golden_id"].tolist())
            cols = ["golden_id", *GOLDEN_FIELDS, "version", "record_hash", "updated_at"]
            if "entries_hash" in golden:
                cols.insert(-3, "entries_hash")
            insert_frame(conn, golden_records, golden[cols])
            bump_stamp(conn, GOLDEN_STAMP)
        if not events.empty:
            insert_frame(conn, golden_events, events)


def delete_golden_records(engine: Engine, golden_ids: list[str]) -> None:
    with engine.begin() as conn:
        if delete_in(conn, golden_records, "golden_id", golden_ids):
            bump_stamp(conn, GOLDEN_STAMP)


# --- outbox / ledger --------------------------------------------------------


def load_outbox(
    engine: Engine,
    target: str,
    statuses: Iterable[str] | None = None,
    target_ids: Iterable[str] | None = None,
) -> pd.DataFrame:
    """``target``'s outbox rows (of ``statuses``; of the records ``target_ids`` only — an
    update's entity key is its record's id, a create's record id is its ``target_id``)."""
    stmt = sa.select(outbox).where(outbox.c.target == target)
    if statuses is not None:
        stmt = stmt.where(outbox.c.status.in_(list(statuses)))
    if target_ids is None:
        return _read_frame(engine, stmt.order_by(outbox.c.entity_key))
    ids = sorted({str(i) for i in target_ids})
    dialect = engine.dialect.name
    parts = [
        stmt.where(sa.or_(by_key, by_id))
        for by_key, by_id in zip(
            one_of(dialect, outbox.c.entity_key, ids),
            one_of(dialect, outbox.c.target_id, ids),
            strict=True,
        )
    ]
    frame = _read_frame(engine, parts or [stmt.where(sa.false())])
    return frame.drop_duplicates("entity_key").sort_values("entity_key", ignore_index=True)


def enqueue_deltas(engine: Engine, target: str, deltas: pd.DataFrame) -> int:
    """Queue one deltas computation of ``target`` (entity_key, golden_id, target_id, op,
    payload, payload_hash[, golden_version, held]) as pending, superseding whatever was queued.

    The computation is the newest desired state of every entity of the target: a row
    still pending or failed from an older one (a create queued while the target was down,
    an update since made moot) becomes ``superseded`` and is never sent, so a stale
    ``new:<golden id>`` cannot go out beside a fresh update of the same golden record.
    Both happen in one transaction: the publisher sees the old queue or the new one.
    """
    now = utcnow()
    cols = ["entity_key", "golden_id", "target_id", "op", "payload", "payload_hash"]
    extra = [c for c in ("golden_version", "held") if c in deltas]
    rows = deltas[[*cols, *extra]].copy()
    rows["target"] = target
    rows["status"] = "pending"
    rows["updated_at"] = now
    keys = rows["entity_key"].tolist()
    with engine.begin() as conn:
        conn.execute(
            outbox.update()
            .where(outbox.c.target == target, outbox.c.status.in_(QUEUED))
            .values(status="superseded", updated_at=now)
        )
        if rows.empty:
            return 0
        kept = ("acked_hash", "acked_payload", "acked_held")  # the ledger survives a requeue
        existing: dict[str, tuple] = {}
        for start in range(0, len(keys), 5000):
            existing.update(
                (r.entity_key, tuple(r)[1:])
                for r in conn.execute(
                    sa.select(outbox.c.entity_key, *(outbox.c[c] for c in kept)).where(
                        outbox.c.target == target,
                        outbox.c.entity_key.in_(keys[start : start + 5000]),
                    )
                )
            )
        for i, col in enumerate(kept):
            rows[col] = rows["entity_key"].map({k: v[i] for k, v in existing.items()})
        rows["attempts"] = 0
        for start in range(0, len(keys), 5000):
            conn.execute(
                outbox.delete().where(
                    outbox.c.target == target, outbox.c.entity_key.in_(keys[start : start + 5000])
                )
            )
        insert_frame(conn, outbox, rows)
    return len(rows)


def outbox_written_since(engine: Engine, since: datetime) -> pd.DataFrame:
    """Outbox rows written at or after ``since``: golden_id, target, target_id."""
    c = outbox.c
    stmt = sa.select(c.golden_id, c.target, c.target_id).where(c.updated_at >= since)
    return _read_frame(engine, stmt)


def outbox_stamp(engine: Engine) -> str:
    """Changes whenever an outbox row is written (every write sets ``updated_at``)."""
    stmt = sa.select(sa.func.count(), sa.func.max(outbox.c.updated_at))
    with engine.connect() as conn:
        n, last = conn.execute(stmt).one()
    return f"{n}:{last}"


def _set_status(
    engine: Engine, target: str, entity_keys: Iterable[str], among: object, status: str
) -> int:
    """Set ``status`` on the rows of ``target`` named by ``entity_keys`` whose status
    matches ``among`` (a SQL condition), in parts; returns how many."""
    n = 0
    with engine.begin() as conn:
        for part in chunks(list(entity_keys)):
            n += conn.execute(
                outbox.update()
                .where(outbox.c.target == target, among, outbox.c.entity_key.in_(part))
                .values(status=status, updated_at=utcnow())
            ).rowcount
    return n


def mark_sending(engine: Engine, target: str, entity_keys: Iterable[str]) -> int:
    """Mark queued rows of ``target`` as on their way (``sending``), committed before the
    batch is sent: a run killed before the answers are recorded leaves rows that say they
    may have reached the target, not ``pending`` (not sent yet)."""
    return _set_status(engine, target, entity_keys, outbox.c.status.in_(QUEUED), SENDING)


def supersede_rows(engine: Engine, target: str, entity_keys: Iterable[str]) -> int:
    """Mark queued rows of ``target`` superseded (never to be sent); returns how many."""
    return _set_status(engine, target, entity_keys, outbox.c.status.in_(QUEUED), "superseded")


def requeue_dead_rows(engine: Engine, target: str, entity_keys: Iterable[str]) -> int:
    """Mark dead rows of ``target`` failed: queued again, for rows whose refusal was no
    verdict on their payload (a credential the target refused, 401/403). The deltas
    computation that follows renews or supersedes them like any queued row; returns how many."""
    return _set_status(engine, target, entity_keys, outbox.c.status == "dead", "failed")


def golden_versions(engine: Engine, golden_ids: Iterable[str] | None = None) -> pd.Series:
    """golden_id -> the stored version of every golden record (of ``golden_ids`` only: a
    retired one's last version from its history)."""
    g = golden_records.c
    if golden_ids is None:
        frame = _read_frame(engine, sa.select(g.golden_id, g.version))
    else:
        ids = sorted({str(i) for i in golden_ids})
        e = golden_events.c
        frame = _read_frame(
            engine,
            [
                stmt
                for part in chunks(ids)
                for stmt in (
                    sa.select(g.golden_id, g.version).where(g.golden_id.in_(part)),
                    sa.select(e.golden_id, sa.func.max(e.version).label("version"))
                    .where(e.golden_id.in_(part))
                    .group_by(e.golden_id),
                )
            ]
            or [sa.select(g.golden_id, g.version).where(sa.false())],
        )
        # a live record's version first: its events may hold a past life's higher one
        frame = frame.drop_duplicates("golden_id", keep="first")
    return pd.Series(
        frame["version"].to_numpy(), index=frame["golden_id"].to_numpy(), dtype="Int64"
    )


def record_publish_results(engine: Engine, target: str, results: pd.DataFrame) -> None:
    """Apply per-entity results: columns entity_key, target_id, status, last_error.

    Acknowledged rows copy their payload hash into ``acked_hash`` (the ledger);
    failed rows keep the old ack so the next delta computation still sees them.
    """
    if results.empty:
        return
    now = utcnow()
    params = [
        {
            "b_target": target,
            "b_key": r["entity_key"],
            "b_status": r["status"],
            "b_error": r["last_error"],
            "b_target_id": r["target_id"],
            "b_now": now,
        }
        for r in _records(results[["entity_key", "target_id", "status", "last_error"]])
    ]
    where = (outbox.c.target == sa.bindparam("b_target")) & (
        outbox.c.entity_key == sa.bindparam("b_key")
    )
    common = {
        "status": sa.bindparam("b_status", type_=sa.Text),
        "last_error": sa.bindparam("b_error", type_=sa.Text),
        "attempts": outbox.c.attempts + 1,
        "updated_at": sa.bindparam("b_now", type_=sa.DateTime(timezone=True)),
    }
    ack_stmt = (
        outbox.update()
        .where(where)
        .values(
            **common,
            acked_hash=outbox.c.payload_hash,
            acked_payload=outbox.c.payload,
            acked_held=outbox.c.held,
            target_id=sa.func.coalesce(
                sa.bindparam("b_target_id", type_=sa.Text), outbox.c.target_id
            ),
        )
    )
    fail_stmt = outbox.update().where(where).values(**common)
    acked = [p for p in params if p["b_status"] == "acked"]
    failed = [p for p in params if p["b_status"] != "acked"]
    with engine.begin() as conn:
        if acked:
            conn.execute(ack_stmt, acked)
        if failed:
            conn.execute(
                fail_stmt, [{k: v for k, v in p.items() if k != "b_target_id"} for p in failed]
            )


def outbox_status_counts(engine: Engine) -> pd.DataFrame:
    stmt = sa.select(outbox.c.target, outbox.c.status, sa.func.count().label("n")).group_by(
        outbox.c.target, outbox.c.status
    )
    return _read_frame(engine, stmt)


# --- watermarks -------------------------------------------------------------


def get_watermark(engine: Engine, connector: str) -> datetime | None:
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(watermarks.c.watermark).where(watermarks.c.connector == connector)
        ).scalar()
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def set_watermark(engine: Engine, connector: str, value: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(watermarks.delete().where(watermarks.c.connector == connector))
        conn.execute(
            watermarks.insert().values(connector=connector, watermark=value, updated_at=utcnow())
        )


def dumps_payload(payload: dict) -> str:
    """Stable JSON for a payload (sorted keys) so equal payloads hash equal."""
    return json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
