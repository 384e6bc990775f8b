"""``custsync sandbox``: serve every emulated API in the foreground until SIGINT/SIGTERM.

Also reachable as ``python -m custsync_pipeline.sandbox``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from .server import CREDENTIALS, Sandbox


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-port",
        type=int,
        default=8701,
        help="salesforce=base, voucherify=+1, voyado=+2, exact=+3, icomm=+4, katana=+5, "
        "shop=+6; 0 = ephemeral",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--people", type=int, default=500)
    parser.add_argument("--systems", default=None, help="comma-separated subset (default: all)")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="share of API requests answered 429 (half) or 503 (half)",
    )
    parser.add_argument("--rate-429", type=float, default=None)
    parser.add_argument("--rate-5xx", type=float, default=None)
    parser.add_argument("--slow-rate", type=float, default=0.0)
    parser.add_argument("--slow-seconds", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument(
        "--malformed-pages", type=int, default=0, help="truncate the next N GET answers per system"
    )
    parser.add_argument(
        "--edit",
        type=int,
        default=0,
        help="at start: edit N records per system (fresh change times)",
    )
    parser.add_argument(
        "--delete", type=int, default=0, help="at start: delete M records per system (in the feeds)"
    )
    parser.add_argument("--add", type=int, default=0, help="at start: add K records per system")
    parser.add_argument(
        "--tls",
        default="",
        help="comma-separated systems to serve over HTTPS with a self-signed certificate "
        "(e.g. salesforce, for simple_salesforce), or 'all'",
    )
    parser.add_argument(
        "--page-size", type=int, default=None, help="Salesforce query page size (default 2000)"
    )


def faults_from_args(args: argparse.Namespace) -> dict[str, Any]:
    half = args.fault_rate / 2
    return {
        "rate_429": args.rate_429 if args.rate_429 is not None else half,
        "rate_5xx": args.rate_5xx if args.rate_5xx is not None else half,
        "slow_rate": args.slow_rate,
        "slow_seconds": args.slow_seconds,
        "retry_after": args.retry_after,
        "malformed_pages": args.malformed_pages,
    }


def changes_from_args(args: argparse.Namespace) -> dict[str, int]:
    """``--edit/--delete/--add`` as the Sandbox's ``changes`` (empty when all are 0)."""
    spec = {"edit": args.edit, "delete": args.delete, "add": args.add}
    return spec if any(spec.values()) else {}


def run(args: argparse.Namespace) -> int:
    systems = args.systems.split(",") if args.systems else None
    options = {"salesforce": {"page_size": args.page_size}} if args.page_size else {}
    sandbox = Sandbox(
        seed=args.seed,
        people=args.people,
        host=args.host,
        base_port=args.base_port,
        systems=systems,
        faults=faults_from_args(args),
        options=options,
        changes=changes_from_args(args),
        tls=True if args.tls == "all" else [t for t in args.tls.split(",") if t],
    )
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    with sandbox:
        data = sandbox.data
        print(
            f"custsync sandbox: seed={args.seed} people={args.people} records={data.source_records()}",
            flush=True,
        )
        for system, url in sandbox.urls.items():
            print(f"  {system:<11} {url}  ({len(sandbox.records(system))} records)", flush=True)
        for system, touched in sandbox.start_changes.items():
            counts = ", ".join(f"{len(ids)} {kind}" for kind, ids in touched.items())
            print(f"  changes at start, {system}: {counts}", flush=True)
        print("credentials (env var: accepted value unless the env var is set):", flush=True)
        for name, value in CREDENTIALS.items():
            print(f"  {name}={value}", flush=True)
        if sandbox.ca_file:
            print(f"TLS certificate to trust (requests verify=...): {sandbox.ca_file}", flush=True)
        print(
            "admin: GET /_sandbox/truth|records|defects|stats, POST /_sandbox/faults|changes|reset on every port",
            flush=True,
        )
        print("READY " + json.dumps(sandbox.urls), flush=True)
        stop.wait()
    print("custsync sandbox stopped", flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sandbox", help="serve the emulated vendor APIs on localhost")
    add_arguments(parser)
    parser.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m custsync_pipeline.sandbox", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
