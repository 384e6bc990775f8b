"""State-DB tables of identity resolution, and how results are read and written.

Tables (documented for users in docs/identity.md):

- ``identity_map``: connector, source_id -> golden_id (+ the rule that linked it);
- ``golden_ids``: every golden id ever issued, with ``merged_into`` and ``split_from`` history;
- ``identity_links``: the evidence of each link (keys masked);
- ``identity_conflicts``: refused or doubtful links, the review queue;
- ``steward_decisions``: must-link / cannot-link decisions that always win.

SQLAlchemy Core only, one code path for SQLite and PostgreSQL. Writes are
diffs (only changed rows), in chunks, each table in one short transaction.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from custsync_pipeline.domain.golden import key_positions
from custsync_pipeline.domain.hashing import row_hashes64
from custsync_pipeline.domain.identity import (
    CONFLICT_COLUMNS,
    DECISION_COLUMNS,
    LINK_COLUMNS,
    MAP_COLUMNS,
    IdentityResult,
)
from custsync_pipeline.store.bulk import (
    bump_stamp,
    delete_in,
    digest_in,
    drop_digest,
    hashes_digest,
    insert_frame,
    key_queue,
    one_of,
    queue_keys,
    read_frame,
    save_digest,
    stored_digest,
    table_stamp,
)
from custsync_pipeline.store.db import add_missing_columns, metadata
from custsync_pipeline.store.merge_scope import note_member_changes, queue_member_changes

if TYPE_CHECKING:
    from custsync_pipeline.domain.identity_match import MatchParams

CHUNK = 5000
IDENTITY_STAMP = "identity_map"  # table_digests row: changes whenever the map does
MATCH_PARAMS = "identity_match_params"  # table_digests row: m, u, prior and their basis
LINKS_DIGEST = "identity_links"  # table_digests row: the stored evidence's digest
STAMP_RULE = "custsync_id"
TS = sa.DateTime(timezone=True)

identity_map = sa.Table(
    "identity_map",
    metadata,
    sa.Column("connector", sa.String(64), primary_key=True),
    sa.Column("source_id", sa.String(255), primary_key=True),
    sa.Column("golden_id", sa.String(32), nullable=False, index=True),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    # what an incremental resolution compares and reaches through (``identity_scope``):
    # the source record's row hash it was resolved from, and the 64-bit hashes of its
    # identifier values, home, name words and blocks (NULL before it existed: resolved all)
    sa.Column("source_hash", sa.Text),
    sa.Column("reach", sa.LargeBinary),
)

golden_ids = sa.Table(
    "golden_ids",
    metadata,
    sa.Column("golden_id", sa.String(32), primary_key=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("merged_into", sa.String(32), nullable=True, index=True),
    sa.Column("merged_at", TS, nullable=True),
    sa.Column("split_from", sa.String(32), nullable=True, index=True),
    sa.Column("split_at", TS, nullable=True),
)

identity_links = sa.Table(
    "identity_links",
    metadata,
    sa.Column("link_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("golden_id", sa.String(32), nullable=False, index=True),
    sa.Column("connector_a", sa.String(64), nullable=False),
    sa.Column("source_id_a", sa.String(255), nullable=False),
    sa.Column("connector_b", sa.String(64), nullable=False),
    sa.Column("source_id_b", sa.String(255), nullable=False),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("key", sa.String(512), nullable=False),  # masked
    # the 64-bit hash of the row's values (signed): the next resolution's diff reads this
    # column instead of every link (NULL in rows written before it existed)
    sa.Column("row_hash", sa.BigInteger),
)

identity_conflicts = sa.Table(
    "identity_conflicts",
    metadata,
    sa.Column("conflict_id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False, index=True),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("key_masked", sa.String(512), nullable=False),
    sa.Column("connector_a", sa.String(64), nullable=False),
    sa.Column("source_id_a", sa.String(255), nullable=False),
    sa.Column("golden_id_a", sa.String(32), nullable=False),
    sa.Column("connector_b", sa.String(64), nullable=False),
    sa.Column("source_id_b", sa.String(255), nullable=False),
    sa.Column("golden_id_b", sa.String(32), nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),
    sa.Column("first_seen_at", TS, nullable=False),
)

steward_decisions = sa.Table(
    "steward_decisions",
    metadata,
    sa.Column("decision_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("connector_a", sa.String(64), nullable=False),
    sa.Column("source_id_a", sa.String(255), nullable=False),
    sa.Column("connector_b", sa.String(64), nullable=False),
    sa.Column("source_id_b", sa.String(255), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("decided_by", sa.String(128), nullable=True),
    sa.Column("decided_at", TS, nullable=False),
    sa.UniqueConstraint(
        "connector_a", "source_id_a", "connector_b", "source_id_b", name="uq_steward_pair"
    ),
)

# source records written or deleted since the last resolution: every write of source
# records queues their keys in its own transaction (``queue_for_resolution``), so an
# incremental resolution reads what changed instead of every record's hash
resolution_queue = key_queue(
    "resolution_queue", "source records written or deleted since the last identity resolution"
)

IDENTITY_TABLES = (
    identity_map,
    golden_ids,
    identity_links,
    identity_conflicts,
    steward_decisions,
    resolution_queue,
)
# table_digests row: the source stamp the stored map was resolved at, written with the
# queue rows that resolution read taken off (``take_off_resolved``); without it (a state DB
# of an older release, or one ``custsync forget`` cleared) the queue is no account of
# what changed, and the current records are read whole
RESOLVED_SOURCE = "identity_source_stamp"
# a write of more records than this queues its connector whole (one row, not a million)
RESOLUTION_QUEUE_MAX = 50_000


def create_identity_tables(engine: Engine) -> None:
    metadata.create_all(engine, tables=list(IDENTITY_TABLES))
    # golden_ids.split_from / split_at came after the first release
    add_missing_columns(engine, IDENTITY_TABLES)


def _delete_keys(conn: sa.Connection, table: sa.Table, keys: pd.DataFrame) -> None:
    """Delete the rows of ``table`` whose key columns match a row of ``keys`` (one key
    column, or ``connector`` + one more: chunked ``IN`` lists per connector)."""
    *outer, inner = list(keys.columns)
    groups = keys.groupby(outer, sort=False)[inner] if outer else [((), keys[inner])]
    for group, values in groups:
        fixed = [table.c[c] == v for c, v in zip(outer, group if outer else (), strict=True)]
        delete_in(conn, table, inner, values.astype(str).tolist(), *fixed)


def _replace_rows(
    engine: Engine, table: sa.Table, rows: pd.DataFrame, keys: list[str], fresh: bool
) -> None:
    """Write ``rows`` keyed by ``keys`` in one transaction: the stored rows with those keys
    deleted (unless the table was empty: ``fresh``), then one bulk insert."""
    if rows.empty:
        return
    with engine.begin() as conn:
        if not fresh:
            _delete_keys(conn, table, rows[keys])
        insert_frame(conn, table, rows)


def _read(engine: Engine, table: sa.Table) -> pd.DataFrame:
    return read_frame(engine, sa.select(table))


def load_resolution_records(
    engine: Engine, connectors: Iterable[str], columns: Iterable[str]
) -> pd.DataFrame:
    """The valid source records of ``connectors``, only the ``columns`` resolution reads,
    plus ``custsync_id`` for the stamped-record split; text as Arrow-backed strings:
    resolution's string kernels, missing-value masks and factorizations then run in
    Arrow, not over a Python object per value (a million records resolved in about 23 s
    against 33 s; the read costs about 3 s more)."""
    from custsync_pipeline.store.core import load_source_records

    return load_source_records(
        engine, connectors, columns=[*columns, "custsync_id"], arrow_text=True
    )


def load_identity_state(
    engine: Engine, with_reach: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(prior_map, golden_ids, decisions)`` as ``resolve_identities`` takes them; the map
    with each record's ``source_hash`` (and ``reach``, for an incremental resolution)."""
    create_identity_tables(engine)
    m = identity_map.c
    cols = [*[m[c] for c in MAP_COLUMNS], m.source_hash]
    if with_reach:
        cols.append(m.reach)
    prior = read_frame(engine, sa.select(*cols))
    gids = _read(engine, golden_ids)
    return prior, gids, load_steward_decisions(engine)


