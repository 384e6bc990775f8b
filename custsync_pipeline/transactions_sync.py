"""The transactions lane: extract a shop's orders incrementally, validate, link them to
golden records, store them, derive the ``order_history`` aspect, publish them.

``sync_transactions(engine, cfg, connectors)`` runs the whole lane once:

1. **extract** each ``transactions.sources`` connector from its watermark (``pulls`` of the
   customer lanes: the watermark moves only after the batch is stored; a full read when
   there is none or ``full=True``);
2. **validate** (``domain.transactions.validate_transactions``): failures go to the
   quarantine under the source's name, one row per transaction and field;
3. **link** through the identity map's keys (``link_transactions``) and **store**
   (bulk, keyed by source + transaction id, with a content hash);
4. **order history**: recomputed for the golden records the batch touched;
5. **publish** to each ``transactions.publish`` target the linked transactions whose
   (id, hash) the target's ledger does not hold: Voyado receipts (one a request, matched
   by the contact's id, receipts cannot be updated: sent once), Salesforce ``Purchase__c``
   (composite upsert of 200 by ``Transaction_Id__c``, lookup ``Contact__c``), Voucherify
   orders (``POST /v1/orders`` upserted by ``source_id``). A transaction whose golden
   record has no member in the target is held (counted, not in the ledger) until it has.

Every transaction keeps its store code, channel and timestamps in every target.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from custsync_pipeline.connectors.http import ConnectorError, auth_failure_status
from custsync_pipeline.domain.transactions import (
    key_holders,
    link_transactions,
    order_history,
    transaction_hash,
    validate_transactions,
)
from custsync_pipeline.store import core
from custsync_pipeline.store import transactions as tx_store
from custsync_pipeline.store.identity import identity_map
from custsync_pipeline.store.quarantine import record_quarantine

RECEIPT_BATCH = 1  # Voyado POST /api/v2/receipts: one receipt a request
PURCHASE_BATCH = 200  # Salesforce composite/sobjects
ORDER_BATCH = 1  # Voucherify POST /v1/orders: one order a request
KIND_BATCH = {"receipts": RECEIPT_BATCH, "purchases": PURCHASE_BATCH, "orders": ORDER_BATCH}
# which connector type takes which kind of transaction write
KIND_OF_TYPE = {"voyado": "receipts", "salesforce": "purchases", "voucherify": "orders"}


def watermark_key(source: str) -> str:
    return f"{source}/transactions"


# ----------------------------------------------------------------------------- linking keys


def identity_keys(engine: Engine) -> pd.DataFrame:
    """Every normalized e-mail and phone of every source record, with its golden id."""
    sr, im = core.source_records, identity_map
    stmt = sa.select(sr.c.email, sr.c.phone, im.c.golden_id).join(
        im, sa.and_(im.c.connector == sr.c.connector, im.c.source_id == sr.c.source_id)
    )
    with engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(stmt).fetchall(), columns=["email", "phone", "golden_id"])
    long = frame.melt(id_vars="golden_id", var_name="key_type", value_name="value")
    return long.dropna(subset=["value"])


def blocked_keys(cfg: Any) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """key type -> (blocked values, blocked patterns) of the identity rules on that column."""
    out: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for rule in cfg.identity.identifiers:
        for col in rule.columns:
            if col in ("email", "phone"):
                vals, pats = out.get(col, ((), ()))
                out[col] = (vals + tuple(rule.blocked_values), pats + tuple(rule.blocked_patterns))
    return out


def members(engine: Engine, target: str, contacts_only: bool = False) -> pd.Series:
    """golden id -> its record's id in ``target`` (the first, when there are several)."""
    stmt = sa.select(identity_map.c.golden_id, identity_map.c.source_id).where(
        identity_map.c.connector == target
    )
    with engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(stmt).fetchall(), columns=["golden_id", "source_id"])
    if contacts_only:  # Salesforce: a Purchase__c looks up a Contact (ids 003…)
        frame = frame[frame["source_id"].str.startswith("003")]
    frame = frame.sort_values(["golden_id", "source_id"]).drop_duplicates("golden_id")
    return frame.set_index("golden_id")["source_id"]


# ----------------------------------------------------------------------------- extract + link


