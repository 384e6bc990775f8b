"""Transactions at scale: N shop orders (default 100,000) extracted, validated, linked to
golden records and published as Voyado receipts, Salesforce ``Purchase__c`` and Voucherify
orders; the requests each target's emulator counted against ceil(sent / batch limit).

    PYTHONPATH=. python benchmarks/transactions.py --orders 100000 --people 20000

The identity state (source records' e-mails and phones, the identity map) is seeded from
the generator's truth (golden id = person id): the identity stage has its own benchmarks,
this one measures the transactions lane. Every person is in Voyado, Salesforce and
Voucherify and buys as a member or account holder (``buyers`` knob), no family or role
e-mails and no broken orders, so every order links and is sent. Client-side rate limits
are off (the sandbox is local); Voyado receipts and Voucherify orders are one a request
(their APIs take one), Salesforce composite upserts 200.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import requests

from custsync_pipeline.config import ConnectorConfig, default_identity
from custsync_pipeline.connectors import build_connector
from custsync_pipeline.sandbox import CREDENTIALS, Sandbox
from custsync_pipeline.sandbox.generator import generate
from custsync_pipeline.store import core
from custsync_pipeline.store import transactions as tx_store
from custsync_pipeline.store.bulk import insert_frame
from custsync_pipeline.store.db import StateDB
from custsync_pipeline.store.identity import identity_map
from custsync_pipeline.transactions_sync import (
    KIND_BATCH,
    extract_source,
    publish_target,
)

NO_LIMIT = {"http": {"rate_per_s": None, "pool_size": 16}}
TARGETS = {
    "voyado": ("receipts", {"api_key": "VOYADO_API_KEY"}),
    "salesforce": ("purchases", {"access_token": "SALESFORCE_ACCESS_TOKEN"}),
    "voucherify": ("orders", {"app_id": "VOUCHERIFY_APP_ID", "app_token": "VOUCHERIFY_APP_TOKEN"}),
}


def _data(args: argparse.Namespace):
    return generate(
        args.seed,
        args.people,
        membership={"voyado": 1.0, "salesforce": 1.0, "voucherify": 1.0},
        family_rate=0.0,
        role_rate=0.0,
        invalid_rate=0.0,
        systems=("salesforce", "voucherify", "voyado"),
    )


def _serve(args: argparse.Namespace, urls: mp.Queue, stop) -> None:  # noqa: ANN001
    """The sandbox in its own process: its threads do not share the client's GIL."""
    options = {"shop": {"orders": args.orders, "buyers": {"member": 0.5, "account": 0.5},
                        "broken_rate": 0.0}}  # fmt: skip
    with Sandbox(data=_data(args), systems=["shop", *TARGETS], options=options) as sb:
        urls.put(dict(sb.urls))
        stop.wait()


def _requests(url: str) -> int:
    return int(requests.get(f"{url}/_sandbox/stats", timeout=30).json()["requests"])


def seed_identity(engine, people: pd.DataFrame, urls: dict[str, str]) -> None:
    """Source records (e-mail, phone) and identity map rows from the generator's truth."""
    people = people.set_index("person_id")
    truth = pd.concat(
        [
            pd.DataFrame(requests.get(f"{urls[s]}/_sandbox/truth", timeout=60).json())
            for s in TARGETS
        ]
    )
    truth["golden_id"] = truth["person_id"]
    now = pd.Timestamp.now(tz="UTC")
    records = pd.DataFrame(
        {
            "connector": truth["system"].to_numpy(),
            "source_id": truth["source_id"].to_numpy(),
            "email": truth["person_id"].map(people["email"]).to_numpy(),
            "phone": truth["person_id"].map(people["phone"]).to_numpy(),
            "last_seen_at": now,
        }
    )
    imap = pd.DataFrame(
        {
            "connector": truth["system"].to_numpy(),
            "source_id": truth["source_id"].to_numpy(),
            "golden_id": truth["golden_id"].to_numpy(),
            "rule": "truth",
            "updated_at": now,
        }
    )
    with engine.begin() as conn:
        insert_frame(conn, core.source_records, records)
        insert_frame(conn, identity_map, imap)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=100_000)
    ap.add_argument("--people", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    t0 = time.perf_counter()
    people = _data(args).people
    urls_q: mp.Queue = mp.Queue()
    stop = mp.Event()
    server = mp.Process(target=_serve, args=(args, urls_q, stop), daemon=True)
    server.start()
    try:
        urls = urls_q.get(timeout=600)
        with tempfile.TemporaryDirectory(prefix="custsync-bench-tx-") as tmp:
            run(args, people, urls, tmp, t0)
    finally:
        stop.set()
        server.join(timeout=30)


def run(
    args: argparse.Namespace, people: pd.DataFrame, urls: dict[str, str], tmp: str, t0: float
) -> None:
    print(
        f"sandbox: {args.people:,} people, {args.orders:,} orders ({time.perf_counter() - t0:.1f} s)"
    )
    engine = StateDB(f"sqlite:///{Path(tmp) / 'state.sqlite'}").create_all().engine
    tx_store.create_tables(engine)
    seed_identity(engine, people, urls)
    env = dict(CREDENTIALS)
    cfg = SimpleNamespace(identity=default_identity())
    shop = build_connector(
        "shop",
        ConnectorConfig(
            type="shop",
            base_url=urls["shop"],
            credentials={"api_key": "SHOP_API_KEY"},
            role="transactions",
            options=NO_LIMIT,
        ),  # fmt: skip
        env,
    )
    t = time.perf_counter()
    ext = extract_source(engine, cfg, "shop", shop)
    t_ext = time.perf_counter() - t
    print(
        f"extract+validate+link+store: {ext['read']:,} read in {ext['requests']} requests, "
        f"{ext['rejected']} rejected, {ext['linked']:,} linked, {t_ext:.1f} s "
        f"({ext['read'] / t_ext:,.0f}/s)"
    )
    print(f"  link rules: {ext['link_rules']}")
    rows = []
    for target, (kind, creds) in TARGETS.items():
        opts = {**NO_LIMIT, "api_version": "60.0"} if target == "salesforce" else NO_LIMIT
        conn = build_connector(
            target,
            ConnectorConfig(
                type=target,
                base_url=urls[target],
                credentials=creds,
                role="target",
                options=opts,
            ),  # fmt: skip
            env,
        )
        before = _requests(urls[target])
        t = time.perf_counter()
        out = publish_target(engine, target, kind, conn, concurrency=args.concurrency)
        elapsed = time.perf_counter() - t
        counted = _requests(urls[target]) - before
        expected = math.ceil(out["sent"] / KIND_BATCH[kind])
        rows.append((target, kind, out["sent"], out["failed"], KIND_BATCH[kind], counted,
                     expected, elapsed))  # fmt: skip
        replay = publish_target(engine, target, kind, conn, concurrency=args.concurrency)
        assert replay["sent"] == 0 and replay["requests"] == 0, replay
    print()
    print(f"{'target':<11} {'kind':<10} {'sent':>8} {'failed':>6} {'batch':>5} "
          f"{'requests':>9} {'ceil(n/b)':>9} {'seconds':>8} {'per s':>8}")  # fmt: skip
    for target, kind, sent, failed, batch, counted, expected, elapsed in rows:
        print(
            f"{target:<11} {kind:<10} {sent:>8,} {failed:>6} {batch:>5} {counted:>9,} "
            f"{expected:>9,} {elapsed:>8.1f} {sent / elapsed:>8,.0f}"
        )
        assert counted == expected, (target, counted, expected)
    print("replay: 0 requests to every target (ledger by transaction id + hash)")
    print(f"total: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