def stale_reach(engine: Engine, prior_map: pd.DataFrame | None = None) -> bool:
    """Whether some stored map row has no reach yet (written by an older release); read
    from ``prior_map`` when it holds the reach already (no scan of a million blobs)."""
    if prior_map is not None and "reach" in prior_map.columns:
        rule = prior_map["rule"].to_numpy(dtype=object)
        return bool(
            (pd.isna(prior_map["reach"].to_numpy(dtype=object)) & (rule != STAMP_RULE)).any()
        )
    create_identity_tables(engine)
    m = identity_map.c
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(sa.literal(1))
            .select_from(identity_map)
            .where(m.reach.is_(None), m.rule != STAMP_RULE)
            .limit(1)
        ).first()
    return row is not None


def queue_for_resolution(conn: sa.Connection, connector: str, source_ids: Iterable[object]) -> int:
    """Queue ``source_ids`` of ``connector`` (written or deleted) for the next resolution, in
    the caller's transaction; returns the rows queued."""
    return queue_keys(conn, resolution_queue, connector, source_ids, RESOLUTION_QUEUE_MAX)


@dataclass
class QueuedChanges:
    """What the resolution queue says changed since the stored map was resolved."""

    ids: list[int]  # the queue rows read (taken off once a resolution is saved)
    stamp: str  # the source stamp read after them (noted with the resolution)
    keys: pd.DataFrame | None  # connector, source_id; None: no account (read every record)
    reason: str = ""  # why there is no account


