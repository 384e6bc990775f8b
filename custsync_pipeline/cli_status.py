"""``custsync status <golden id>``: where a golden record stands in every target.

Per target: the member custsync writes (its id masked), the last operation queued or sent
for the golden record (``upsert``, ``delete``, an archive), when, and its result
(``acked``, ``pending``, ``sending`` — on its way when a run died —, ``failed`` with the
attempts so far, ``dead``, ``superseded``),
the golden version it came from and the last error (e-mail addresses and phone numbers
masked). Also whether the source of truth still holds it (a pending delete and its grace
run count) and whether a target deleted it (never re-created there). A merged-away golden
id resolves to its survivor.
"""

from __future__ import annotations

import argparse

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from custsync_pipeline.cli_identity import _common, _engine, _fmt_ts, masked_ids
from custsync_pipeline.connectors.http import mask_personal


def _survivor(engine: Engine, golden_id: str) -> tuple[str, list[str]]:
    """The live golden id ``golden_id`` resolves to (following merges), and the chain."""
    from custsync_pipeline.store.identity import create_identity_tables, golden_ids

    create_identity_tables(engine)
    chain = [golden_id]
    with engine.connect() as conn:
        for _ in range(20):  # merges chain at most a few times; stop on a loop
            nxt = conn.execute(
                sa.select(golden_ids.c.merged_into).where(golden_ids.c.golden_id == chain[-1])
            ).scalar()
            if not nxt or nxt in chain:
                break
            chain.append(str(nxt))
    return chain[-1], chain


def golden_status(engine: Engine, golden_id: str) -> dict[str, object]:
    """Everything ``custsync status`` shows, as data: ``golden`` (id, version or None),
    ``merged`` (the chain of ids), ``ops`` (one row per target: its last outbox row) and
    ``presence`` (target_presence rows, the source of truth's among them)."""
    from custsync_pipeline.store import core, presence

    core.metadata.create_all(engine, tables=[core.outbox, core.golden_records])
    presence.target_presence.create(engine, checkfirst=True)
    live, chain = _survivor(engine, golden_id)
    ob = core.outbox
    with engine.connect() as conn:
        version = conn.execute(
            sa.select(core.golden_records.c.version).where(core.golden_records.c.golden_id == live)
        ).scalar()
        rows = conn.execute(
            sa.select(
                ob.c.target,
                ob.c.entity_key,
                ob.c.target_id,
                ob.c.op,
                ob.c.payload_hash,
                ob.c.status,
                ob.c.attempts,
                ob.c.last_error,
                ob.c.updated_at,
                ob.c.golden_version,
            ).where(ob.c.golden_id.in_(chain))
        ).fetchall()
        tp = presence.target_presence
        pres = conn.execute(
            sa.select(tp.c.target, tp.c.first_seen_at, tp.c.gone_at, tp.c.gone_runs).where(
                tp.c.golden_id == live
            )
        ).fetchall()
    ops = pd.DataFrame(
        rows,
        columns=[
            "target",
            "entity_key",
            "target_id",
            "op",
            "payload_hash",
            "status",
            "attempts",
            "last_error",
            "updated_at",
            "golden_version",
        ],
    )
    if not ops.empty:
        ops["updated_at"] = pd.to_datetime(ops["updated_at"], utc=True)
        ops = ops.sort_values(["target", "updated_at"]).groupby("target", sort=True).tail(1)
        ops = ops.reset_index(drop=True)
    return {
        "golden_id": live,
        "version": None if version is None else int(version),
        "merged": chain,
        "ops": ops,
        "presence": pd.DataFrame(pres, columns=["target", "first_seen_at", "gone_at", "gone_runs"]),
    }


def _op_name(op: str, payload_hash: str) -> str:
    if op == "upsert" and str(payload_hash).startswith("archive:"):
        return "archive"
    return op


def format_status(status: dict[str, object], targets: list[str]) -> str:
    """The ``custsync status`` text: personal data masked."""
    ops: pd.DataFrame = status["ops"]  # type: ignore[assignment]
    pres: pd.DataFrame = status["presence"]  # type: ignore[assignment]
    gid = status["golden_id"]
    merged = status["merged"]
    head = f"golden id {gid}"
    if len(merged) > 1:  # type: ignore[arg-type]
        head = f"golden id {merged[0]} was merged into {gid}"  # type: ignore[index]
    head += (
        f": live, version {status['version']}"
        if status["version"] is not None
        else ": no live golden record (retired, deleted or unknown)"
    )
    lines = [head]
    source = pres[pres["target"].astype(str).str.startswith("source:")]
    for r in source.itertuples(index=False):
        name = str(r.target).split(":", 1)[1]
        if pd.isna(r.gone_at):
            lines.append(f"source of truth {name}: holds it")
        else:
            lines.append(
                f"source of truth {name}: gone since {_fmt_ts(r.gone_at)} "
                f"(found gone by {int(r.gone_runs or 1)} runs: pending delete, then deleted)"
            )
    names = list(dict.fromkeys([*targets, *ops["target"].tolist()]))
    table = []
    by_target = ops.set_index("target") if not ops.empty else ops
    gone = pres.set_index("target")
    for t in names:
        row = {"target": t}
        deleted_there = t in gone.index and pd.notna(gone.loc[t, "gone_at"])
        if t in getattr(by_target, "index", []):
            r = by_target.loc[t]
            member = r["target_id"] if pd.notna(r["target_id"]) else None
            row.update(
                member=str(masked_ids(pd.Series([member])).iloc[0]) if member else "(new)",
                last_op=_op_name(str(r["op"]), str(r["payload_hash"])),
                result=str(r["status"]),
                attempts=int(r["attempts"] or 0),
                at=_fmt_ts(r["updated_at"]),
                golden_version="-" if pd.isna(r["golden_version"]) else int(r["golden_version"]),
                error=mask_personal(str(r["last_error"]))[:120]
                if isinstance(r["last_error"], str) and r["last_error"]
                else "-",
            )
        else:
            row.update(
                member="-", last_op="none", result="-", attempts=0, at="-", golden_version="-"
            )
            row["error"] = "-"
        if deleted_there:
            row["result"] = f"{row['result']}; deleted there {_fmt_ts(gone.loc[t, 'gone_at'])}"
        table.append(row)
    lines.append("")
    lines.append(pd.DataFrame(table).to_string(index=False) if table else "no targets")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    from custsync_pipeline.config import load_sync_config

    # the targets come from the config: a config mistake is named (exit 2), never a
    # status table that silently leaves targets out
    targets = [p.connector for p in load_sync_config(args.config).publish]
    engine = _engine(args)
    try:
        status = golden_status(engine, args.golden_id)
    finally:
        engine.dispose()
    print(format_status(status, targets))
    known = status["version"] is not None or not status["ops"].empty  # type: ignore[union-attr]
    return 0 if known else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``status`` to the ``custsync`` CLI."""
    p = subparsers.add_parser(
        "status",
        help="per target: the last operation for a golden record, when, and its result",
    )
    p.add_argument("golden_id")
    _common(p)
    p.set_defaults(func=cmd_status)
