"""Speed and memory of the golden merge at 1M source records from five connectors, with
every multi-valued aspect (about 2.5M entries).

Builds, in a child process per size: N canonical source records (five
connectors, ~N/4 people, overlapping fields with conflicts, consents with
timestamps), their aspect entries (one address, one or two contact details and
one attribute per record on average, nested contact persons and their details
on company records, the same entries typed two ways across connectors), keys
them (``aspects.key_entries``, what a lane stores), then times

- ``merge_golden`` (latest-connector fields, ownership, consents, the union of
  entries with providers and sources),
- ``diff_golden`` against an empty store (the first run: every record new,
  every entry an event) and against the stored result (the steady-state rerun:
  nothing changes),

and prints wall, CPU and the child's peak resident memory (``VmHWM``, see
``peak_memory.py``: the input frames included). The parent builds the input and hands it over as Parquet;
the child reads it the way the golden step reads the state DB (text as Arrow-backed
strings, ``store.bulk.read_frame(arrow_text=True)``), so the generator's own
Python strings are not counted. Target: 1M records / 2.5M entries merged in < 30 s
and < 4 GB.

Usage: PYTHONPATH=. python benchmarks/golden_merge.py [--sizes 100000 1000000]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import peak_rss_bytes  # noqa: E402

CONNECTORS = ("salesforce", "voucherify", "exact", "katana", "voyado")


def make_input(n: int, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(records, entries, identity map) for ``n`` source records."""
    from custsync_pipeline.domain.aspects import key_entries
    from custsync_pipeline.domain.canonical import conform

    rng = np.random.default_rng(seed)
    people = max(1, n // 4)
    person = rng.integers(0, people, n)
    conn = np.array(CONNECTORS)[rng.integers(0, len(CONNECTORS), n)]
    sid = np.char.add(np.char.add(conn.astype(str), ":"), np.arange(n).astype(str))
    first = np.array(["Anna", "Bo", "Cecilia", "David", "Eva", "Fredrik"])[person % 6]
    last = np.char.add("Name", (person % 50_000).astype(str))
    updated = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 300, n), unit="D"
    )
    consent = np.where(rng.random(n) < 0.5, "yes", "no")
    records = conform(
        pd.DataFrame(
            {
                "connector": conn,
                "source_id": sid,
                "kind": np.where(person % 10 == 0, "company", "person"),
                "first_name": np.where(rng.random(n) < 0.1, None, first),
                "last_name": last,
                "email": np.char.add(np.char.add("p", person.astype(str)), "@example.se"),
                "phone": np.char.add("+4670", (1_000_000 + person).astype(str)),
                "country": "SE",
                "city": np.where(rng.random(n) < 0.5, "Lund", "Malmö"),
                "street": np.char.add("Storgatan ", (person % 200).astype(str)),
                "postal_code": "22100",
                "email_consent": np.where(conn == "voyado", consent, None),
                "email_consent_at": np.where(conn == "voyado", updated, pd.NaT),
                "loyalty_tier": np.where(conn == "voyado", "gold", None),
                "updated_at": updated,
            }
        )
    )
    base = pd.DataFrame({"connector": conn, "source_id": sid, "seen_at": updated})
    street = np.where(
        rng.random(n) < 0.5,
        np.char.add("Storgatan ", (person % 200).astype(str)),
        np.char.add("STORGATAN  ", (person % 200).astype(str)),  # the same, typed another way
    )
    parts = [
        base.assign(
            aspect="addresses",
            type="mailing",
            local_id="mailing",
            street=street,
            postal_code=np.where(rng.random(n) < 0.5, "221 00", "22100"),
            city="Lund",
            country="SE",
        ),
        base.assign(
            aspect="customer_contact_details",
            type="email",
            value=np.char.add(np.char.add("p", person.astype(str)), "@example.se"),
        ),
        base.assign(
            aspect="customer_attributes",
            name=np.where(rng.random(n) < 0.5, "segment", "tier"),
            value=np.where(rng.random(n) < 0.5, "retail", "wholesale"),
        ),
    ]
    companies = base[person % 10 == 0]
    if len(companies):
        parts += [
            companies.assign(
                aspect="contact_persons",
                local_id="cp1",
                first_name="Åsa",
                last_name=np.char.add("Lind", (person[person % 10 == 0] % 97).astype(str)),
                role="buyer",
            ),
            companies.assign(
                aspect="contact_person_contact_details",
                parent_local_id="cp1",
                type="phone",
                value="+46701234567",
            ),
        ]
    some = base[rng.random(n) < 0.2]
    parts.append(
        some.assign(aspect="customer_contact_details", type="website", value="https://shop.example")
    )
    entries = key_entries(pd.concat(parts, ignore_index=True))
    idmap = pd.DataFrame(
        {"connector": conn, "source_id": sid, "golden_id": np.char.add("G", person.astype(str))}
    )
    from custsync_pipeline.domain.golden import GOLDEN_INPUT_COLUMNS

    # what the golden asset loads of the source records
    return records[list(GOLDEN_INPUT_COLUMNS)], entries, idmap


