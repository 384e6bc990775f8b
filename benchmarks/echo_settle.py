"""Echo safety at scale (issue 10 item 4): with no source change, do consecutive runs
change no golden id, no golden record and send no write?

Starts a sandbox of N people (Salesforce and Voucherify, the systems custsync writes and
reads back), runs ``sync_job`` R times on a SQLite state DB, and prints per run: seconds,
golden records, records changed, field and entry changes, records whose golden id moved,
and deltas sent per target. Exit 1 when a run after the first (the first of them reads
back what custsync wrote) changed anything.

Usage: PYTHONPATH=. python benchmarks/echo_settle.py [--people 50000] [--runs 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import pandas as pd

from custsync_pipeline.sandbox import CREDENTIALS
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import (
    SANDBOX_SECRETS,
    materialize_all,
    metadata_of,
    write_sync_config,
)

SYSTEMS = ["salesforce", "voucherify"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=50000)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    for k in CREDENTIALS:
        os.environ.pop(k, None)
    work = Path(tempfile.mkdtemp(prefix="custsync_echo"))
    os.environ.setdefault("DAGSTER_HOME", str(work))
    unsettled = 0
    with Sandbox(seed=args.seed, people=args.people, base_port=0, systems=SYSTEMS) as sb:
        url = f"sqlite:///{work / 'state.sqlite'}"
        os.environ.update(SANDBOX_SECRETS)
        os.environ["CUSTSYNC_STATE_DB_URL"] = url
        cfg = write_sync_config(work / "sync.yaml", sb.urls, url, enabled=set(SYSTEMS))
        os.environ["CUSTSYNC_CONFIG"] = str(cfg)
        engine = StateDB(url).engine
        print(f"state DB: {url} (kept: golden_events says what a run changed)", flush=True)
        before = None
        with dg.DagsterInstance.ephemeral() as instance:
            for i in range(1, args.runs + 1):
                t = time.time()
                result = materialize_all(instance, raise_on_error=False)
                g = metadata_of(result, "golden_customers")
                ids = pd.read_sql(
                    "select connector, source_id, golden_id from identity_map", engine
                )
                moved = 0
                if before is not None:
                    m = before.merge(ids, on=["connector", "source_id"], suffixes=("_a", "_b"))
                    moved = int((m["golden_id_a"] != m["golden_id_b"]).sum())
                before = ids
                sent = {s: metadata_of(result, f"{s}/published").get("published") for s in SYSTEMS}
                print(
                    f"run {i}: {time.time() - t:.1f} s, ok={result.success}, "
                    f"{g.get('dagster/row_count')} golden, {g.get('changed_records')} changed "
                    f"({g.get('field_changes')} field, {g.get('entry_changes')} entry changes), "
                    f"{moved} moved golden id, sent {sent}",
                    flush=True,
                )
                if i > 1 and (g.get("changed_records") or moved or any(sent.values())):
                    unsettled += 1
        engine.dispose()
    return 1 if unsettled else 0


if __name__ == "__main__":
    sys.exit(main())
