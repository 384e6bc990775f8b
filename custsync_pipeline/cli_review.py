"""Review commands of the ``custsync`` CLI: what is waiting for a person to look at.

- ``custsync quarantine [--connector C] [--all] [--rows N]``: open quarantine rows
  counted by connector, field and check, then the newest rows with their reasons;
  ``--source-id`` shows one record's failures. Raw payloads are never printed (they
  hold personal data): they stay in the state DB's ``quarantine`` table.
- ``custsync conflicts [--kind K] [--rows N]``: the identity review queue (links the
  rules refused or doubted), counted by kind, then the newest with both sides and
  the evidence; keys are masked, and so are e-mail addresses in source ids. Settle one with
  ``custsync steward must-link|cannot-link --conflict ID`` (the row's ``id``: a hash, no
  personal data) or by naming both records in full.
"""

from __future__ import annotations

import argparse

import pandas as pd
import sqlalchemy as sa

from custsync_pipeline.cli_identity import _common, _engine, masked_ids
from custsync_pipeline.domain.identity import CONFLICT_COLUMNS


def _print_table(frame: pd.DataFrame) -> None:
    if frame.empty:
        print("  (none)")
        return
    print(frame.to_string(index=False, max_colwidth=90))


def quarantine_cmd(args: argparse.Namespace) -> int:
    from custsync_pipeline.store.quarantine import load_quarantine, quarantine_summary

    engine = _engine(args)
    status = None if args.all else "open"
    if args.source_id is None:
        print("open quarantine rows by connector, field and check:")
        _print_table(quarantine_summary(engine, args.connector))
        print()
    rows = load_quarantine(
        engine, args.connector, status=status, source_id=args.source_id, limit=args.rows
    )
    print(f"{'all' if args.all else 'open'} rows (newest first, at most {args.rows}):")
    shown = rows[
        ["connector", "source_id", "field", "check", "severity", "status", "reason"]
    ].copy()
    shown["source_id"] = masked_ids(shown["source_id"])
    _print_table(shown)
    engine.dispose()
    return 0


def conflicts_cmd(args: argparse.Namespace) -> int:
    from custsync_pipeline.store.identity import create_identity_tables, identity_conflicts

    engine = _engine(args)
    create_identity_tables(engine)  # a fresh state DB has an empty queue, not an error
    table = identity_conflicts
    counts = sa.select(table.c.kind, sa.func.count().label("conflicts")).group_by(table.c.kind)
    columns = list(CONFLICT_COLUMNS)
    newest = sa.select(*(table.c[c] for c in columns)).order_by(
        table.c.first_seen_at.desc(), table.c.conflict_id
    )
    if args.kind:
        counts = counts.where(table.c.kind == args.kind)
        newest = newest.where(table.c.kind == args.kind)
    with engine.connect() as conn:
        by_kind = pd.DataFrame(conn.execute(counts).all(), columns=["kind", "conflicts"])
        rows = pd.DataFrame(conn.execute(newest.limit(args.rows)).all(), columns=columns)
    for side in ("a", "b"):  # an Icomm source id may be an e-mail address
        rows[side] = rows[f"connector_{side}"] + ":" + masked_ids(rows[f"source_id_{side}"])
    rows["id"] = rows["conflict_id"]  # a hash of the pair: names a masked record, shows none
    rows = rows[
        ["id", "kind", "rule", "key_masked", "a", "golden_id_a", "b", "golden_id_b", "evidence"]
    ]
    print("identity conflicts by kind:")
    _print_table(by_kind)
    print(
        f"\nnewest (at most {args.rows}); settle one with "
        "`custsync steward must-link|cannot-link --conflict ID` (ID from the id column), "
        "or name both records in full: `custsync steward must-link|cannot-link A B`:"
    )
    _print_table(rows)
    print_field_conflicts(engine, args.rows)
    return 0


def print_field_conflicts(engine, limit: int) -> None:  # noqa: ANN001 - an Engine
    """The open field conflicts (``publish[].conflicts`` review): target, member, field and
    both values, masked; the target's value stays until the two agree again."""
    from custsync_pipeline.domain.validate import mask_value
    from custsync_pipeline.store.conflicts import load_field_conflicts

    found = load_field_conflicts(engine)
    engine.dispose()
    print(f"\nfield conflicts (target-side changes under review): {len(found)} open")
    if found.empty:
        _print_table(found)
        return
    print(
        found.groupby(["target", "field"])
        .size()
        .rename("open")
        .reset_index()
        .to_string(index=False)
    )
    rows = found.head(limit).copy()
    rows["member"] = rows["target"] + ":" + masked_ids(rows["source_id"])
    for side in ("target_value", "golden_value"):
        rows[side] = [mask_value(f, v) for f, v in zip(rows["field"], rows[side], strict=True)]
    rows["since"] = pd.to_datetime(rows["first_seen_at"], utc=True).dt.strftime("%Y-%m-%d %H:%M")
    print(f"newest (at most {limit}); the target keeps its value until a person settles it:")
    _print_table(rows[["member", "golden_id", "field", "target_value", "golden_value", "since"]])


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser(
        "quarantine", help="rejected rows and fields waiting for a fix at the source"
    )
    _common(q)
    q.add_argument("--connector", help="only this connector")
    q.add_argument("--source-id", help="only this record's failures")
    q.add_argument("--all", action="store_true", help="resolved rows too (default: open only)")
    q.add_argument("--rows", type=int, default=30, help="rows to list (default 30)")
    q.set_defaults(func=quarantine_cmd)

    c = sub.add_parser("conflicts", help="the identity review queue: links refused or in doubt")
    _common(c)
    c.add_argument("--kind", help="only this kind (e.g. shared_value, blocked_value)")
    c.add_argument("--rows", type=int, default=30, help="rows to list (default 30)")
    c.set_defaults(func=conflicts_cmd)
