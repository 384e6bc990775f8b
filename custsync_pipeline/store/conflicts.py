"""The field-conflict review queue (``field_conflicts``): target-side changes to fields
whose ``publish[].conflicts`` policy is ``review`` (``domain.conflicts``).

One row per (target, member, field). Each deltas computation of a target replaces its
open rows with what it found: a conflict seen again keeps its ``first_seen_at``; one no
longer found (the target's value and the golden one agree again, whoever moved) becomes
``resolved``. Values are stored as the state DB stores every source record; the CLI
masks them.
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from custsync_pipeline.store.db import metadata

field_conflicts = sa.Table(
    "field_conflicts",
    metadata,
    sa.Column("target", sa.String(64), primary_key=True),
    sa.Column("source_id", sa.String(255), primary_key=True),
    sa.Column("field", sa.String(64), primary_key=True),
    sa.Column("golden_id", sa.String(32), nullable=False, index=True),
    sa.Column("target_value", sa.Text),
    sa.Column("golden_value", sa.Text),
    sa.Column("status", sa.String(16), nullable=False),  # open | resolved
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
)

COLUMNS = [
    "target",
    "source_id",
    "field",
    "golden_id",
    "target_value",
    "golden_value",
    "status",
    "first_seen_at",
    "last_seen_at",
]


def save_field_conflicts(engine: Engine, target: str, found: pd.DataFrame) -> dict[str, int]:
    """Replace ``target``'s open conflicts with ``found`` (``domain.conflicts`` rows) in one
    transaction; returns counts: ``open``, ``new``, ``resolved``."""
    field_conflicts.create(engine, checkfirst=True)
    now = pd.Timestamp.now(tz="UTC").to_pydatetime()
    mine = field_conflicts.c.target == target
    with engine.begin() as conn:
        old = pd.DataFrame(
            conn.execute(
                sa.select(
                    field_conflicts.c.source_id,
                    field_conflicts.c.field,
                    field_conflicts.c.status,
                    field_conflicts.c.first_seen_at,
                ).where(mine)
            ).fetchall(),
            columns=["source_id", "field", "status", "first_seen_at"],
        )
        key = ["source_id", "field"]
        rows = found.merge(old, on=key, how="left")
        was_open = old[old["status"] == "open"]
        still = was_open.merge(found[key], on=key, how="inner")
        resolved = len(was_open) - len(still)
        new = int((rows["status"] != "open").sum()) if len(rows) else 0
        first = rows["first_seen_at"].where(rows["status"] == "open")
        conn.execute(
            field_conflicts.update()
            .where(mine, field_conflicts.c.status == "open")
            .values(status="resolved", last_seen_at=now)
        )
        if len(rows):
            params = [
                {
                    "target": target,
                    "source_id": str(r.source_id),
                    "field": str(r.field),
                    "golden_id": str(r.golden_id),
                    "target_value": None if pd.isna(r.target_value) else str(r.target_value),
                    "golden_value": None if pd.isna(r.golden_value) else str(r.golden_value),
                    "status": "open",
                    "first_seen_at": now if pd.isna(f) else pd.Timestamp(f).to_pydatetime(),
                    "last_seen_at": now,
                }
                for r, f in zip(rows.itertuples(index=False), first, strict=True)
            ]
            for start in range(0, len(params), 5000):
                chunk = params[start : start + 5000]
                for_key = [(p["source_id"], p["field"]) for p in chunk]
                conn.execute(
                    field_conflicts.delete().where(
                        mine,
                        sa.tuple_(field_conflicts.c.source_id, field_conflicts.c.field).in_(
                            for_key
                        ),
                    )
                )
                conn.execute(field_conflicts.insert(), chunk)
    return {"open": len(found), "new": new, "resolved": resolved}


def load_field_conflicts(
    engine: Engine, target: str | None = None, status: str | None = "open"
) -> pd.DataFrame:
    field_conflicts.create(engine, checkfirst=True)
    stmt = sa.select(*(field_conflicts.c[c] for c in COLUMNS))
    if target is not None:
        stmt = stmt.where(field_conflicts.c.target == target)
    if status is not None:
        stmt = stmt.where(field_conflicts.c.status == status)
    stmt = stmt.order_by(field_conflicts.c.first_seen_at.desc(), field_conflicts.c.source_id)
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(stmt).fetchall(), columns=COLUMNS)