def extract_source(
    engine: Engine, cfg: Any, name: str, connector: Any, full: bool = False
) -> dict[str, Any]:
    """Read, validate, link and store one source's transactions; move its watermark."""
    tx_store.create_tables(engine)
    since = None if full else core.get_watermark(engine, watermark_key(name))
    result = connector.read(since=since)
    frame = connector.to_transactions(result.records)
    valid, rejected = validate_transactions(frame)
    record_quarantine(
        engine, name, rejected, valid["transaction_id"].astype(str), partial=since is not None
    )
    holders = key_holders(identity_keys(engine))
    linked = link_transactions(valid, holders, blocked_keys(cfg))
    linked["tx_hash"] = transaction_hash(linked).to_numpy()
    linked["stored_at"] = pd.Timestamp.now(tz="UTC")
    stored = tx_store.upsert_transactions(engine, linked)
    if result.watermark is not None:  # only after the batch is stored
        core.set_watermark(engine, watermark_key(name), result.watermark)
    touched = linked["golden_id"].dropna().unique().tolist()
    refresh_order_history(engine, touched)
    rules = linked["link_rule"].value_counts().to_dict()
    return {
        "read": int(len(result.records)),
        "requests": result.stats.requests,
        "rejected": int(rejected["source_id"].nunique()) if len(rejected) else 0,
        "stored": stored,
        "linked": int(linked["golden_id"].notna().sum()),
        "link_rules": {str(k): int(v) for k, v in rules.items()},
        "mode": "full" if since is None else "incremental",
    }


def relink(engine: Engine, cfg: Any) -> int:
    """Link every stored transaction again (after identity changed); returns links changed."""
    tx_store.create_tables(engine)
    stored = tx_store.load_transactions(engine)
    if stored.empty:
        return 0
    holders = key_holders(identity_keys(engine))
    fresh = link_transactions(
        stored.drop(columns=["golden_id", "link_rule"]), holders, blocked_keys(cfg)
    )
    changed = (fresh["golden_id"].fillna("") != stored["golden_id"].fillna("")) | (
        fresh["link_rule"] != stored["link_rule"]
    )
    if changed.any():
        tx_store.upsert_transactions(engine, fresh[changed])
        touched = set(stored.loc[changed, "golden_id"].dropna()) | set(
            fresh.loc[changed, "golden_id"].dropna()
        )
        refresh_order_history(engine, touched)
    return int(changed.sum())


def refresh_order_history(engine: Engine, golden_ids: Any) -> int:
    ids = sorted(set(golden_ids))
    if not ids:
        return 0
    history = order_history(tx_store.load_transactions(engine, ids))
    return tx_store.replace_order_history(engine, ids, history)


# ----------------------------------------------------------------------------- payloads


def _lines(tx: pd.DataFrame) -> list[list[dict]]:
    return [json.loads(s) for s in tx["lines"]]


def _iso(values: pd.Series) -> list[str]:
    ts = pd.to_datetime(values, utc=True)
    return ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3].add("Z").tolist()


def receipt_payloads(tx: pd.DataFrame, contact_ids: pd.Series) -> list[dict]:
    """Voyado receipts, matched by the contact's id, keyed by ``source:transaction_id``."""
    created = _iso(tx["ordered_at"])
    out = []
    for row, lines, cid, when in zip(
        tx.itertuples(index=False), _lines(tx), contact_ids, created, strict=True
    ):
        out.append(
            {
                "contact": {"matchKey": cid, "matchKeyType": "ContactId"},
                "uniqueReceiptId": f"{row.source}:{row.transaction_id}",
                "receiptNumber": row.number,
                "createdDate": when,
                "storeExternalId": row.store_code,
                "currency": row.currency,
                "totalGrossPrice": float(row.total),
                "extraData": {"channel": row.channel, "status": row.status},
                "items": [
                    {
                        "type": "RETURN" if row.status == "returned" else "PURCHASE",
                        "sku": line.get("sku"),
                        "quantity": line.get("quantity"),
                        "grossPaidPrice": line.get("line_total"),
                        "description": line.get("name"),
                    }
                    for line in lines
                ],
            }
        )
    return out