def read_resolution_queue(engine: Engine, connectors: Iterable[str]) -> QueuedChanges:
    """The queued keys of ``connectors``, or no account of what changed (``keys`` None,
    ``reason`` says why): no stored map resolved with the queue, a connector queued whole,
    or the source stamp moved with nothing queued (a writer that does not queue)."""
    from custsync_pipeline.store.core import SOURCE_STAMP  # core queues through this module

    create_identity_tables(engine)
    c = resolution_queue.c
    queued = read_frame(engine, sa.select(c.id, c.connector, c.source_id))
    ids = [int(i) for i in queued["id"]]
    marker = stored_digest(engine, RESOLVED_SOURCE)
    # read after the queue: a write in between is queued beyond what was read, and its
    # stamp is the one saved, so the next resolution sees it in the queue
    stamp = table_stamp(engine, SOURCE_STAMP)
    if marker is None:  # ("": resolved when no stamp was held, as after ``custsync forget``)
        return QueuedChanges(ids, stamp, None, "the stored map was not resolved with a queue")
    if queued["source_id"].isna().any():
        return QueuedChanges(ids, stamp, None, "a write queued a connector whole")
    if stamp != marker and queued.empty:
        return QueuedChanges(ids, stamp, None, "the source records changed with nothing queued")
    wanted = set(connectors)
    keys = queued.loc[queued["connector"].isin(wanted), ["connector", "source_id"]]
    keys = keys.astype(str).drop_duplicates().reset_index(drop=True)
    return QueuedChanges(ids, stamp, keys)


def take_off_resolved(conn: sa.Connection, queue_ids: Iterable[int], source_stamp: str) -> None:
    """After a resolution is saved (in its transaction): take off the queue rows it read and
    note the source stamp it resolved at."""
    resolution_queue.create(conn, checkfirst=True)
    delete_in(conn, resolution_queue, "id", sorted(int(i) for i in queue_ids))
    save_digest(conn, RESOLVED_SOURCE, source_stamp)


def load_match_params(
    engine: Engine, basis: str
) -> tuple[bool, MatchParams | None, np.ndarray | None]:
    """(whether the last full resolution ran under the same ``basis`` — connectors, rules,
    matching, steward decisions, code —, the match parameters it estimated if any, and the
    first-name tokens it knew, for ``KnownWords``)."""
    from custsync_pipeline.domain.identity_match import MatchParams

    text = stored_digest(engine, MATCH_PARAMS)
    if not text:
        return False, None, None
    try:
        saved = json.loads(text)
        if saved.get("basis") != basis:
            return False, None, None
        params = MatchParams.from_json(saved["params"]) if saved.get("params") else None
        known = np.array(saved["known"], dtype=object)
        return True, params, known
    except (ValueError, KeyError, TypeError):
        return False, None, None  # written by another release: resolve everything again


def save_match_params(
    conn: sa.Connection, basis: str, params: MatchParams | None, known: np.ndarray | None
) -> None:
    """Store what a full resolution estimated (in the caller's transaction)."""
    if known is None:
        drop_digest(conn, MATCH_PARAMS)
        return
    payload = {
        "basis": basis,
        "params": params.to_json() if params is not None else None,
        "known": [str(t) for t in known],
    }
    save_digest(conn, MATCH_PARAMS, json.dumps(payload))


def load_steward_decisions(engine: Engine) -> pd.DataFrame:
    create_identity_tables(engine)
    return _read(engine, steward_decisions)


def identity_figures(engine: Engine) -> tuple[int, int, dict[str, int]]:
    """(source records mapped, golden ids they map to, review-queue rows by kind), counted
    in the state DB without reading the map."""
    create_identity_tables(engine)
    m, c = identity_map.c, identity_conflicts.c
    with engine.connect() as conn:
        rows, golden = conn.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(m.golden_id)))
        ).one()
        kinds = conn.execute(sa.select(c.kind, sa.func.count()).group_by(c.kind)).all()
    return int(rows), int(golden), {str(k): int(n) for k, n in kinds}


def load_identity_conflicts(engine: Engine) -> pd.DataFrame:
    """The stored review queue, as a resolution returns it."""
    create_identity_tables(engine)
    return _read(engine, identity_conflicts)[list(CONFLICT_COLUMNS)]


