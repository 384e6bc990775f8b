"""``custsync forget <golden id>``: erase one person (an erasure request).

Removes the person — the live golden id, every id merged into it and its member
source records — from every state-DB table (``store.forget``) and from every
stored step output (the Parquet files under ``$DAGSTER_HOME/storage/custsync``,
``defs.io.purge_outputs``). Prints counts only, never the person's data. A person
still held by a source system comes back on the next sync: erase them there first.
The erasure holds the state lease (``store.lease``): a sync's identity, golden or publish
step cannot write the person back from what it read before; exit code 3 when a sync
held the lease for longer than ``--wait`` (nothing erased).
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path

from custsync_pipeline.cli_identity import _common, _engine


def forget(args: argparse.Namespace) -> int:
    from custsync_pipeline.config import RunsConfig
    from custsync_pipeline.defs.io import purge_outputs, storage_root
    from custsync_pipeline.store import lease
    from custsync_pipeline.store.forget import find_person, forget_person

    engine = _engine(args)
    root = Path(args.storage) if args.storage else storage_root()
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
        # a sync merging or publishing meanwhile would write the person back from what it
        # read before: the erasure holds the state lease, as every such step does
        lease.state_leases.create(engine, checkfirst=True)
        owner = f"custsync-forget-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with lease.holding(engine, owner, RunsConfig().lease_ttl_s, args.wait):
                person = find_person(engine, args.golden_id)  # as it is now, under the lease
                in_db = forget_person(engine, person)
                in_files = purge_outputs(root, person.golden_ids, person.records, person.id_parts)
        except lease.LeaseHeld as exc:
            print(f"forget {args.golden_id}: nothing erased: {exc}", file=sys.stderr)
            return 3
    finally:
        engine.dispose()
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
        print(f"  output    {name}: {n}" + ("" if n else " (the id left its pull's deleted ids)"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from custsync_pipeline.config import RunsConfig

    wait_s = float(RunsConfig().lease_wait_s)  # as long as a sync waits for another's lease
    p = sub.add_parser(
        "forget",
        help="erase a person (golden id) from the state DB and the stored step outputs",
    )
    p.add_argument("golden_id", help="the person's golden id (a merged-away id resolves)")
    p.add_argument("--yes", action="store_true", help="erase (without it: say what would go)")
    p.add_argument(
        "--wait",
        type=float,
        default=wait_s,
        metavar="SECONDS",
        help="how long to wait for a running sync's state lease before giving up with exit "
        f"code 3 (default {wait_s:.0f}, as a sync waits: runs.lease_wait_s)",
    )
    p.add_argument(
        "--storage",
        help="folder of the step outputs (default: $DAGSTER_HOME/storage/custsync)",
    )
    _common(p)
    p.set_defaults(func=forget)
