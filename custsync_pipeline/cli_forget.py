"""``custsync forget <golden id>``: erase one person (an erasure request).

Removes the person — the live golden id, every id merged into it and its member
source records — from every state-DB table (``store.forget``) and from every
stored step output (the Parquet files under ``$DAGSTER_HOME/storage/custsync``,
``defs.io.purge_outputs``). Prints counts only, never the person's data. A person
still held by a source system comes back on the next sync: erase them there first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from custsync_pipeline.cli_identity import _common, _engine


def forget(args: argparse.Namespace) -> int:
    from custsync_pipeline.defs.io import purge_outputs, storage_root
    from custsync_pipeline.store.forget import find_person, forget_person

    engine = _engine(args)
    try:
        person = find_person(engine, args.golden_id)
        records = len(person.records)
        if not args.yes:
            print(
                f"forget {args.golden_id}: {len(person.golden_ids)} golden id(s), "
                f"{records} source record(s); run again with --yes to erase them",
                file=sys.stderr,
            )
            return 2
        in_db = forget_person(engine, person)
    finally:
        engine.dispose()
    root = Path(args.storage) if args.storage else storage_root()
    in_files = purge_outputs(root, person.golden_ids, person.records, person.id_parts)
    if not in_db and not in_files:
        print(f"forget {args.golden_id}: nothing stored for this id", file=sys.stderr)
        return 1
    print(
        f"forgot {args.golden_id}: {sum(in_db.values())} row(s) from {len(in_db)} state-DB "
        f"table(s), {sum(in_files.values())} row(s) from {len(in_files)} step output(s) in {root}"
    )
    for name, n in sorted(in_db.items()):
        print(f"  state DB  {name}: {n}")
    for name, n in sorted(in_files.items()):
        print(f"  output    {name}: {n}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "forget",
        help="erase a person (golden id) from the state DB and the stored step outputs",
    )
    p.add_argument("golden_id", help="the person's golden id (a merged-away id resolves)")
    p.add_argument("--yes", action="store_true", help="erase (without it: say what would go)")
    p.add_argument(
        "--storage",
        help="folder of the step outputs (default: $DAGSTER_HOME/storage/custsync)",
    )
    _common(p)
    p.set_defaults(func=forget)
