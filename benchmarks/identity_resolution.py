"""Speed and memory of normalization + identity resolution at 100k and 1M source records.

The records come from the sandbox generator (messy, overlapping, six systems;
five of them are the seed connectors plus KatanaPIM), mapped to the canonical
model as in ``identity_quality.py``. For each size the canonical frame is
written to a Parquet file and a fresh child process loads it, then times

- ``normalize_customers`` (emails, phones via ``phonenumbers`` once per unique
  value, names, countries), one connector at a time as the extract lanes do,
  keeping the columns resolution reads (what the identity asset loads from the
  state DB: ``resolution_columns``),
- ``resolve_identities`` with the sync config's rules (first run, no state),
- a second ``resolve_identities`` with the first run's map as prior state
  (the steady-state nightly run: every id must come back unchanged),

and reports the child's peak resident memory (``VmHWM``, see ``peak_memory.py``: the
loaded frame included) and the CPU time of the first resolution (``res cpu``: what the
work costs when other processes load the machine and stretch the wall time).
Targets: 1M records resolved in < 20 s with < 3 GB peak.

Usage: PYTHONPATH=. python benchmarks/identity_resolution.py [--sizes 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peak_memory import peak_rss_bytes  # noqa: E402

RECORDS_PER_PERSON = 2.45  # what the generator yields per person with its default membership


def build(size: int, path: Path, seed: int) -> int:
    """Generate about ``size`` raw canonical records (not normalized) into ``path``."""
    sys.path.insert(0, str(HERE))
    from identity_quality import to_canonical

    from custsync_pipeline.sandbox.generator import generate

    data = generate(seed=seed, people=int(size / RECORDS_PER_PERSON))
    frames = [to_canonical(system, raw)[0] for system, raw in data.frames.items()]
    records = pd.concat(frames, ignore_index=True)
    records.to_parquet(path)
    return len(records)


def run(path: Path) -> dict:
    """In a fresh process: load, normalize, resolve twice; timings and peak memory."""
    from custsync_pipeline.config import load_sync_config
    from custsync_pipeline.domain.identity import resolution_columns, resolve_identities
    from custsync_pipeline.domain.normalize import normalize_customers

    config = load_sync_config()
    rules = config.identity.identifiers
    # the probabilistic stage as configured (CUSTSYNC_BENCH_NO_MATCHING=1: rules only)
    matching = None if os.environ.get("CUSTSYNC_BENCH_NO_MATCHING") else config.plan().matching
    cols = list(dict.fromkeys([*resolution_columns(rules, matching), "custsync_id"]))
    records = pd.read_parquet(path)
    rss_loaded = peak_rss_bytes() / 1024**2
    t0, c0 = time.perf_counter(), time.process_time()
    # per connector, as the extract lanes normalize; the state DB then holds the rows and
    # the identity asset loads back only the columns resolution reads
    parts = []
    for connector in records["connector"].unique():
        one = records["connector"] == connector
        normalized_part = normalize_customers(records[one])
        parts.append(normalized_part[[c for c in cols if c in normalized_part.columns]])
        records = records[~one]
    normalized = pd.concat(parts, ignore_index=True)
    del records, parts, normalized_part
    t1, c1 = time.perf_counter(), time.process_time()
    rss_normalized = peak_rss_bytes() / 1024**2
    first = resolve_identities(
        normalized, rules, now=pd.Timestamp("2026-11-01", tz="UTC"), matching=matching
    )
    t2, c2 = time.perf_counter(), time.process_time()
    again = resolve_identities(
        normalized,
        rules,
        prior_map=first.identity_map,
        golden_ids=first.golden_ids,
        now=pd.Timestamp("2026-11-02", tz="UTC"),
        matching=matching,
    )
    t3 = time.perf_counter()
    same = (
        first.identity_map.set_index(["connector", "source_id"])["golden_id"]
        .sort_index()
        .equals(again.identity_map.set_index(["connector", "source_id"])["golden_id"].sort_index())
    )
    return {
        "records": len(normalized),
        "golden": int(first.stats["golden_records"]),
        "slow_path_records": int(first.stats["slow_path_records"]),
        "conflicts": int(first.stats["conflicts"]),
        "probable_links": int(first.stats.get("match_links", 0)),
        "candidate_pairs": int(first.stats.get("match_candidate_pairs", 0)),
        "normalize_s": t1 - t0,
        "resolve_s": t2 - t1,
        "rerun_s": t3 - t2,
        "normalize_cpu_s": c1 - c0,
        "resolve_cpu_s": c2 - c1,
        "ids_unchanged": bool(same),
        "rss_loaded_mb": rss_loaded,
        "peak_rss_normalize_mb": rss_normalized,
        "peak_rss_mb": peak_rss_bytes() / 1024**2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)  # child mode
    parser.add_argument(
        "--keep", type=Path, help="keep the generated Parquet files in this folder (reused)"
    )
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run(args.run)))
        return

    print("normalization + identity resolution (2-core machine; one process per size)")
    print(
        f"{'records':>9} {'golden':>8} {'slow':>7} {'normalize':>10} {'resolve':>8} "
        f"{'norm+res':>9} {'res cpu':>8} {'rerun':>7} {'ids same':>9} {'peak RSS':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            folder = args.keep or Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"records_{size}_{args.seed}.parquet"
            if not path.exists():
                build(size, path, args.seed)
            env = dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH", "."))
            out = subprocess.run(
                [sys.executable, __file__, "--run", str(path)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{r['records']:>9} {r['golden']:>8} {r['slow_path_records']:>7} "
                f"{r['normalize_s']:>9.1f}s {r['resolve_s']:>7.1f}s "
                f"{r['normalize_s'] + r['resolve_s']:>8.1f}s "
                f"{r['resolve_cpu_s']:>7.1f}s {r['rerun_s']:>6.1f}s "
                f"{str(r['ids_unchanged']):>9} {r['peak_rss_mb'] / 1024:>7.2f}GB"
            )


if __name__ == "__main__":
    main()
