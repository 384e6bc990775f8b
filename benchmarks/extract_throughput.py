"""Extraction throughput per connector from the sandbox: records/s at N customers (default 100k).

Starts the sandbox on ephemeral ports, reads every system once through its
connector (full snapshot, client-side rate limits off: the sandbox is local),
maps the records to the canonical model, and prints a table. Run:

    PYTHONPATH=. python benchmarks/extract_throughput.py --people 100000

The figures measure this client + the stdlib emulators on one machine; real
APIs are bounded by their own limits (Exact Online 60 calls/minute, Voyado
50 req/s, Salesforce's daily quota), which the connectors obey by default.
"""

from __future__ import annotations

import argparse
import time

from custsync_pipeline.config import ConnectorConfig
from custsync_pipeline.connectors import build_connector
from custsync_pipeline.sandbox import CREDENTIALS, Sandbox

NO_LIMIT = {"rate_per_s": None}

KATANA = {
    "type": "rest",
    "credentials": {"api_key": "KATANA_API_KEY"},
    "options": {
        "path": "/api/v1/customers",
        "records_path": "data",
        "id_field": "id",
        "updated_field": "updated_at",
        "paging": {
            "type": "next_link",
            "next_path": "links.next",
            "size_param": "per_page",
            "page_size": 200,
        },
        "auth": {"type": "api_key", "header": "X-Api-Key"},
        "mapping": {
            "id": "katana_id",
            "first_name": "first_name",
            "last_name": "last_name",
            "email": "email",
            "phone": "phone",
            "country": "country",
            "customer_number": "customer_number",
        },
    },
}

RUNS: list[tuple[str, str, dict]] = [
    (
        "salesforce",
        "salesforce",
        {
            "type": "salesforce",
            "credentials": {"access_token": "SALESFORCE_ACCESS_TOKEN"},
            "options": {"objects": ["Contact", "Account", "Lead"]},
        },
    ),
    (
        "voucherify",
        "voucherify",
        {
            "type": "voucherify",
            "credentials": {"app_id": "VOUCHERIFY_APP_ID", "app_token": "VOUCHERIFY_APP_TOKEN"},
            "options": {},
        },
    ),
    (
        "voyado (listing)",
        "voyado",
        {
            "type": "voyado",
            "credentials": {"api_key": "VOYADO_API_KEY"},
            "options": {"read_mode": "listing"},
        },
    ),
    (
        "voyado (change feed)",
        "voyado",
        {
            "type": "voyado",
            "credentials": {"api_key": "VOYADO_API_KEY"},
            "options": {"read_mode": "change_feed", "concurrency": 16},
        },
    ),
    (
        "exact",
        "exact",
        {
            "type": "exact",
            "credentials": {"access_token": "EXACT_ACCESS_TOKEN"},
            "options": {"division": 1, "resources": ["Accounts", "Contacts"]},
        },
    ),
    (
        "icomm",
        "icomm",
        {"type": "icomm", "credentials": {"api_key": "ICOMM_API_KEY"}, "options": {}},
    ),
    ("katana (rest)", "katana", KATANA),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--only", nargs="*", help="labels to run (e.g. salesforce exact); default all"
    )
    args = parser.parse_args()
    t0 = time.perf_counter()
    with Sandbox(seed=args.seed, people=args.people, base_port=0) as sb:
        print(
            f"sandbox: {args.people:,} people generated and served in {time.perf_counter() - t0:.1f}s"
        )
        header = (
            f"{'connector':<22}{'records':>10}{'pages':>8}{'requests':>10}"
            f"{'read s':>9}{'rec/s':>10}{'map s':>8}"
        )
        print(header)
        print("-" * len(header))
        for label, system, spec in RUNS:
            if args.only and not any(label.startswith(o) for o in args.only):
                continue
            spec = {**spec, "options": {**spec["options"], "http": NO_LIMIT}}
            cfg = ConnectorConfig(base_url=sb.urls[system], **spec)
            conn = build_connector(system, cfg, dict(CREDENTIALS))
            start = time.perf_counter()
            result = conn.read()
            read_s = time.perf_counter() - start
            start = time.perf_counter()
            canon = conn.to_canonical(result.records)
            map_s = time.perf_counter() - start
            n = len(canon)
            print(
                f"{label:<22}{n:>10,}{result.stats.pages:>8,}{result.stats.requests:>10,}"
                f"{read_s:>9.1f}{n / read_s:>10,.0f}{map_s:>8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
