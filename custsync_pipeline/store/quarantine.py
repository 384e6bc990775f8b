"""The quarantine: rejected rows that survive runs, and the last payload shape per connector.

``quarantine`` holds one row per validation failure (connector, source id,
field, check, severity, reason, raw payload) with ``first_seen_at`` /
``last_seen_at`` and a ``status``: ``open`` while the failure is still seen,
``resolved`` once a run no longer sees it (the row was fixed at the source, or
is gone). Resolved rows are kept as history.

``payload_columns`` remembers the column set of each connector's last payload,
for the schema-drift check.

SQLAlchemy Core only, one code path for SQLite and PostgreSQL; every writer is
one short transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from custsync_pipeline.store.db import metadata

OPEN = "open"
RESOLVED = "resolved"

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("connector", sa.Text, nullable=False),
    sa.Column("source_id", sa.Text),  # NULL when the missing id is the failure
    sa.Column("field", sa.Text, nullable=False),
    sa.Column("check_name", sa.Text, nullable=False),
    sa.Column("severity", sa.Text, nullable=False),  # "row" | "field"
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("raw_payload", sa.Text),
    # identity of a failure across runs: (source id, field, check), or the payload when there is no id
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, default=OPEN),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    sa.Index("ix_quarantine_connector_status", "connector", "status"),
    sa.Index("ix_quarantine_fingerprint", "connector", "fingerprint"),
    comment="validation failures per connector; open until a run no longer sees them",
)

payload_columns = sa.Table(
    "payload_columns",
    metadata,
    sa.Column("connector", sa.Text, primary_key=True),
    sa.Column("columns", sa.Text, nullable=False),  # JSON list, sorted
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    comment="column set of each connector's last raw payload (schema drift)",
)

READ_COLUMNS: tuple[str, ...] = (
    "id",
    "connector",
    "source_id",
    "field",
    "check",
    "severity",
    "reason",
    "raw_payload",
    "status",
    "first_seen_at",
    "last_seen_at",
    "resolved_at",
)


def _now() -> datetime:
    return datetime.now(UTC)


def _fingerprint(frame: pd.DataFrame) -> pd.Series:
    """Stable id of a failure: source id + field + check (the payload stands in for a missing id)."""
    sid = frame["source_id"].astype("string")
    key = (
        sid.fillna("\x00" + frame["raw_payload"].astype("string").fillna(""))
        + "\x1f"
        + frame["field"].astype("string")
        + "\x1f"
        + frame["check"].astype("string")
    )
    return key.map(lambda k: hashlib.sha1(str(k).encode("utf-8")).hexdigest())


def _ensure(engine: Engine) -> None:
    metadata.create_all(engine, tables=[quarantine, payload_columns])


def _none_if_na(value: object) -> object:
    return (
        None
        if value is None or value is pd.NA or (isinstance(value, float) and value != value)
        else value
    )


def record_quarantine(
    engine: Engine,
    connector: str,
    rejected: pd.DataFrame,
    valid_keys: pd.DataFrame | pd.Series | Iterable[str] | None = None,
    *,
    partial: bool = False,
    now: datetime | None = None,
) -> dict[str, int]:
    """Make the connector's open quarantine rows equal ``rejected``.

    A failure seen again keeps its ``first_seen_at`` and gets the new reason and
    payload; a new one is inserted; an open one not seen any more is resolved.
    With ``partial=True`` (an incremental pull) only failures of records in this
    batch — ``valid_keys`` (source ids, or a frame with ``source_id``) plus the
    rejected ones — can be resolved; others stay open. Returns counts
    ``{"inserted", "updated", "resolved", "open"}``.
    """
    _ensure(engine)
    now = now or _now()
    new = rejected.copy()
    if len(new):
        new["fingerprint"] = _fingerprint(new).to_numpy()
        new = new.drop_duplicates("fingerprint", keep="last")
    else:
        new = pd.DataFrame(columns=[*rejected.columns, "fingerprint"])

    with engine.begin() as conn:
        open_rows = pd.DataFrame(
            conn.execute(
                sa.select(quarantine.c.id, quarantine.c.fingerprint, quarantine.c.source_id).where(
                    quarantine.c.connector == connector, quarantine.c.status == OPEN
                )
            ).all(),
            columns=["id", "fingerprint", "source_id"],
        )
        seen = set(new["fingerprint"])
        known = dict(zip(open_rows["fingerprint"], open_rows["id"], strict=True))

        again = new[new["fingerprint"].isin(known.keys())]
        fresh = new[~new["fingerprint"].isin(known.keys())]
        gone = open_rows[~open_rows["fingerprint"].isin(seen)]
        if partial:
            batch = _key_set(valid_keys) | set(new["source_id"].dropna().astype(str))
            gone = gone[gone["source_id"].isin(batch)]

        if len(again):
            conn.execute(
                quarantine.update()
                .where(quarantine.c.id == sa.bindparam("_id"))
                .values(
                    reason=sa.bindparam("_reason"),
                    raw_payload=sa.bindparam("_raw"),
                    severity=sa.bindparam("_severity"),
                    last_seen_at=now,
                ),
                [
                    {
                        "_id": int(known[fp]),
                        "_reason": str(reason),
                        "_raw": _none_if_na(raw),
                        "_severity": str(sev),
                    }
                    for fp, reason, raw, sev in zip(
                        again["fingerprint"],
                        again["reason"],
                        again["raw_payload"],
                        again["severity"],
                        strict=True,
                    )
                ],
            )
        if len(fresh):
            conn.execute(
                quarantine.insert(),
                [
                    {
                        "connector": connector,
                        "source_id": _none_if_na(r["source_id"]),
                        "field": str(r["field"]),
                        "check_name": str(r["check"]),
                        "severity": str(r["severity"]),
                        "reason": str(r["reason"]),
                        "raw_payload": _none_if_na(r["raw_payload"]),
                        "fingerprint": r["fingerprint"],
                        "status": OPEN,
                        "first_seen_at": now,
                        "last_seen_at": now,
                    }
                    for r in fresh.to_dict("records")
                ],
            )
        if len(gone):
            ids = [int(i) for i in gone["id"]]
            for start in range(0, len(ids), 1000):  # stay under bind-parameter limits
                conn.execute(
                    quarantine.update()
                    .where(quarantine.c.id.in_(ids[start : start + 1000]))
                    .values(status=RESOLVED, resolved_at=now)
                )
    return {
        "inserted": len(fresh),
        "updated": len(again),
        "resolved": len(gone),
        "open": len(open_rows) - len(gone) + len(fresh),
    }


def _key_set(valid_keys: pd.DataFrame | pd.Series | Iterable[str] | None) -> set[str]:
    if valid_keys is None:
        return set()
    if isinstance(valid_keys, pd.DataFrame):
        valid_keys = valid_keys["source_id"] if "source_id" in valid_keys.columns else []
    if isinstance(valid_keys, pd.Series):
        return set(valid_keys.dropna().astype(str))
    return {str(k) for k in valid_keys}


# --------------------------------------------------------------------------- readers


def load_quarantine(
    engine: Engine,
    connector: str | None = None,
    *,
    status: str | None = OPEN,
    source_id: str | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Quarantine rows (open by default; ``status=None`` for all), newest first."""
    _ensure(engine)
    q = quarantine.c
    stmt = sa.select(
        q.id,
        q.connector,
        q.source_id,
        q.field,
        q.check_name.label("check"),
        q.severity,
        q.reason,
        q.raw_payload,
        q.status,
        q.first_seen_at,
        q.last_seen_at,
        q.resolved_at,
    ).order_by(q.last_seen_at.desc(), q.id)
    if connector is not None:
        stmt = stmt.where(q.connector == connector)
    if status is not None:
        stmt = stmt.where(q.status == status)
    if source_id is not None:
        stmt = stmt.where(q.source_id == source_id)
    if limit is not None:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    frame = pd.DataFrame(rows, columns=list(READ_COLUMNS))
    for col in ("first_seen_at", "last_seen_at", "resolved_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def quarantine_summary(engine: Engine, connector: str | None = None) -> pd.DataFrame:
    """Open failures counted by connector, severity, field and check (for the UI and CLI)."""
    _ensure(engine)
    q = quarantine.c
    stmt = (
        sa.select(
            q.connector,
            q.severity,
            q.field,
            q.check_name.label("check"),
            sa.func.count().label("rows"),
            sa.func.count(sa.distinct(q.source_id)).label("records"),
        )
        .where(q.status == OPEN)
        .group_by(q.connector, q.severity, q.field, q.check_name)
        .order_by(q.connector, sa.func.count().desc())
    )
    if connector is not None:
        stmt = stmt.where(q.connector == connector)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return pd.DataFrame(
        rows, columns=["connector", "severity", "field", "check", "rows", "records"]
    )


def open_counts(engine: Engine) -> dict[str, int]:
    """Open quarantine rows per connector."""
    summary = quarantine_summary(engine)
    return {str(k): int(v) for k, v in summary.groupby("connector")["rows"].sum().items()}


# --------------------------------------------------------------------------- payload shape


def load_payload_columns(engine: Engine, connector: str) -> list[str] | None:
    """The column set of the connector's last recorded payload, or None before the first run."""
    _ensure(engine)
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(payload_columns.c.columns).where(payload_columns.c.connector == connector)
        ).scalar_one_or_none()
    return None if value is None else list(json.loads(value))


def save_payload_columns(
    engine: Engine, connector: str, columns: Iterable[str], now: datetime | None = None
) -> None:
    """Remember the connector's payload column set (replaces the previous one)."""
    _ensure(engine)
    value = json.dumps(sorted({str(c) for c in columns}))
    with engine.begin() as conn:
        conn.execute(payload_columns.delete().where(payload_columns.c.connector == connector))
        conn.execute(
            payload_columns.insert().values(
                connector=connector, columns=value, updated_at=now or _now()
            )
        )