def save_identity_result(
    engine: Engine,
    result: IdentityResult,
    stored: tuple[pd.DataFrame, pd.DataFrame] | None = None,
    reach: pd.DataFrame | None = None,
    rewrite_reach: bool = False,
    touched: np.ndarray | None = None,
    kept: int = 0,
    gone: pd.DataFrame | None = None,
) -> dict[str, int]:
    """Write a resolution: the map, golden ids and evidence as diffs, conflicts replaced.
    ``stored``: the (map, golden ids) the resolution read, as ``load_identity_state``
    gave them (no second read of a million rows).

    ``reach``: connector, source_id, source_hash, reach of the records resolved (what the
    next incremental resolution compares); a row is rewritten when its source hash
    changed (every row: ``rewrite_reach``, the reach was computed under other rules).
    ``touched``: the golden ids an incremental resolution decided again; their evidence
    is replaced by ``result.links`` (else the whole evidence is diffed).
    ``kept``, ``gone``: an incremental resolution's first ``kept`` map rows are stored rows
    as they are, and ``gone`` (connector, source_id) the stored records it no longer
    resolves: only the other rows are compared with the stored map (not a million).

    Returns counts of rows written per table (for metadata).
    """
    create_identity_tables(engine)
    written: dict[str, int] = {}

    # golden ids: upsert the rows that are new or changed
    old = stored[1] if stored is not None else _read(engine, golden_ids)
    new = result.golden_ids
    cols = ["golden_id", "created_at", "merged_into", "merged_at", "split_from", "split_at"]
    if len(old):
        before, _ = _aligned(new, old, ["golden_id"])
        changed = before["_found"].eq(False) | ~(
            _same(new["merged_into"], before["merged_into"])
            & _same(new["merged_at"], before["merged_at"])
        )
        gid_rows = new[cols][changed.to_numpy()]
    else:
        gid_rows = new[cols]
    _replace_rows(engine, golden_ids, gid_rows, ["golden_id"], fresh=not len(old))
    written["golden_ids"] = len(gid_rows)

    # identity map: upsert changed rows, delete records that are gone
    old_map = stored[0] if stored is not None else _read(engine, identity_map)
    key = ["connector", "source_id"]
    cur = result.identity_map[MAP_COLUMNS].copy()
    held = [c for c in ("golden_id", "rule", "source_hash", "reach") if c in old_map.columns]
    if kept and gone is not None and len(old_map):
        cur, at, gone_rows = _scoped_rows(cur, kept, old_map, reach, gone)
        before, _ = _aligned(cur, old_map[[*key, *held]], key, at)
    elif len(old_map):
        before, hit = _aligned(cur, old_map[[*key, *held]], key)
        gone_rows = old_map.loc[~hit, [*key, "golden_id"]]
    else:
        before = pd.DataFrame(index=cur.index)
    # each row's source hash and reach: as stored, the resolved records' from ``reach``
    for col in ("source_hash", "reach"):
        values = np.full(len(cur), None, dtype=object)
        if col in before.columns:
            values = before[col].to_numpy(dtype=object, na_value=None).copy()
        cur[col] = values
    resolved = np.zeros(len(cur), dtype=bool)
    if reach is not None and len(reach):
        pos = key_positions(cur, reach, key)
        resolved = pos >= 0
        for col in ("source_hash", "reach"):
            values = cur[col].to_numpy(dtype=object)
            values[resolved] = reach[col].to_numpy(dtype=object)[pos[resolved]]
            cur[col] = values
    # a stamped record takes no part in resolution: nothing to compare, nothing reaches it
    stamp = (cur["rule"] == STAMP_RULE).to_numpy()
    if stamp.any():
        for col in ("source_hash", "reach"):
            values = cur[col].to_numpy(dtype=object)
            values[stamp] = None
            cur[col] = values
    if len(old_map):
        changed = ~(
            _same(cur["golden_id"], before["golden_id"]) & _same(cur["rule"], before["rule"])
        ).to_numpy()
        moved = int(changed.sum())  # rows whose golden id or rule changed (or new)
        if resolved.any():
            idx = np.flatnonzero(resolved)
            if rewrite_reach or "source_hash" not in before.columns:
                differs = np.ones(len(idx), dtype=bool)
            else:
                differs = ~_same(cur["source_hash"].iloc[idx], before["source_hash"].iloc[idx])
                differs = differs.to_numpy()
                if "reach" in before.columns:
                    differs |= ~_same(cur["reach"].iloc[idx], before["reach"].iloc[idx]).to_numpy()
            changed[idx[differs]] = True
        upserts = cur[changed]
        gone = gone_rows[key]
        # golden records whose members changed: a record's old and new golden id when it
        # moved (or is new), a gone record's old one — for the merge (``member_queue``)
        regrouped = ~_same(cur["golden_id"], before["golden_id"]).to_numpy()
        member_changes = np.r_[
            cur["golden_id"].to_numpy(dtype=object)[regrouped],
            before["golden_id"].to_numpy(dtype=object)[regrouped],
            gone_rows["golden_id"].to_numpy(dtype=object),
        ]
    else:
        upserts, gone = cur, pd.DataFrame(columns=key)
        moved = len(cur)
        member_changes = cur["golden_id"].to_numpy(dtype=object)
    writes = bool(written["golden_ids"] or len(upserts) or len(gone))
    if writes:
        with engine.begin() as conn:  # committed before the map is written
            queue_member_changes(conn, member_changes, digest_in(conn, IDENTITY_STAMP) or "")
    _replace_rows(engine, identity_map, upserts, key, fresh=not len(old_map))
    if len(gone):
        with engine.begin() as conn:
            _delete_keys(conn, identity_map, gone)
    written["identity_map"] = len(upserts)
    written["identity_map_moved"] = moved
    written["identity_map_deleted"] = len(gone)
    if writes:
        with engine.begin() as conn:
            stamp_before = digest_in(conn, IDENTITY_STAMP) or ""
            bump_stamp(conn, IDENTITY_STAMP)
            note_member_changes(conn, stamp_before, digest_in(conn, IDENTITY_STAMP) or "")

    if touched is None:
        written["identity_links"] = _save_all_links(engine, result.links)
    else:
        written["identity_links"] = _save_touched_links(
            engine, result.links, touched, upserts, gone, old_map
        )

    # conflicts: the current queue, each row keeping when it was first seen
    with engine.connect() as conn:
        seen = dict(
            conn.execute(
                sa.select(identity_conflicts.c.conflict_id, identity_conflicts.c.first_seen_at)
            ).all()
        )
    now = pd.Timestamp.now(tz="UTC")
    conflicts = result.conflicts[list(CONFLICT_COLUMNS)].copy()
    first_seen = conflicts["conflict_id"].map(seen)
    conflicts["first_seen_at"] = pd.to_datetime(first_seen, utc=True).fillna(now)
    for col in ("golden_id_a", "golden_id_b", "key_masked", "evidence", "rule"):
        conflicts[col] = conflicts[col].astype(object).where(conflicts[col].notna(), "")
    with engine.begin() as conn:
        conn.execute(identity_conflicts.delete())
        insert_frame(conn, identity_conflicts, conflicts)
    written["identity_conflicts"] = len(conflicts)
    return written


