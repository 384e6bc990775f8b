"""The long soak (issue 10 item 6): N cycles (default 200) of random edits, deletes and
inserts in Salesforce and Voucherify over real sockets, 10% injected faults, one Voucherify
outage and one ``custsync run`` killed with SIGKILL mid-publish, the sync invariants
checked after every cycle (``custsync_pipeline_tests/soak.py``). Prints progress, the
figures, and every violated invariant; exit 1 when one was.

Usage: PYTHONPATH=. python benchmarks/soak.py [--cycles 200] [--people 40] [--seed 7]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from custsync_pipeline_tests.soak import run_soak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--people", type=int, default=40)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--fault-rate", type=float, default=0.10)
    ap.add_argument("--outage-cycle", type=int, default=50)
    ap.add_argument("--kill-cycle", type=int, default=100)
    args = ap.parse_args()
    os.environ.setdefault("DAGSTER_HOME", tempfile.mkdtemp(prefix="custsync_soak_home"))
    work = Path(tempfile.mkdtemp(prefix="custsync_soak"))
    figures = run_soak(
        work,
        cycles=args.cycles,
        people=args.people,
        seed=args.seed,
        fault_rate=args.fault_rate,
        outage_cycle=args.outage_cycle,
        kill_cycle=args.kill_cycle,
        progress=lambda line: print(line, flush=True),
    )
    print(figures.line())
    for v in figures.violations:
        print("VIOLATION", v)
    return 1 if figures.violations else 0


if __name__ == "__main__":
    sys.exit(main())
