"""Identity commands of the ``custsync`` CLI: explain, identity-map export, steward decisions.

- ``custsync explain <golden_id>``: the member records of a golden id (also a
  merged-away one: it resolves to the survivor) and, for each link, the rule
  and the masked key that made it;
- ``custsync identity-map export --out map.csv``: the identity map as CSV;
- ``custsync steward must-link|cannot-link A B`` (or ``--conflict ID``: both records of
  a ``custsync conflicts`` row, whose ids may be masked), ``steward list``,
  ``steward remove A B`` (or ``--id N``, the number ``steward list`` prints beside the
  masked ids): decisions that always win over the rules; a record is written
  ``connector:source_id`` and must be a stored source record.

The state DB is ``--db URL``, else ``$CUSTSYNC_STATE_DB_URL``, else the sync
config's ``state_db_url``. These commands (and ``quarantine``, ``conflicts``, ``history``,
``status``, ``forget``) only read or review state: a state DB that does not exist or holds no
custsync state is refused (``store.db.StateDBError``, exit 2), never created.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys

import pandas as pd
from sqlalchemy.engine import Engine

from custsync_pipeline.store.db import existing_engine


def _engine(args: argparse.Namespace):
    """The state DB a ``custsync run`` made; ``StateDBError`` when there is none there."""
    if args.db:
        url, origin = args.db, " (from --db)"
    elif os.environ.get("CUSTSYNC_STATE_DB_URL"):
        url, origin = os.environ["CUSTSYNC_STATE_DB_URL"], " (from $CUSTSYNC_STATE_DB_URL)"
    else:
        from custsync_pipeline.config import load_sync_config

        url, origin = load_sync_config(args.config).state_db_url, " (the config's state_db_url)"
    return existing_engine(url, origin)


def _record_ref(text: str) -> tuple[str, str]:
    connector, sep, source_id = text.partition(":")
    if not sep or not connector or not source_id:
        raise argparse.ArgumentTypeError(f"expected connector:source_id, got {text!r}")
    return connector, source_id


def _whoami() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="state DB URL (default: $CUSTSYNC_STATE_DB_URL or the sync config)")
    p.add_argument(
        "--config", help="sync config file (default: $CUSTSYNC_CONFIG or the packaged one)"
    )


def _fmt_ts(value: object) -> str:
    if value is None or pd.isna(value):
        return "-"
    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%SZ")


def masked_ids(source_ids: pd.Series) -> pd.Series:
    """Source ids for display: e-mail addresses inside them masked (an Icomm source id is
    ``UserId|StoreCode`` and a guest's UserId is their email); other ids stay readable."""
    from custsync_pipeline.domain.identity_keys import mask_keys

    values = source_ids.astype(str).to_numpy(dtype=object)
    return pd.Series(mask_keys(values, contact=False), index=source_ids.index, dtype=object)


def _masked_id(source_id: object) -> str:
    return str(masked_ids(pd.Series([source_id])).iloc[0])


def _ref(connector: object, source_id: object) -> str:
    return f"{connector}:{_masked_id(source_id)}"


def format_explanation(ex) -> str:  # ex: store.identity.Explanation
    """Human-readable text of an ``Explanation`` (keys masked)."""
    if ex.golden_id is None:
        return f"golden id {ex.asked} is unknown"
    lines = []
    if ex.asked != ex.golden_id:
        lines.append(f"{ex.asked} was merged into {ex.golden_id}; showing {ex.golden_id}")
    lines.append(f"golden id {ex.golden_id} (created {_fmt_ts(ex.created_at)})")
    if ex.split_from:
        lines.append(f"  split off {ex.split_from} at {_fmt_ts(ex.split_at)}")
    if ex.split_off is not None:
        for r in ex.split_off.itertuples(index=False):
            lines.append(f"  {r.golden_id} split off this id at {_fmt_ts(r.split_at)}")
    if len(ex.absorbed):
        for r in ex.absorbed.itertuples(index=False):
            lines.append(
                f"  absorbed {r.golden_id} (merged into {r.merged_into} at {_fmt_ts(r.merged_at)})"
            )
    lines.append("")
    lines.append(f"members ({len(ex.members)}):")
    if ex.members.empty:
        lines.append("  (none: every record of this golden id is gone from the sources)")
    for r in ex.members.itertuples(index=False):
        name = r.name if isinstance(r.name, str) and r.name else "-"
        contact = ", ".join(v for v in (r.email, r.phone) if isinstance(v, str) and v) or "-"
        lines.append(
            f"  {_ref(r.connector, r.source_id)}  via {r.rule}  name {name}  contact {contact}"
        )
    lines.append("")
    lines.append(f"links ({len(ex.links)}):")
    if ex.links.empty:
        lines.append("  (none: a single record)")
    for r in ex.links.itertuples(index=False):
        key = f" key {r.key}" if r.key else ""
        lines.append(
            f"  {_ref(r.connector_a, r.source_id_a)} <-> {_ref(r.connector_b, r.source_id_b)}"
            f"  rule {r.rule}{key}"
        )
    if len(ex.conflicts):
        lines.append("")
        lines.append(f"refused or doubtful links ({len(ex.conflicts)}):")
        for r in ex.conflicts.itertuples(index=False):
            lines.append(
                f"  [{r.kind}] {_ref(r.connector_a, r.source_id_a)} x "
                f"{_ref(r.connector_b, r.source_id_b)}  "
                f"rule {r.rule} key {r.key_masked}: {r.evidence}"
            )
    return "\n".join(lines)


def cmd_explain(args: argparse.Namespace) -> int:
    from custsync_pipeline.cli_golden import format_golden_sources
    from custsync_pipeline.store.identity import explain_golden_id

    engine = _engine(args)
    ex = explain_golden_id(engine, args.golden_id)
    print(format_explanation(ex))
    if ex.golden_id is not None:
        print(format_golden_sources(engine, ex.golden_id))
        from custsync_pipeline.cli_golden import format_order_history

        print(format_order_history(engine, ex.golden_id))
    return 0 if ex.golden_id is not None else 1


def cmd_export(args: argparse.Namespace) -> int:
    from custsync_pipeline.store.identity import export_identity_map

    n = export_identity_map(_engine(args), args.out)
    print(f"wrote {n} identity map rows to {args.out}")
    return 0


MASK = "***"  # what ``masked_ids`` puts in place of an e-mail address's local part
BY_CONFLICT = (
    "name the record by its full source id, or settle the conflict row with "
    "`custsync steward must-link|cannot-link --conflict ID` (ID: the id column of "
    "`custsync conflicts`)"
)


def _conflict_pair(engine: Engine, conflict: str) -> tuple[tuple[str, str], tuple[str, str]] | str:
    """Both records of the review-queue row ``conflict`` (its id, or a unique start of it
    of 6 or more characters), or why there is none."""
    import sqlalchemy as sa

    from custsync_pipeline.store.identity import create_identity_tables, identity_conflicts

    create_identity_tables(engine)  # a state DB older than the queue: no conflicts, no error
    wanted = conflict.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{6,32}", wanted):
        return f"{conflict!r} is not a conflict id (hex, as the id column of `custsync conflicts`)"
    t = identity_conflicts.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.conflict_id, t.connector_a, t.source_id_a, t.connector_b, t.source_id_b)
            .where(t.conflict_id.startswith(wanted))
            .order_by(t.conflict_id)
            .limit(2)
        ).all()
    exact = [r for r in rows if r.conflict_id == wanted]
    if exact or len(rows) == 1:
        r = (exact or rows)[0]
        return (str(r.connector_a), str(r.source_id_a)), (str(r.connector_b), str(r.source_id_b))
    if rows:
        return f"conflict id {conflict!r} is ambiguous: give more of it"
    return (
        f"no conflict {conflict!r} in the review queue (the id column of `custsync conflicts`; "
        "a conflict leaves the queue when a resolution run no longer finds it)"
    )