def write_input(n: int, folder: Path) -> None:
    for name, frame in zip(("records", "entries", "identity_map"), make_input(n), strict=True):
        frame.to_parquet(folder / f"{name}.parquet")


def read_input(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The input as the golden step holds it: text in Arrow-backed strings (records and
    entries) or Python strings (the identity map), times as UTC datetimes."""
    from custsync_pipeline.domain.aspects import conform_entries
    from custsync_pipeline.store.bulk import ARROW_TEXT

    arrow = {pa.string(): ARROW_TEXT, pa.large_string(): ARROW_TEXT}

    def read(name: str, mapper=None) -> pd.DataFrame:
        return pq.read_table(folder / f"{name}.parquet").to_pandas(types_mapper=mapper)

    records = read("records", arrow.get)
    entries = conform_entries(read("entries", arrow.get))
    idmap = read("identity_map")
    return records, entries, idmap


def run_one(folder: Path) -> dict[str, float]:
    from custsync_pipeline.config import load_sync_config
    from custsync_pipeline.domain.golden import diff_golden, merge_golden
    from custsync_pipeline.domain.plan import FlowStep

    records, entries, idmap = read_input(folder)
    n = len(records)
    plan = load_sync_config().plan()
    every = ("name", "customer_contact_details", "addresses", "customer_attributes",
             "contact_persons", "contact_person_contact_details", "consents", "loyalty")  # fmt: skip
    steps = tuple(FlowStep(c, every if c != "voyado" else every) for c in CONNECTORS)
    plan = plan.__class__(**{**plan.__dict__, "steps": steps, "source": CONNECTORS[0]})
    out: dict[str, float] = {"records": n, "entries_in": len(entries)}
    t0, c0 = time.perf_counter(), time.process_time()
    result = merge_golden(plan, records, idmap, entries)
    out["merge_s"] = time.perf_counter() - t0
    out["merge_cpu_s"] = time.process_time() - c0
    out["golden"] = len(result.golden)
    out["golden_entries"] = len(result.entries)
    out["merge_peak_gb"] = peak_rss_bytes() / 1024**3
    now = pd.Timestamp.now(tz="UTC")
    t0 = time.perf_counter()
    stored, events, _ = diff_golden(
        result.golden, pd.DataFrame(), result.provenance, now, result.entries, None
    )
    out["diff_first_s"] = time.perf_counter() - t0
    out["events_first"] = len(events)
    out["diff_first_peak_gb"] = peak_rss_bytes() / 1024**3
    # a rerun is a new run (a new process in the pipeline): what the first one stored stays,
    # its events and intermediate frames go
    stored_entries = result.entries
    del events, result
    gc.collect()
    t0 = time.perf_counter()
    again = merge_golden(plan, records, idmap, entries, previous=stored)
    changed, events2, _ = diff_golden(
        again.golden, stored, again.provenance, now, again.entries, stored_entries
    )
    out["rerun_s"] = time.perf_counter() - t0
    out["rerun_changed"] = len(changed)
    out["peak_rss_gb"] = peak_rss_bytes() / 1024**3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child)))
        return
    print("records  entries_in  golden  golden_entries  merge_s  merge_cpu_s  merge_peak_gb  "
          "diff_first_s  diff_first_peak_gb  rerun_s  rerun_changed  peak_rss_gb")  # fmt: skip
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="custsync-golden-bench-") as tmp:
            write_input(n, Path(tmp))
            proc = subprocess.run(
                [sys.executable, __file__, "--child", tmp], capture_output=True, text=True
            )
        if proc.returncode:
            sys.exit(proc.stderr)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"{r['records']:>7}  {r['entries_in']:>10}  {r['golden']:>6}  {r['golden_entries']:>14}"
            f"  {r['merge_s']:7.1f}  {r['merge_cpu_s']:11.1f}  {r['merge_peak_gb']:13.2f}"
            f"  {r['diff_first_s']:12.1f}  {r['diff_first_peak_gb']:18.2f}"
            f"  {r['rerun_s']:7.1f}  {r['rerun_changed']:>13}  {r['peak_rss_gb']:11.2f}"
        )


if __name__ == "__main__":
    main()
