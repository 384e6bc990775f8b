"""Benchmark: normalization + validation of N canonical rows (default 1,000,000).

    PYTHONPATH=. python benchmarks/validate_normalize.py [--rows 1000000] [--seed 7]

The frame looks like what connectors hand over: nearly every email and phone
distinct, phones in national, international and 00-prefixed spellings with
separators, countries as names / alpha-3 / alpha-2 in any case, untidy names,
ISO timestamps, and about 3% deliberate defects (bad emails and phones, unknown
countries, duplicate ids, future dates, formula-like names). Prints the wall and
CPU (user+sys) time of each stage and the outcome counts; on a shared machine
judge by CPU time.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd

from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.domain.normalize import normalize_customers
from custsync_pipeline.domain.validate import validate_customers

FIRST = np.array(
    ["Anna", "  erik", "Maria ", "Lars  Olof", "Karin", "Johan", "Eva", "Mikael", "Sofia", "Ola"]
)
LAST = np.array(
    ["Andersson", "Johansson ", "Karlsson", "Nilsson", "de  Vries", "Jansen", "Hansen", "Virtanen"]
)
DOMAINS = np.array(
    ["gmail.com", "Hotmail.com", "outlook.com", "telia.se", "ZIGGO.nl", "online.no", "yahoo.com"]
)
# (country spelling, region, national mobile prefix, international prefix)
COUNTRIES = [
    ("Sweden", "SE", "070", "+46 70"),
    ("SWE", "SE", "073", "+4673"),
    ("se", "SE", "076", "0046 76"),
    ("Norway", "NO", "9", "+47 9"),
    ("NL", "NL", "061", "+31 61"),
    ("Netherlands", "NL", "061", "0031 61"),
    ("Sverige", "SE", "072", "+4672"),
    ("Finland", "FI", "040", "+358 40"),
]


def make_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    c = rng.integers(0, len(COUNTRIES), n)
    spell = np.array([x[0] for x in COUNTRIES])[c]
    nat = np.array([x[2] for x in COUNTRIES])[c]
    intl = np.array([x[3] for x in COUNTRIES])[c]
    # national significant digits: 7 random digits keeps numbers valid in these plans
    digits = pd.Series(rng.integers(0, 10**7, n)).astype(str).str.zfill(7)
    style = rng.integers(0, 3, n)
    phone = np.where(
        style == 0,
        pd.Series(nat) + "-" + digits.str[:3] + " " + digits.str[3:],
        pd.Series(intl) + " " + digits,
    )
    phone = np.where(style == 2, pd.Series(intl).str.replace(" ", "", regex=False) + digits, phone)
    first = pd.Series(FIRST[rng.integers(0, len(FIRST), n)])
    last = pd.Series(LAST[rng.integers(0, len(LAST), n)])
    local = (
        first.str.strip().str.split().str[0]
        + "."
        + last.str.strip().str.split().str[-1]
        + pd.Series(idx).astype(str)
    )
    email = local + "@" + pd.Series(DOMAINS[rng.integers(0, len(DOMAINS), n)])
    email = np.where(rng.random(n) < 0.3, "  " + email.str.upper() + " ", email)
    updated = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 300 * 86400, n), unit="s"
    )
    frame = pd.DataFrame(
        {
            "connector": "bench",
            "source_id": "S" + pd.Series(idx).astype(str).str.zfill(8),
            "kind": "person",
            "first_name": first,
            "last_name": last,
            "email": email,
            "phone": phone,
            "country": spell,
            "language": np.where(c < 3, "sv-SE", "en"),
            "updated_at": updated,
            "created_at": updated - pd.Timedelta(days=30),
            "loyalty_points": rng.integers(0, 5000, n).astype(float),
        }
    )
    # ~3% deliberate defects, spread over kinds
    bad = rng.random(n) < 0.03
    kind = rng.integers(0, 6, n)
    frame.loc[bad & (kind == 0), "email"] = "broken.address@"
    frame.loc[bad & (kind == 1), "phone"] = "12345"
    frame.loc[bad & (kind == 2), "country"] = "Atlantis"
    frame.loc[bad & (kind == 3), "source_id"] = "S00000001"  # duplicate id
    frame.loc[bad & (kind == 4), "updated_at"] = pd.Timestamp("2200-01-01", tz="UTC")
    frame.loc[bad & (kind == 5), "first_name"] = '=HYPERLINK("http://x")'
    return conform(frame)


def _cpu() -> float:
    """User + system CPU seconds of this process (threads of Arrow kernels included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    t0 = time.perf_counter()
    frame = make_frame(args.rows, args.seed)
    # warm-up on a few rows: imports, Pandera backends, phone metadata (not per batch)
    validate_customers(normalize_customers(frame.head(50)), "bench")
    t1, c1 = time.perf_counter(), _cpu()
    normalized = normalize_customers(frame)
    t2, c2 = time.perf_counter(), _cpu()
    result = validate_customers(normalized, "bench", now=pd.Timestamp("2026-01-01", tz="UTC"))
    t3, c3 = time.perf_counter(), _cpu()

    rej = result.rejected
    print(f"rows                   {args.rows:>12,}")
    print(f"unique emails          {frame['email'].nunique():>12,}")
    print(f"unique phones          {frame['phone'].nunique():>12,}")
    print(f"generate (not timed)   {t1 - t0:>11.2f}s")
    # CPU time (user+sys of this process) is what to judge by on a shared machine:
    # wall time grows with other processes' load, CPU time much less
    print(f"{'':23}{'wall':>12}{'cpu':>12}")
    print(f"normalize              {t2 - t1:>11.2f}s{c2 - c1:>11.2f}s")
    print(f"validate               {t3 - t2:>11.2f}s{c3 - c2:>11.2f}s")
    print(
        f"normalize + validate   {t3 - t1:>11.2f}s{c3 - c1:>11.2f}s"
        f"   ({args.rows / (t3 - t1):,.0f} rows/s wall)"
    )
    print(f"valid rows             {len(result.valid):>12,}")
    print(
        f"quarantine rows        {len(rej):>12,}  (row severity {int((rej['severity'] == 'row').sum()):,})"
    )
    for check, n in rej["check"].value_counts().items():
        print(f"  {check:<20} {n:>12,}")
    print(
        f"peak RSS               {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:>10.0f} MB"
    )


if __name__ == "__main__":
    main()