def _scoped_rows(
    cur: pd.DataFrame,
    kept: int,
    old_map: pd.DataFrame,
    reach: pd.DataFrame | None,
    gone: pd.DataFrame,
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """The map rows an incremental resolution may have changed — those after the ``kept``
    stored ones, and kept rows whose source hash it brought up to date (in ``reach``) —
    with their positions in ``old_map`` (one lookup in the million stored keys), and the
    stored rows to delete (with the golden id each had): ``gone``, and a stamped copy no
    longer present."""
    key = ["connector", "source_id"]
    tail = cur.iloc[kept:].reset_index(drop=True)
    extra = pd.DataFrame(columns=key)
    if reach is not None and len(reach):
        extra = reach.loc[key_positions(reach, tail, key) < 0, key]
    at = key_positions(pd.concat([tail[key], extra], ignore_index=True), old_map, key)
    rows, at_extra = tail, at[len(tail) :]
    if len(extra):  # kept rows, as stored (the source hash is set from ``reach`` after)
        rows = pd.concat(
            [tail, old_map.iloc[at_extra[at_extra >= 0]][MAP_COLUMNS]], ignore_index=True
        )
        at = np.r_[at[: len(tail)], at_extra[at_extra >= 0]]
    cols = [*key, "golden_id"]  # ``gone`` names the golden id each had (member_queue)
    stamped = old_map.loc[(old_map["rule"] == STAMP_RULE).to_numpy(), cols]
    gone_rows = pd.concat([gone[cols], stamped], ignore_index=True)
    gone_rows = gone_rows.drop_duplicates(subset=key)
    if len(gone_rows):  # a record still in the map (stamped since it was resolved) stays
        gone_rows = gone_rows[key_positions(gone_rows, rows, key) < 0]
    return rows, at, gone_rows


def _save_all_links(engine: Engine, result_links: pd.DataFrame) -> int:
    """The evidence as a diff of row hashes: the links that are new are added and those no
    longer found removed; none when it is what is stored already."""
    links = result_links[list(LINK_COLUMNS)]
    new_h = _row_hashes(links)
    once = ~pd.Series(new_h).duplicated().to_numpy()  # the same evidence twice: one row
    links, new_h = links[once], new_h[once]
    digest = hashes_digest(new_h)
    if digest == stored_digest(engine, LINKS_DIGEST):
        return 0
    held_ids, old_h = _held_link_hashes(engine)
    doomed = held_ids[~np.isin(old_h, new_h)].tolist()
    fresh = ~np.isin(new_h, old_h)
    added = links[fresh].assign(row_hash=new_h[fresh].view(np.int64))
    with engine.begin() as conn:
        delete_in(conn, identity_links, "link_id", doomed)
        insert_frame(conn, identity_links, added)
        save_digest(conn, LINKS_DIGEST, digest)
    return len(added) + len(doomed)


def _save_touched_links(
    engine: Engine,
    result_links: pd.DataFrame,
    touched: np.ndarray,
    upserts: pd.DataFrame,
    gone: pd.DataFrame,
    old_map: pd.DataFrame,
) -> int:
    """An incremental resolution's evidence: every link of a golden id it decided again is
    replaced, and a stamped record's link follows its row (its copy's golden id moved, or it
    came or went) — as a diff by row hashes: of the stored links those names cover, the
    ones no longer found are removed and only new ones added (most golden records a change
    reaches keep their evidence). The stored digest no longer covers the table: the next
    full resolution diffs by row hashes."""
    links = result_links[list(LINK_COLUMNS)]
    if links.empty and not len(touched) and upserts.empty and gone.empty:
        return 0
    key = ["connector_a", "source_id_a"]
    stamped = upserts.loc[upserts["rule"] == STAMP_RULE, ["connector", "source_id"]]
    moved = pd.concat([stamped, gone], ignore_index=True).set_axis(key, axis=1)
    touched_set = set(pd.Series(touched, dtype=object).dropna().astype(str))
    mine = links["golden_id"].astype(str).isin(touched_set).to_numpy()
    if len(moved) and len(links):
        pos = key_positions(links, moved.astype(str), key)
        mine |= (pos >= 0) & (links["rule"] == STAMP_RULE).to_numpy()
    links = links[mine]
    new_h = _row_hashes(links)
    once = ~pd.Series(new_h).duplicated().to_numpy()
    links, new_h = links[once], new_h[once]
    c = identity_links.c
    with engine.begin() as conn:
        dialect = conn.dialect.name
        wheres = [[p] for p in one_of(dialect, c.golden_id, sorted(touched_set))]
        for connector, part in moved.groupby(key[0]):
            ids = part[key[1]].astype(str).tolist()
            wheres += [
                [c.connector_a == connector, c.rule == STAMP_RULE, p]
                for p in one_of(dialect, c.source_id_a, ids)
            ]
        # 0 for a row with no hash: a NULL among 64-bit ints would make pandas round them
        # all as floats
        hashed = sa.func.coalesce(c.row_hash, 0)
        held = [conn.execute(sa.select(c.link_id, hashed).where(*w)).all() for w in wheres]
        held_ids, held_h = _link_rows([row for rows in held for row in rows])
        # a stored link stays when its values are among the new ones (once; a row written
        # before the hash column existed is written again)
        stays = np.isin(held_h, new_h) & ~pd.Series(held_h).duplicated().to_numpy()
        stays &= held_h != np.uint64(0)
        fresh = ~np.isin(new_h, held_h[stays])
        removed = delete_in(conn, identity_links, "link_id", held_ids[~stays].tolist())
        added = links[fresh].assign(row_hash=new_h[fresh].view(np.int64))
        insert_frame(conn, identity_links, added)
        drop_digest(conn, LINKS_DIGEST)
    return removed + len(added)


def _link_rows(rows: list) -> tuple[np.ndarray, np.ndarray]:
    """(link ids, unsigned row hashes; 0: the row has none) of (link_id, row_hash) rows,
    each link once (one can match two of the reads)."""
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64)
    frame = pd.DataFrame(rows, columns=["link_id", "row_hash"]).drop_duplicates("link_id")
    hashes = frame["row_hash"].to_numpy(dtype=np.int64).view(np.uint64)
    return frame["link_id"].to_numpy(dtype=np.int64), hashes


