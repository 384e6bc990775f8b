"""Which golden records each target has held: a record deleted in a target is never
re-created there.

``target_presence`` keeps one row per (target, golden id) the target has held a member
of: when it was first and last seen, and ``gone_at`` once it no longer holds one (someone
deleted it there). Deltas never create a golden record again in a target where it is
gone; a member that shows up again (re-created by hand, re-linked) clears ``gone_at``.

The source of truth has rows of its own (``source:<connector>``): a golden record gone
from it for ``deletes.grace_runs`` runs is deleted (or archived) in the targets whose
``delete_mode`` says so; reappearing before that cancels it.

A golden record that no longer holds a record because that record now belongs to another
golden record (a merge, a re-resolution, a steward's decision) did not leave: nobody
deleted anything. Each row keeps one record it held (``holder``); when that record is
still held under another golden id, the row goes, as a merged-away id's does — no
pending delete, no ``gone from target``.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from custsync_pipeline.store.bulk import chunks, delete_in
from custsync_pipeline.store.db import metadata
from custsync_pipeline.store.identity import golden_ids

target_presence = sa.Table(
    "target_presence",
    metadata,
    sa.Column("target", sa.String(64), primary_key=True),
    sa.Column("golden_id", sa.String(32), primary_key=True),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("gone_at", sa.DateTime(timezone=True)),  # no member there any more: deleted
    sa.Column("gone_runs", sa.Integer),  # runs that found it gone (the delete grace period)
    # one of the target's records it held when last seen (the smallest id): a golden id
    # whose record now belongs to another golden id did not leave, its record moved
    sa.Column("holder", sa.String(255)),
)

SOURCE_PREFIX = "source:"  # rows of the source of truth: target = "source:<connector>"


def _frame(conn: sa.Connection, columns: list[str], *where: object) -> pd.DataFrame:
    """``columns`` of the ``target_presence`` rows that match ``where``, as a frame."""
    stmt = sa.select(*[target_presence.c[c] for c in columns]).where(*where)
    return pd.DataFrame(conn.execute(stmt).fetchall(), columns=columns)


def first_holders(records: pd.DataFrame) -> pd.Series:
    """golden_id -> the smallest source id of its ``records`` (golden_id, source_id)."""
    if records.empty:
        return pd.Series(dtype=object)
    frame = records[["golden_id", "source_id"]].astype(str)
    frame = frame.sort_values(["golden_id", "source_id"], kind="stable")
    first = frame.drop_duplicates("golden_id")
    return pd.Series(first["source_id"].to_numpy(), index=first["golden_id"].to_numpy())


def record_presence(
    engine: Engine, target: str, present: Iterable[str], records: pd.DataFrame | None = None
) -> set[str]:
    """Note the golden ids ``target`` holds now; return every golden id gone from it (held
    before, not now), including those that left just now. ``records`` (golden_id,
    source_id): the target's records now — a golden id whose stored ``holder`` is one of
    them under another golden id moved, it did not leave. One transaction."""
    now = pd.Timestamp.now(tz="UTC").to_pydatetime()
    here = sorted({str(g) for g in present})
    holders = first_holders(records) if records is not None else None
    mine = target_presence.c.target == target
    with engine.begin() as conn:
        seen = _frame(conn, ["golden_id", "gone_at", "holder"], mine)
        # a golden id merged into another did not leave: its members moved to the survivor,
        # which has its own row. Its row goes (no pending delete, no "gone from target")
        # (only the ids not held now are looked up: a few, not every merge ever made)
        absent = seen["golden_id"][~seen["golden_id"].isin(here)].tolist()
        merged: list[str] = []
        for part in chunks(absent):
            merged += conn.execute(
                sa.select(golden_ids.c.golden_id).where(
                    golden_ids.c.merged_into.isnot(None),
                    golden_ids.c.golden_id.in_(part),
                )
            ).scalars()
        if records is not None and absent:
            # its record now held under another golden id: moved, not deleted
            still = set(records["source_id"].astype(str))
            gone_ids = seen["golden_id"].isin(absent) & seen["holder"].isin(still)
            merged += seen.loc[gone_ids, "golden_id"].tolist()
        moved = seen["golden_id"][seen["golden_id"].isin(merged)]
        delete_in(conn, target_presence, "golden_id", moved.tolist(), mine)
        seen = seen[~seen["golden_id"].isin(moved)]
        known = set(seen["golden_id"])
        new = [g for g in here if g not in known]
        back = seen.loc[seen["gone_at"].notna() & seen["golden_id"].isin(here), "golden_id"]
        left = seen.loc[seen["gone_at"].isna() & ~seen["golden_id"].isin(here), "golden_id"]
        for part in chunks(new):
            conn.execute(
                target_presence.insert(),
                [
                    {
                        "target": target,
                        "golden_id": g,
                        "first_seen_at": now,
                        "last_seen_at": now,
                        "holder": None if holders is None else holders.get(g),
                    }
                    for g in part
                ],
            )
        if holders is not None:  # a held golden id whose first record changed
            was = seen.set_index("golden_id")["holder"]
            now_held = holders.reindex(was.index)
            stale = was.index[now_held.notna().to_numpy() & (was != now_held).to_numpy()]
            if len(stale):
                conn.execute(
                    target_presence.update()
                    .where(
                        target_presence.c.target == sa.bindparam("t"),
                        target_presence.c.golden_id == sa.bindparam("g"),
                    )
                    .values(holder=sa.bindparam("h")),
                    [{"t": target, "g": g, "h": holders[g]} for g in stale],
                )
        conn.execute(  # one more run that finds them gone
            target_presence.update()
            .where(mine, target_presence.c.gone_at.isnot(None))
            .values(gone_runs=sa.func.coalesce(target_presence.c.gone_runs, 0) + 1)
        )
        for ids, values in (
            (list(left), {"gone_at": now, "gone_runs": 1}),
            (list(back), {"gone_at": None, "gone_runs": None, "last_seen_at": now}),
        ):
            for part in chunks(ids):
                conn.execute(
                    target_presence.update()
                    .where(mine, target_presence.c.golden_id.in_(part))
                    .values(**values)
                )
        conn.execute(
            target_presence.update()
            .where(mine, target_presence.c.gone_at.is_(None))
            .values(last_seen_at=now)
        )
        gone = conn.execute(
            sa.select(target_presence.c.golden_id).where(
                mine, target_presence.c.gone_at.isnot(None)
            )
        ).scalars()
        return {str(g) for g in gone}


def holders_of(engine: Engine, target: str, golden_ids: Iterable[str]) -> pd.Series:
    """golden_id -> the record ``target`` last held of it (``holder``), for ``golden_ids``."""
    ids = sorted({str(g) for g in golden_ids})
    parts = []
    with engine.connect() as conn:
        for part in chunks(ids):
            parts.append(
                _frame(
                    conn,
                    ["golden_id", "holder"],
                    target_presence.c.target == target,
                    target_presence.c.golden_id.in_(part),
                )
            )
    rows = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["golden_id", "holder"])
    )
    rows = rows[rows["holder"].notna()]
    return pd.Series(
        rows["holder"].astype(str).to_numpy(), index=rows["golden_id"].astype(str).to_numpy()
    )


def gone_runs(engine: Engine, target: str) -> pd.Series:
    """golden_id -> how many runs found it gone from ``target`` (only those gone)."""
    stmt = sa.select(target_presence.c.golden_id, target_presence.c.gone_runs).where(
        target_presence.c.target == target, target_presence.c.gone_at.isnot(None)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).fetchall()
    return pd.Series(
        [int(r.gone_runs or 1) for r in rows], index=[str(r.golden_id) for r in rows], dtype="int64"
    )


# a child row's holder: the golden id it inherited its pending delete from
INHERITED = "split:"


def _utc(value: object) -> pd.Timestamp:
    """A stored time as naive UTC (SQLite gives naive UTC, PostgreSQL the session's zone)."""
    at = pd.Timestamp(value)
    return at.tz_convert("UTC").tz_localize(None) if at.tzinfo is not None else at


def inherit_gone(engine: Engine, target: str, held: Iterable[str]) -> list[str]:
    """Golden ids split off a golden id gone from ``target`` (the source of truth) in the
    run that found it gone — between the time it was last seen there and then — and
    holding no record of it now (``held``: the golden ids that do) take its place: the
    same ``gone_at`` and ``gone_runs``. The person's other records, which parted when the
    source's record that held them together was deleted, are deleted with the rest past
    the grace period, and created nowhere while pending. A split made later (a steward's
    cannot-link in the grace period) inherits nothing; a parent that comes back (or is
    no longer gone) takes its children back with it. Transitive. Returns the golden ids
    that inherited this run."""
    held_now = {str(g) for g in held}
    mine = target_presence.c.target == target
    added: list[str] = []
    with engine.begin() as conn:
        rows = _frame(conn, ["golden_id", "last_seen_at", "gone_at", "gone_runs", "holder"], mine)
        if rows.empty:
            return added
        gone = rows[rows["gone_at"].notna()].set_index("golden_id")
        # children whose parent is no longer gone (back, or its row went): not gone either
        # (nor theirs: to a fixed point)
        heirs = rows[rows["holder"].astype("string").str.startswith(INHERITED).fillna(False)]
        parent = heirs["holder"].str.slice(len(INHERITED))
        orphans: list[str] = []
        while True:
            lost = heirs.loc[
                ~parent.isin(gone.index).to_numpy() & ~heirs["golden_id"].isin(orphans),
                "golden_id",
            ].tolist()
            if not lost:
                break
            orphans += lost
            gone = gone.drop(index=[g for g in lost if g in gone.index])
        if orphans:
            delete_in(conn, target_presence, "golden_id", orphans, mine)
        tracked = set(rows["golden_id"]) - set(orphans)
        frontier = list(gone.index)
        while frontier:
            found = []
            for part in chunks(frontier):
                found += conn.execute(
                    sa.select(
                        golden_ids.c.golden_id, golden_ids.c.split_from, golden_ids.c.split_at
                    ).where(
                        golden_ids.c.split_from.in_(part),
                        golden_ids.c.merged_into.is_(None),
                    )
                ).fetchall()
            new = []
            for child, parent_id, split_at in found:
                at = gone.loc[parent_id]
                slack = pd.Timedelta(seconds=1)
                if (
                    child in tracked
                    or child in held_now
                    or split_at is None
                    or not (
                        _utc(at["last_seen_at"]) - slack
                        <= _utc(split_at)
                        <= _utc(at["gone_at"]) + slack
                    )
                ):
                    continue  # its own history there, or parted before or after the record went
                gone.loc[child] = at
                tracked.add(child)
                new.append(child)
                conn.execute(
                    target_presence.insert(),
                    [
                        {
                            "target": target,
                            "golden_id": child,
                            "first_seen_at": pd.Timestamp(at["last_seen_at"]).to_pydatetime(),
                            "last_seen_at": pd.Timestamp(at["last_seen_at"]).to_pydatetime(),
                            "gone_at": pd.Timestamp(at["gone_at"]).to_pydatetime(),
                            "gone_runs": int(at["gone_runs"] or 1),
                            "holder": INHERITED + str(parent_id),
                        }
                    ],
                )
            added += new
            frontier = new
    return added