def purchase_records(tx: pd.DataFrame, contact_ids: pd.Series) -> list[dict]:
    """Salesforce ``Purchase__c`` records, upserted by ``Transaction_Id__c``."""
    ordered = pd.to_datetime(tx["ordered_at"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    frame = pd.DataFrame(
        {
            "Transaction_Id__c": (tx["source"] + ":" + tx["transaction_id"]).to_numpy(),
            "Name": tx["number"].to_numpy(),
            "Contact__c": contact_ids.to_numpy(),
            "Order_Number__c": tx["number"].to_numpy(),
            "Status__c": tx["status"].to_numpy(),
            "Channel__c": tx["channel"].to_numpy(),
            "Store_Code__c": tx["store_code"].to_numpy(),
            "Currency__c": tx["currency"].to_numpy(),
            "Amount__c": pd.to_numeric(tx["total"]).to_numpy(),
            "Ordered_At__c": ordered.to_numpy(),
            "Line_Count__c": tx["line_count"].astype(int).to_numpy(),
            "Lines__c": tx["lines"].str.slice(0, 32000).to_numpy(),
        }
    )
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [{"attributes": {"type": "Purchase__c"}, **r} for r in records]


def order_payloads(tx: pd.DataFrame, customer_ids: pd.Series) -> list[dict]:
    """Voucherify orders upserted by ``source_id``; amounts in the minor unit."""
    when = _iso(tx["ordered_at"])
    status = tx["status"].map(
        {"completed": "PAID", "returned": "CANCELED", "cancelled": "CANCELED"}
    )
    out = []
    for row, lines, cid, at, st in zip(
        tx.itertuples(index=False), _lines(tx), customer_ids, when, status, strict=True
    ):
        out.append(
            {
                "source_id": f"{row.source}:{row.transaction_id}",
                "status": st or "CREATED",
                "amount": int(round(float(row.total) * 100)),
                "customer": {"id": cid},
                "items": [
                    {
                        "source_id": line.get("sku"),
                        "related_object": "product",
                        "quantity": int(line.get("quantity") or 0),
                        "price": int(round(float(line.get("unit_price") or 0) * 100)),
                        "amount": int(round(float(line.get("line_total") or 0) * 100)),
                        "product": {"name": line.get("name")},  # no override: not stored
                    }
                    for line in lines
                ],
                "metadata": {
                    "store_code": row.store_code,
                    "channel": row.channel,
                    "currency": row.currency,
                    "ordered_at": at,
                    "order_number": row.number,
                },
            }
        )
    return out


# ----------------------------------------------------------------------------- sending


def _send_one(
    connector: Any, method: str, path: str, body: dict, probe: bool = False
) -> tuple[bool, str | None, str | None]:
    try:
        resp = connector.http.request(method, path, json=body)
    except ConnectorError as exc:
        if probe and auth_failure_status(str(exc)) is not None:
            raise  # the target refuses custsync's credential: no verdict on this one
        return False, None, str(exc)
    try:
        answer = resp.json()
    except ValueError:
        answer = {}
    target_id = answer.get("contactId") or answer.get("id") if isinstance(answer, dict) else None
    return True, target_id, None


# transactions tried one by one at the head of a run's sends: refused for the credential
# every one, the target is taken to refuse custsync's key
PROBE = 20


def _probe(
    connector: Any, method: str, path: str, bodies: list[dict]
) -> list[tuple[bool, str | None, str | None]]:
    """The first transactions, one at a time, until one is not refused for the credential
    (or ``PROBE`` were): refused every one, it raises the first refusal; otherwise the ones
    refused before are theirs (a store the key may not touch), recorded failed, and a run
    of such transactions never holds every other back."""
    outcomes: list[tuple[bool, str | None, str | None]] = []
    first: ConnectorError | None = None
    for body in bodies[:PROBE]:
        try:
            outcomes.append(_send_one(connector, method, path, body, probe=True))
            return outcomes
        except ConnectorError as exc:
            first = first or exc
            outcomes.append((False, None, str(exc)))
    if first is not None:
        raise first
    return outcomes


def send(
    kind: str, connector: Any, tx: pd.DataFrame, ids: pd.Series, concurrency: int = 4
) -> pd.DataFrame:
    """Send ``tx`` (with member ids ``ids``) as ``kind``; one outcome row per transaction.
    The first requests go one at a time (``_probe``): refused for custsync's credential
    (401/403, or the token fetch's 4xx) every one, it raises that ``ConnectorError`` and
    nothing more is sent or recorded — every transaction would be refused alike, and none
    of them is at fault."""
    ok: list[bool] = []
    target_ids: list[str | None] = []
    errors: list[str | None] = []
    if kind == "purchases":
        records = purchase_records(tx, ids)
        path = f"{connector.api}/composite/sobjects/Purchase__c/Transaction_Id__c"
        for start in range(0, len(records), PURCHASE_BATCH):
            chunk = records[start : start + PURCHASE_BATCH]
            try:
                answer = connector.http.request(
                    "PATCH", path, json={"allOrNone": False, "records": chunk}
                ).json()
            except ConnectorError as exc:
                if start == 0 and auth_failure_status(str(exc)) is not None:
                    raise
                ok += [False] * len(chunk)
                target_ids += [None] * len(chunk)
                errors += [str(exc)] * len(chunk)
                continue
            for r in answer:
                ok.append(bool(r.get("success")))
                target_ids.append(r.get("id"))
                errs = r.get("errors") or []
                errors.append(
                    None
                    if r.get("success")
                    else "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in errs)
                )
    else:
        if kind == "receipts":
            bodies, method, path = receipt_payloads(tx, ids), "POST", "/api/v2/receipts"
        else:
            bodies, method, path = order_payloads(tx, ids), "POST", "/v1/orders"
        outcomes = _probe(connector, method, path, bodies)
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            outcomes += pool.map(
                lambda b: _send_one(connector, method, path, b), bodies[len(outcomes) :]
            )
        for good, tid, err in outcomes:
            ok.append(good)
            target_ids.append(tid)
            errors.append(err)
    return pd.DataFrame(
        {
            "transaction_id": tx["transaction_id"].to_numpy(),
            "source": tx["source"].to_numpy(),
            "golden_id": tx["golden_id"].to_numpy(),
            "tx_hash": tx["tx_hash"].to_numpy(),
            "status": np.where(ok, "sent", "failed"),
            "target_id": target_ids,
            "error": errors,
            "sent_at": pd.Timestamp.now(tz="UTC"),
        }
    )


def publish_target(
    engine: Engine, target: str, kind: str, connector: Any, concurrency: int = 4
) -> dict[str, Any]:
    """Send what ``target``'s ledger does not hold; returns counts and the requests made."""
    tx_store.create_tables(engine)
    linked = tx_store.load_transactions(engine, linked_only=True)
    ledger = tx_store.load_ledger(engine, target)
    sent = ledger[ledger["status"] == "sent"]
    if kind == "receipts":  # a receipt cannot be updated: once sent, never again
        done = linked["transaction_id"].isin(set(sent["transaction_id"]))
    else:  # an upsert: sent again when its content changed
        key = sent["transaction_id"] + "|" + sent["tx_hash"]
        done = (linked["transaction_id"] + "|" + linked["tx_hash"]).isin(set(key))
    todo = linked[~done]
    ids = members(engine, target, contacts_only=kind == "purchases")
    member = todo["golden_id"].map(ids)
    held = int(member.isna().sum())
    todo, member = todo[member.notna()], member[member.notna()]
    req0 = connector.http.counters.requests
    outcome = send(
        kind, connector, todo.reset_index(drop=True), member.reset_index(drop=True), concurrency
    )
    tx_store.record_ledger(engine, target, outcome)
    return {
        "kind": kind,
        "sent": int((outcome["status"] == "sent").sum()),
        "failed": int((outcome["status"] == "failed").sum()),
        "held_no_member": held,
        "already_sent": int(done.sum()),
        "requests": connector.http.counters.requests - req0,
        "expected_requests": math.ceil(len(todo) / KIND_BATCH[kind]) if len(todo) else 0,
    }


def sync_transactions(
    engine: Engine,
    cfg: Any,
    connectors: Mapping[str, Any],
    full: bool = False,
    broken: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The whole lane once, per ``cfg.transactions``; returns per-step counts.

    A connector that could not be built (``broken``: its credential missing, with why) or
    a source whose read fails (a ``ConnectorError``) is named in ``out["failed"]`` and the
    others go on: orders already stored are linked and sent to the targets that answer. A
    target that refuses custsync's credential is named there too, after one request (its
    transactions are not counted failed, and go out once it takes the credential); one that
    refuses some transactions counts them (``failed``), sent again next run."""
    from custsync_pipeline.connectors.http import ConnectorError

    section = cfg.transactions
    out: dict[str, Any] = {"sources": {}, "targets": {}, "failed": dict(broken or {})}
    for name in section.sources:
        if name in out["failed"]:
            continue
        try:
            out["sources"][name] = extract_source(engine, cfg, name, connectors[name], full=full)
        except ConnectorError as exc:
            out["failed"][name] = str(exc)
    out["relinked"] = relink(engine, cfg)
    for target in section.publish:
        if target.connector in out["failed"]:
            continue
        kind = KIND_OF_TYPE[cfg.connectors[target.connector].type]
        try:
            out["targets"][target.connector] = publish_target(
                engine, target.connector, kind, connectors[target.connector], target.concurrency
            )
        except ConnectorError as exc:
            status = auth_failure_status(str(exc))
            out["failed"][target.connector] = (
                str(exc)
                if status is None
                else f"not authorized (HTTP {status}): its {kind} wait unsent, none counted "
                f"failed, until it takes custsync's credential ({exc})"
            )
    return out