def _held_link_hashes(engine: Engine) -> tuple[np.ndarray, np.ndarray]:
    """(link ids, their row hashes) of the stored evidence: the hash column, and the
    values of the rows that have none yet (written before it existed) hashed here."""
    c = identity_links.c
    held = read_frame(engine, sa.select(c.link_id, c.row_hash).where(c.row_hash.is_not(None)))
    old = read_frame(
        engine, sa.select(c.link_id, *[c[k] for k in LINK_COLUMNS]).where(c.row_hash.is_(None))
    )
    ids = np.concatenate(
        [held["link_id"].to_numpy(dtype=np.int64), old["link_id"].to_numpy(dtype=np.int64)]
    )
    hashes = np.concatenate(
        [
            held["row_hash"].to_numpy(dtype=np.int64).view(np.uint64),
            _row_hashes(old[list(LINK_COLUMNS)]) if len(old) else np.zeros(0, dtype=np.uint64),
        ]
    )
    return ids, hashes


def _row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row of text values (the same whether built or read back)."""
    return row_hashes64(frame.astype(object))


def _aligned(
    frame: pd.DataFrame, stored: pd.DataFrame, key: list[str], pos: np.ndarray | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Per row of ``frame``: the row of ``stored`` with the same ``key`` (missing values
    where none; ``_found`` says which), looked up by Arrow's hash join, no string merge
    (``pos``: the lookup, done already); and per row of ``stored`` whether some row of
    ``frame`` has its key."""
    pos = key_positions(frame, stored, key) if pos is None else pos
    found = pos >= 0
    out = stored.iloc[np.maximum(pos, 0)].set_axis(frame.index)
    out = out.mask(np.repeat(~found[:, None], out.shape[1], axis=1))
    out["_found"] = found
    hit = np.zeros(len(stored), dtype=bool)
    hit[pos[found]] = True
    return out, hit