def _unknown_records(engine: Engine, named: dict[str, tuple[str, str]]) -> list[str]:
    """Why each of ``named`` (side -> record) is not a stored source record; [] when all are."""
    import sqlalchemy as sa

    from custsync_pipeline.store.core import source_records

    t = source_records.c
    problems = []
    with engine.connect() as conn:
        for side, (connector, source_id) in named.items():
            found = conn.execute(
                sa.select(sa.literal(1)).where(t.connector == connector, t.source_id == source_id)
            ).first()
            if found is not None:
                continue
            why = f"{side} {_ref(connector, source_id)} is not a stored source record"
            if MASK in source_id:
                why += ": it looks masked, as `custsync conflicts` and `explain` print ids; "
                why += BY_CONFLICT
            elif (
                conn.execute(sa.select(sa.literal(1)).where(t.connector == connector)).first()
                is None
            ):
                held = conn.execute(sa.select(t.connector).distinct().order_by(t.connector))
                names = ", ".join(str(c) for c in held.scalars()) or "none yet"
                why += f": no record of connector {connector!r} is stored (connectors: {names})"
            problems.append(why)
    return problems


def cmd_decide(args: argparse.Namespace) -> int:
    from custsync_pipeline.store.identity import set_decision

    if args.conflict is not None and (args.a is not None or args.b is not None):
        args.parser.error("give either two records A B or --conflict ID, not both")
    if args.conflict is None and (args.a is None or args.b is None):
        args.parser.error("name two records (A B: connector:source_id) or --conflict ID")
    decision = args.steward_command.replace("-", "_")
    by = args.by or _whoami()
    where = f"custsync steward {args.steward_command}"
    engine = _engine(args)
    try:
        if args.conflict is not None:
            pair = _conflict_pair(engine, args.conflict)
            if isinstance(pair, str):
                print(f"{where}: {pair}; nothing recorded", file=sys.stderr)
                return 1
            a, b = pair
        else:
            a, b = args.a, args.b
        if a == b:
            print(f"{where}: A and B are the same record; nothing recorded", file=sys.stderr)
            return 1
        unknown = _unknown_records(engine, {"A": a, "B": b})
        for why in unknown:
            print(f"{where}: {why}", file=sys.stderr)
        if unknown:
            print(f"{where}: nothing recorded", file=sys.stderr)
            return 1
        set_decision(engine, decision, a, b, note=args.note, decided_by=by)
    finally:
        engine.dispose()
    print(
        f"{decision} recorded for {_ref(*a)} and {_ref(*b)}; "
        "it applies from the next identity resolution run"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from custsync_pipeline.store.identity import list_decisions

    d = list_decisions(_engine(args))
    if d.empty:
        print("no steward decisions")
        return 0
    for r in d.itertuples(index=False):
        note = f"  note: {r.note}" if isinstance(r.note, str) and r.note else ""
        by = f" by {r.decided_by}" if isinstance(r.decided_by, str) and r.decided_by else ""
        # ids as `explain` prints them (an e-mail in one masked); the decision's number
        # is what `steward remove --id` takes
        print(
            f"#{r.decision_id:<5} {r.decision:<12} {_ref(r.connector_a, r.source_id_a)}  "
            f"{_ref(r.connector_b, r.source_id_b)}  {_fmt_ts(r.decided_at)}{by}{note}"
        )
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from custsync_pipeline.store.identity import remove_decision, remove_decision_id

    if (args.id is None) == (args.a is None or args.b is None) or (
        args.id is not None and (args.a is not None or args.b is not None)
    ):
        args.parser.error("name two records (A B: connector:source_id) or --id N, not both")
    if args.id is not None:
        if not remove_decision_id(_engine(args), args.id):
            print(f"no decision #{args.id} (`custsync steward list` numbers them)", file=sys.stderr)
            return 1
    elif not remove_decision(_engine(args), args.a, args.b):
        masked = any(MASK in source_id for _, source_id in (args.a, args.b))
        hint = " (an id looks masked: give the decision's number, --id N)" if masked else ""
        print(f"no decision on {_ref(*args.a)} and {_ref(*args.b)}{hint}", file=sys.stderr)
        return 1
    print("decision removed; it stops applying from the next identity resolution run")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``explain``, ``identity-map`` and ``steward`` to the ``custsync`` CLI."""
    p = subparsers.add_parser("explain", help="members of a golden id and the links that made it")
    p.add_argument("golden_id")
    _common(p)
    p.set_defaults(func=cmd_explain)

    p = subparsers.add_parser(
        "identity-map", help="the identity map (connector, source_id -> golden_id)"
    )
    sub = p.add_subparsers(dest="identity_map_command", required=True)
    e = sub.add_parser("export", help="write the identity map to a CSV file")
    e.add_argument("--out", required=True, help="CSV file to write")
    _common(e)
    e.set_defaults(func=cmd_export)

    p = subparsers.add_parser("steward", help="must-link / cannot-link decisions that always win")
    sub = p.add_subparsers(dest="steward_command", required=True)
    for name, text in (
        ("must-link", "these two records are the same person"),
        ("cannot-link", "these two records are different people"),
    ):
        d = sub.add_parser(
            name,
            help=text,
            description=f"{text}: name both records (A B), or one row of `custsync conflicts` "
            "(--conflict ID), whose ids may be masked. Each record must be a stored source "
            "record (exit 1 otherwise, nothing recorded).",
        )
        d.add_argument("a", nargs="?", type=_record_ref, help="connector:source_id")
        d.add_argument("b", nargs="?", type=_record_ref, help="connector:source_id")
        d.add_argument(
            "--conflict",
            metavar="ID",
            help="both records of this review-queue row (the id column of `custsync conflicts`)",
        )
        d.add_argument("--note", help="why (kept with the decision)")
        d.add_argument("--by", help="who decided (default: the current user)")
        _common(d)
        d.set_defaults(func=cmd_decide, parser=d)
    d = sub.add_parser("list", help="every stored decision")
    _common(d)
    d.set_defaults(func=cmd_list)
    d = sub.add_parser(
        "remove",
        help="delete the decision on a pair",
        description="delete a decision: name its two records (A B), or give its number "
        "(--id N, the first column of `custsync steward list`, whose ids may be masked)",
    )
    d.add_argument("a", nargs="?", type=_record_ref, help="connector:source_id")
    d.add_argument("b", nargs="?", type=_record_ref, help="connector:source_id")
    d.add_argument("--id", type=int, metavar="N", help="the decision's number (steward list)")
    _common(d)
    d.set_defaults(func=cmd_remove, parser=d)
