"""Golden-record commands of the ``custsync`` CLI: ``history`` and the sources part of ``explain``.

- ``custsync history <golden_id>``: every version of a golden record — each
  changed field and each added, changed or removed aspect entry, with the
  connector that gave it — personal data masked.
- ``format_golden_sources``: which connector gave each golden field, and every
  aspect entry with the connectors that hold it (used by ``custsync explain``).
"""

from __future__ import annotations

import argparse

import pandas as pd
from sqlalchemy.engine import Engine

from custsync_pipeline.domain.aspects import PERSONAL_ENTRY_COLUMNS
from custsync_pipeline.domain.validate import PERSONAL_FIELDS, mask_value


def _mask_field(field: str, value: object) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "-"
    text = str(value)
    if "[" in field:  # an aspect entry: "col=value; col=value"
        return mask_entry(text)
    if field in PERSONAL_FIELDS:
        return mask_value(field, text)
    return text


def mask_entry(text: str) -> str:
    """A rendered entry with its personal values masked (``street='S***' (11 chars)``)."""
    parts = []
    for pair in text.split("; "):
        col, sep, value = pair.partition("=")
        if sep and col in PERSONAL_ENTRY_COLUMNS:
            value = mask_value("email", value)
        parts.append(f"{col}{sep}{value}")
    return "; ".join(parts)


def format_history(golden_id: str, events: pd.DataFrame) -> str:
    if events.empty:
        return f"golden id {golden_id}: no history (unknown, or never merged yet)"
    lines = [f"golden id {golden_id}: {events['version'].max()} versions, {len(events)} changes"]
    # versions in the order written: a golden id created again after it was retired
    # starts at version 1 anew, after its first life
    runs = (events["version"] != events["version"].shift()).cumsum()
    for (_, version), group in events.groupby([runs, "version"], sort=False):
        at = pd.Timestamp(group["at"].iloc[0]).strftime("%Y-%m-%d %H:%M:%SZ")
        lines.append(f"version {version}  {at}")
        for r in group.itertuples(index=False):
            old = _mask_field(r.field, r.old_value)
            new = _mask_field(r.field, r.new_value)
            by = r.connector if isinstance(r.connector, str) else "-"
            if old == "-":
                change = f"added {new}" if "[" in r.field else f"set {new}"
            elif new == "-":
                change = f"removed {old}" if "[" in r.field else f"cleared (was {old})"
            else:
                change = f"{old} -> {new}"
            lines.append(f"  {r.field}: {change}  (from {by})")
    return "\n".join(lines)


def format_golden_sources(engine: Engine, golden_id: str) -> str:
    """Which connector gave each field, and each aspect entry's holders (values masked)."""
    from custsync_pipeline.cli_identity import masked_ids
    from custsync_pipeline.store.golden import golden_sources

    fields, entries = golden_sources(engine, golden_id)
    lines = ["", f"fields ({len(fields)}):"]
    for r in fields.sort_values("field").itertuples(index=False):
        sid = masked_ids(pd.Series([r.source_id])).iloc[0]
        lines.append(f"  {r.field}: from {r.connector}:{sid}")
    if entries.empty:
        lines += ["", "aspect entries: none"]
        return "\n".join(lines)
    from custsync_pipeline.domain.golden import render_entry

    distinct = entries.drop_duplicates(["aspect", "entry_key"]).reset_index(drop=True)
    shown = render_entry(distinct)
    lines += ["", f"aspect entries ({len(distinct)}):"]
    for i, r in enumerate(distinct.itertuples(index=False)):
        holders = entries[(entries["aspect"] == r.aspect) & (entries["entry_key"] == r.entry_key)]
        seen = ", ".join(
            f"{h.connector} (seen {pd.Timestamp(h.seen_at).strftime('%Y-%m-%d')})"
            if pd.notna(h.seen_at)
            else str(h.connector)
            for h in holders.itertuples(index=False)
        )
        lines.append(f"  {r.aspect}[{r.entry_key}] {mask_entry(str(shown.iloc[i]))}")
        lines.append(f"      held by {seen}")
    return "\n".join(lines)


def format_order_history(engine: Engine, golden_id: str) -> str:
    """The ``order_history`` aspect (seed 000): orders, first and last order, spend per
    currency, and its provenance (the source connector, the newest transactions counted)."""
    from custsync_pipeline.store.transactions import load_order_history

    hist = load_order_history(engine, golden_id)
    if hist.empty:
        return "\norder_history: no linked transactions"
    lines = ["", f"order_history ({int(hist['orders_count'].sum())} orders):"]
    for r in hist.itertuples(index=False):
        first = pd.Timestamp(r.first_order_at).strftime("%Y-%m-%d %H:%M")
        last = pd.Timestamp(r.last_order_at).strftime("%Y-%m-%d %H:%M")
        lines.append(
            f"  {r.currency}: {r.orders_count} orders, first {first}, last {last}, "
            f"total spend {r.total_spend:.2f}"
        )
        computed = pd.Timestamp(r.computed_at).strftime("%Y-%m-%d %H:%M")
        lines.append(f"      from {r.source} (newest {r.transactions}), computed {computed}")
    return "\n".join(lines)


def cmd_history(args: argparse.Namespace) -> int:
    from custsync_pipeline.cli_identity import _engine
    from custsync_pipeline.store.golden import golden_history

    events = golden_history(_engine(args), args.golden_id)
    print(format_history(args.golden_id, events))
    return 0 if len(events) else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``history`` to the ``custsync`` CLI."""
    from custsync_pipeline.cli_identity import _common

    p = subparsers.add_parser(
        "history", help="every version of a golden record: field and aspect-entry changes"
    )
    p.add_argument("golden_id")
    _common(p)
    p.set_defaults(func=cmd_history)