def _same(a: pd.Series, b: pd.Series) -> pd.Series:
    a_na, b_na = a.isna().to_numpy(), b.isna().to_numpy()
    eq = (a.astype(object).to_numpy() == b.astype(object).to_numpy()) & ~a_na & ~b_na
    return pd.Series(eq | (a_na & b_na), index=a.index)


# --- steward decisions ------------------------------------------------------


def _ordered(a: tuple[str, str], b: tuple[str, str]) -> tuple[tuple[str, str], tuple[str, str]]:
    return (a, b) if a <= b else (b, a)


def set_decision(
    engine: Engine,
    decision: str,
    a: tuple[str, str],
    b: tuple[str, str],
    note: str | None = None,
    decided_by: str | None = None,
) -> None:
    """Record must_link / cannot_link for a pair of records; replaces any earlier decision on it."""
    if decision not in ("must_link", "cannot_link"):
        raise ValueError(f"decision must be must_link or cannot_link, not {decision!r}")
    if a == b:
        raise ValueError("a decision needs two different records")
    create_identity_tables(engine)
    (ca, sa_), (cb, sb) = _ordered(a, b)
    row = {
        "decision": decision,
        "connector_a": ca,
        "source_id_a": sa_,
        "connector_b": cb,
        "source_id_b": sb,
        "note": note,
        "decided_by": decided_by,
        "decided_at": pd.Timestamp.now(tz="UTC").to_pydatetime(),
    }
    with engine.begin() as conn:
        conn.execute(steward_decisions.delete().where(_pair_clause(ca, sa_, cb, sb)))
        conn.execute(steward_decisions.insert(), [row])


def _pair_clause(ca: str, sa_: str, cb: str, sb: str):
    t = steward_decisions.c
    return sa.and_(
        t.connector_a == ca, t.source_id_a == sa_, t.connector_b == cb, t.source_id_b == sb
    )


def remove_decision(engine: Engine, a: tuple[str, str], b: tuple[str, str]) -> int:
    """Delete the decision on a pair; returns how many rows went (0 or 1)."""
    create_identity_tables(engine)
    (ca, sa_), (cb, sb) = _ordered(a, b)
    with engine.begin() as conn:
        return conn.execute(
            steward_decisions.delete().where(_pair_clause(ca, sa_, cb, sb))
        ).rowcount


def remove_decision_id(engine: Engine, decision_id: int) -> int:
    """Delete the decision numbered ``decision_id``; returns how many rows went (0 or 1)."""
    create_identity_tables(engine)
    with engine.begin() as conn:
        return conn.execute(
            steward_decisions.delete().where(steward_decisions.c.decision_id == int(decision_id))
        ).rowcount


def list_decisions(engine: Engine) -> pd.DataFrame:
    create_identity_tables(engine)
    frame = _read(engine, steward_decisions)
    return frame.sort_values("decision_id").reset_index(drop=True)


# --- explain and export ------------------------------------------------------


@dataclass
class Explanation:
    """Everything ``custsync explain`` prints about one golden id (keys already masked)."""

    asked: str
    golden_id: str | None  # the live id ``asked`` resolves to; None when unknown
    created_at: pd.Timestamp | None
    absorbed: pd.DataFrame  # golden_id, merged_at: ids merged into this one
    members: pd.DataFrame  # connector, source_id, rule, updated_at, name, email, phone (masked)
    links: pd.DataFrame  # connector_a, source_id_a, connector_b, source_id_b, rule, key
    conflicts: pd.DataFrame  # open conflicts touching a member
    split_from: str | None = None  # the id this one split off from
    split_at: pd.Timestamp | None = None
    split_off: pd.DataFrame | None = None  # golden_id, split_at: ids that split off this one


