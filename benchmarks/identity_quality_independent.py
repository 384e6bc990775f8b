"""Identity resolution quality on the second, independent generator (the tests' own).

``custsync_pipeline_tests/identity_datagen.py`` writes five systems' records with
traps the sandbox generator does not have (nicknames, swapped names, full-name
fields, households of eight and more on one e-mail or landline, e-mail typos,
CRM duplicates with only name and address). This script resolves them with the
packaged identity rules and prints pairwise precision and recall, golden records
mixing people, and where the missed pairs and the mixing come from, by trap.

Usage: PYTHONPATH=. python benchmarks/identity_quality_independent.py [--people 20000] [--seed 1]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from custsync_pipeline.config import load_sync_config
from custsync_pipeline.domain.identity import resolve_identities
from custsync_pipeline_tests.identity_datagen import generate, score


def measure(people: int, seed: int, matching: bool = True) -> dict:
    """Generate, resolve with the packaged rules, score against the truth."""
    t0 = time.perf_counter()
    records, truth = generate(seed=seed, people=people)
    t1 = time.perf_counter()
    config = load_sync_config()
    result = resolve_identities(
        records,
        list(config.identity.identifiers),
        now=pd.Timestamp("2026-11-01", tz="UTC"),
        matching=config.plan().matching if matching else None,
    )
    t2 = time.perf_counter()
    return score(result.identity_map, truth) | {
        "records": records,
        "result": result,
        "t_generate": t1 - t0,
        "t_resolve": t2 - t1,
    }


_SHOWN = ["first_name", "last_name", "full_name", "email", "phone", "street", "postal_code"]


def show_mixed(f: dict) -> None:
    """Every record of each mixing golden record, with the rule that put it there."""
    rows = f["mixed_rows"].merge(
        f["records"][["connector", "source_id", *[c for c in _SHOWN if c in f["records"]]]],
        on=["connector", "source_id"],
        how="left",
    )
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        for gid, g in rows.groupby("golden_id", sort=True):
            print(f"  --- {gid}")
            cols = ["person_id", "connector", "trap", "rule", *[c for c in _SHOWN if c in g]]
            print(g.sort_values("person_id")[cols].to_string(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-matching", action="store_true", help="rules only")
    parser.add_argument(
        "--show-mixed",
        action="store_true",
        help="print every record of the golden records mixing people (synthetic data only)",
    )
    args = parser.parse_args()
    f = measure(args.people, args.seed, matching=not args.no_matching)
    m = f["m"]
    print(f"independent generator: seed {args.seed}, {args.people} people, {len(m)} records")
    print(f"  same-person pairs {f['true_pairs']}, predicted {f['pred_pairs']}, correct {f['tp']}")
    print(f"  pairwise precision {f['precision']:.5f}  (target >= 0.999)")
    print(f"  pairwise recall    {f['recall']:.5f}  (target >= 0.98)")
    print(f"  golden records mixing people: {f['mixed']}")
    if f["mixed"]:
        print(
            "  ... records in them by trap: "
            + f["mixed_rows"]["trap"].value_counts().to_dict().__repr__()
        )
        if args.show_mixed:
            show_mixed(f)
    per = m.groupby("person_id")["golden_id"].agg(lambda g: g.value_counts().index[0])
    off = m[m["golden_id"] != m["person_id"].map(per)]
    print(f"  records apart from their person's main golden record: {len(off)}")
    print(
        off.groupby(["connector", "trap"]).size().sort_values(ascending=False).head(15).to_string()
    )
    print("  conflicts: " + repr(f["result"].conflicts["kind"].value_counts().to_dict()))
    print(f"  time: generate {f['t_generate']:.1f}s, resolve {f['t_resolve']:.2f}s")


if __name__ == "__main__":
    main()
