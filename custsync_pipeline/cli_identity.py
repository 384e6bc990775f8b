"""Identity commands of the ``custsync`` CLI: explain, identity-map export, steward decisions.

- ``custsync explain <golden_id>``: the member records of a golden id (also a
  merged-away one: it resolves to the survivor) and, for each link, the rule
  and the masked key that made it;
- ``custsync identity-map export --out map.csv``: the identity map as CSV;
- ``custsync steward must-link|cannot-link A B``, ``steward list``,
  ``steward remove A B``: decisions that always win over the rules; a record
  is written ``connector:source_id``.

The state DB is ``--db URL``, else ``$CUSTSYNC_STATE_DB_URL``, else the sync
config's ``state_db_url``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

import pandas as pd

from custsync_pipeline.store.db import make_engine


def _engine(args: argparse.Namespace):
    url = args.db or os.environ.get("CUSTSYNC_STATE_DB_URL")
    if not url:
        from custsync_pipeline.config import load_sync_config

        url = load_sync_config(args.config).state_db_url
    return make_engine(url)


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


def cmd_decide(args: argparse.Namespace) -> int:
    from custsync_pipeline.store.identity import set_decision

    decision = args.steward_command.replace("-", "_")
    by = args.by or _whoami()
    set_decision(_engine(args), decision, args.a, args.b, note=args.note, decided_by=by)
    print(
        f"{decision} recorded for {args.a[0]}:{args.a[1]} and {args.b[0]}:{args.b[1]}; "
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
        print(
            f"{r.decision:<12} {r.connector_a}:{r.source_id_a}  {r.connector_b}:{r.source_id_b}  "
            f"{_fmt_ts(r.decided_at)}{by}{note}"
        )
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from custsync_pipeline.store.identity import remove_decision

    n = remove_decision(_engine(args), args.a, args.b)
    if not n:
        print(
            f"no decision on {args.a[0]}:{args.a[1]} and {args.b[0]}:{args.b[1]}", file=sys.stderr
        )
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
        d = sub.add_parser(name, help=text)
        d.add_argument("a", type=_record_ref, help="connector:source_id")
        d.add_argument("b", type=_record_ref, help="connector:source_id")
        d.add_argument("--note", help="why (kept with the decision)")
        d.add_argument("--by", help="who decided (default: the current user)")
        _common(d)
        d.set_defaults(func=cmd_decide)
    d = sub.add_parser("list", help="every stored decision")
    _common(d)
    d.set_defaults(func=cmd_list)
    d = sub.add_parser("remove", help="delete the decision on a pair")
    d.add_argument("a", type=_record_ref, help="connector:source_id")
    d.add_argument("b", type=_record_ref, help="connector:source_id")
    _common(d)
    d.set_defaults(func=cmd_remove)