def explain_golden_id(engine: Engine, golden_id: str) -> Explanation:
    """Resolve ``golden_id`` (following merges) and gather its members and evidence."""
    from custsync_pipeline.domain.identity_ids import survivor_table
    from custsync_pipeline.domain.identity_keys import mask_values

    create_identity_tables(engine)
    gids = _read(engine, golden_ids)
    live = survivor_table(gids).get(golden_id, golden_id)
    row = gids[gids["golden_id"] == live]
    if row.empty:
        empty = pd.DataFrame()
        return Explanation(golden_id, None, None, empty, empty, empty, empty)
    # every id that ever resolved here, directly or through a chain
    table = survivor_table(gids)
    absorbed_ids = [g for g, s in table.items() if s == live]
    absorbed = gids[gids["golden_id"].isin(absorbed_ids)][["golden_id", "merged_into", "merged_at"]]

    with engine.connect() as conn:
        members = pd.DataFrame(
            conn.execute(sa.select(identity_map).where(identity_map.c.golden_id == live))
            .mappings()
            .all(),
            columns=MAP_COLUMNS,
        )
        links = pd.DataFrame(
            conn.execute(
                sa.select(*[identity_links.c[c] for c in LINK_COLUMNS[1:]]).where(
                    identity_links.c.golden_id == live
                )
            ).all(),
            columns=LINK_COLUMNS[1:],
        )
        conflicts = pd.DataFrame(
            conn.execute(
                sa.select(identity_conflicts).where(
                    sa.or_(
                        identity_conflicts.c.golden_id_a == live,
                        identity_conflicts.c.golden_id_b == live,
                    )
                )
            )
            .mappings()
            .all(),
            columns=[c.name for c in identity_conflicts.columns],
        )
    members = members.sort_values(["connector", "source_id"]).reset_index(drop=True)
    details = _member_details(engine, members)
    members = members.merge(details, on=["connector", "source_id"], how="left")
    for col in ("email", "phone"):
        members[col] = mask_values(members[col]).where(members[col].notna(), "")
    return Explanation(
        asked=golden_id,
        golden_id=live,
        created_at=row["created_at"].iloc[0],
        absorbed=absorbed.reset_index(drop=True),
        members=members,
        links=links,
        conflicts=conflicts,
        split_from=row["split_from"].iloc[0] if pd.notna(row["split_from"].iloc[0]) else None,
        split_at=row["split_at"].iloc[0] if pd.notna(row["split_at"].iloc[0]) else None,
        split_off=gids.loc[gids["split_from"] == live, ["golden_id", "split_at"]].reset_index(
            drop=True
        ),
    )


def _member_details(engine: Engine, members: pd.DataFrame) -> pd.DataFrame:
    """Name and contact points of each member from ``source_records`` (when that table exists)."""
    cols = ["connector", "source_id", "name", "email", "phone"]
    if members.empty or not sa.inspect(engine).has_table("source_records"):
        return pd.DataFrame(columns=cols)
    from custsync_pipeline.store.core import source_records as sr

    out = []
    with engine.connect() as conn:
        for connector, ids in members.groupby("connector")["source_id"]:
            rows = conn.execute(
                sa.select(
                    sr.c.connector,
                    sr.c.source_id,
                    sr.c.first_name,
                    sr.c.last_name,
                    sr.c.company_name,
                    sr.c.email,
                    sr.c.phone,
                ).where(sr.c.connector == connector, sr.c.source_id.in_(ids.tolist()))
            ).all()
            out += rows
    frame = pd.DataFrame(
        out,
        columns=[
            "connector",
            "source_id",
            "first_name",
            "last_name",
            "company_name",
            "email",
            "phone",
        ],
    )
    # a name with the last name cut to its initial: enough to review, little to leak
    last = frame["last_name"].fillna("").str.slice(0, 1)
    person = (frame["first_name"].fillna("") + " " + last.where(last == "", last + ".")).str.strip()
    frame["name"] = person.where(person != "", frame["company_name"].fillna(""))
    return frame[cols]


def _csv_safe(text: str) -> str:
    # a cell starting with = + - @ is a formula to a spreadsheet (CSV injection)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _iso(at: object) -> str:
    if at is None:
        return ""
    ts = pd.Timestamp(at)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).isoformat()


def export_identity_map(engine: Engine, out: str | Path) -> int:
    """Write the identity map to CSV (streamed in chunks); returns the row count."""
    create_identity_tables(engine)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    stmt = sa.select(identity_map).order_by(identity_map.c.connector, identity_map.c.source_id)
    with engine.connect() as conn, path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(MAP_COLUMNS)
        result = conn.execution_options(stream_results=True, yield_per=CHUNK).execute(stmt)
        for part in result.partitions(CHUNK):
            for row in part:
                writer.writerow(
                    [
                        _csv_safe(row.connector),
                        _csv_safe(row.source_id),
                        row.golden_id,
                        row.rule,
                        _iso(row.updated_at),
                    ]
                )
            n += len(part)
    return n


__all__ = [
    "identity_map",
    "golden_ids",
    "identity_links",
    "identity_conflicts",
    "steward_decisions",
    "load_identity_state",
    "save_identity_result",
    "set_decision",
    "remove_decision",
    "list_decisions",
    "explain_golden_id",
    "export_identity_map",
    "Explanation",
    "DECISION_COLUMNS",
]
