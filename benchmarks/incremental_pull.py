"""Full snapshot vs incremental pull of every extraction lane, against the sandbox.

Starts a sandbox of N people (every system), materializes the extraction lanes
(``<c>/raw_customers`` → ``<c>/customers``: read, validate, store) once — a first run, a
full snapshot — then lets 1% of every system's records change (edits, plus a few deletes
and new ones) and materializes them again, now an incremental pull from the stored
watermarks. Prints, per connector and in total, the requests the sandbox served and the
wall time of each run.

The target (issue 11): at 100,000 people an incremental run after 1% changed costs at most
10% of a full run, in API calls (counted at the sandbox) and in wall time; the last line
says whether it holds and the exit code is 1 when it does not.

Usage: PYTHONPATH=. python benchmarks/incremental_pull.py [--people 100000] [--changed 0.01]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml

from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline_tests.e2e import SANDBOX_SECRETS, write_sync_config


def _requests(sb: Sandbox) -> dict[str, int]:
    return {s: e.stats["requests"] for s, e in sb.emulators.items()}


def _lanes_run(instance: dg.DagsterInstance) -> float:
    from custsync_pipeline.definitions import defs

    d = defs()
    job = d.resolve_job_def("sync_job")
    keys = {
        k
        for k in job.asset_layer.asset_graph.executable_asset_keys
        if k.path[-1] in ("raw_customers", "customers", "rejected_customers")
    }
    started = time.perf_counter()
    result = job.get_subset(asset_selection=keys).execute_in_process(instance=instance)
    assert result.success
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--max-ratio", type=float, default=0.10)
    parser.add_argument("--changed", type=float, default=0.01)
    args = parser.parse_args()
    os.environ.update(SANDBOX_SECRETS)
    with tempfile.TemporaryDirectory() as tmp, Sandbox(seed=7, people=args.people) as sb:
        os.environ["DAGSTER_HOME"] = tmp
        url = f"sqlite:///{Path(tmp) / 'state.sqlite'}"
        path = write_sync_config(Path(tmp) / "sync.yaml", sb.urls, url)
        data = yaml.safe_load(path.read_text())
        for conn in data["connectors"].values():  # the local sandbox needs no client rate limit
            conn.setdefault("options", {}).setdefault("http", {})["rate_per_s"] = None
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        os.environ["CUSTSYNC_CONFIG"] = str(path)
        with dg.DagsterInstance.ephemeral() as instance:
            before = _requests(sb)
            full_s = _lanes_run(instance)
            for system, emu in sb.emulators.items():
                n = max(1, int(len(emu.store) * args.changed))
                sb.changes(system, edit=n, delete=max(1, n // 10), add=max(1, n // 10), seed=1)
            mid = _requests(sb)
            inc_s = _lanes_run(instance)
            after = _requests(sb)
    full = {s: mid[s] - before[s] for s in before}
    inc = {s: after[s] - mid[s] for s in before}
    print(f"{'system':<12}{'full calls':>12}{'incremental calls':>20}")
    for s in sorted(full):
        print(f"{s:<12}{full[s]:>12}{inc[s]:>20}")
    print(f"{'total':<12}{sum(full.values()):>12}{sum(inc.values()):>20}")
    print(f"wall: full {full_s:.1f} s, incremental {inc_s:.1f} s ({inc_s / full_s:.0%})")
    calls = sum(inc.values()) / max(1, sum(full.values()))
    wall = inc_s / full_s
    ok = calls <= args.max_ratio and wall <= args.max_ratio
    print(
        f"{args.people} people, {args.changed:.0%} changed: incremental/full calls {calls:.1%}, "
        f"wall {wall:.1%} (target <= {args.max_ratio:.0%}): {'OK' if ok else 'MISSED'}"
    )
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
