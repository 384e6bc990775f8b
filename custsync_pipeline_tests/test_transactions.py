"""Transactions (issue 12 items 1-2): shop orders extracted, validated, linked to golden
records and sent as Voyado receipts, Salesforce Purchase__c and Voucherify orders, over
real sockets against the sandbox; the order_history aspect; replays send nothing."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest
import requests
import sqlalchemy as sa

from custsync_pipeline.cli_golden import format_order_history
from custsync_pipeline.domain.transactions import (
    key_holders,
    link_transactions,
    order_history,
    validate_transactions,
)
from custsync_pipeline.sandbox import Sandbox
from custsync_pipeline.sandbox.transactions import voucherify_orders, voyado_receipts
from custsync_pipeline.store.db import make_engine
from custsync_pipeline.store.identity import identity_map
from custsync_pipeline.store.transactions import load_order_history, load_transactions
from custsync_pipeline_tests.e2e import materialize_all, metadata_of, run_against_sandbox

SF = {"Authorization": "Bearer sandbox-salesforce-token"}
VF = {"X-App-Id": "sandbox-app-id", "X-App-Token": "sandbox-app-token"}


def _tx(**kw) -> pd.DataFrame:
    base = {
        "source": "shop", "transaction_id": "T1", "number": "N1", "status": "completed",
        "channel": "pos", "store_code": "SE01", "currency": "SEK", "total": 10.0,
        "ordered_at": pd.Timestamp("2025-01-01", tz="UTC"),
        "updated_at": pd.Timestamp("2025-01-01", tz="UTC"), "email": None, "phone": None,
        "member_number": None, "guest": True, "line_count": 1, "lines": "[]",
        "min_quantity": 1.0, "lines_total": 10.0,
    }  # fmt: skip
    return pd.DataFrame([{**base, **r} for r in kw.get("rows", [{}])])


def test_linking_rules_and_quarantine() -> None:
    keys = pd.DataFrame(
        {
            "key_type": ["email", "email", "email", "phone"],
            "value": ["a@x.se", "fam@x.se", "fam@x.se", "+46701234567"],
            "golden_id": ["G1", "G2", "G3", "G3"],
        }
    )
    tx = _tx(
        rows=[
            {"transaction_id": "guest", "email": " A@X.se "},
            {"transaction_id": "family", "email": "fam@x.se"},
            {"transaction_id": "family+phone", "email": "fam@x.se", "phone": "+46701234567"},
            {"transaction_id": "anon"},
            {"transaction_id": "placeholder", "email": "none@none.com"},
            {"transaction_id": "stranger", "email": "z@x.se"},
        ]
    )
    out = link_transactions(tx, key_holders(keys), {"email": (("none@none.com",), ())}).set_index(
        "transaction_id"
    )
    assert out.loc["guest", "golden_id"] == "G1" and out.loc["guest", "link_rule"] == "email"
    assert pd.isna(out.loc["family", "golden_id"])
    assert out.loc["family", "link_rule"] == "ambiguous:email"
    assert out.loc["family+phone", "golden_id"] == "G3"  # the phone names one of the family
    assert out.loc["anon", "link_rule"] == "no_keys"
    assert out.loc["placeholder", "link_rule"] == "blocked:email"
    assert out.loc["stranger", "link_rule"] == "unknown"

    bad = _tx(
        rows=[
            {"transaction_id": "ok"},
            {"transaction_id": "cur", "currency": "XXX"},
            {"transaction_id": "qty", "min_quantity": 0.0},
            {"transaction_id": "when", "ordered_at": None},
            {"transaction_id": "tot", "total": 5.0},
        ]
    )
    valid, rejected = validate_transactions(bad)
    assert valid["transaction_id"].tolist() == ["ok"]
    by_id = rejected.set_index("source_id")
    assert by_id.loc["cur", "field"] == "currency"
    assert by_id.loc["qty", "field"] == "lines.quantity"
    assert by_id.loc["when", "field"] == "ordered_at"
    assert by_id.loc["cur", "reason"] == (
        "transaction cur: currency is not a supported ISO 4217 currency code"
    )
    assert by_id.loc["tot", "field"] == "total" and len(rejected) == 4
    assert by_id.loc["when", "reason"] == "transaction when: ordered_at is required but missing"

    linked = out.reset_index().assign(
        total=[10.0, 20.0, 30.0, 40.0, 50.0, 60.0],
        ordered_at=pd.to_datetime(
            ["2025-01-01", "2025-02-01", "2025-03-01", "2025-01-01", "2025-01-01", "2025-01-01"],
            utc=True,
        ),
    )
    hist = order_history(linked).set_index("golden_id")
    assert hist.loc["G1", "orders_count"] == 1 and hist.loc["G1", "total_spend"] == 10.0
    assert hist.loc["G3", "source"] == "shop"


def _goldens_of(engine, source_ids: list[str]) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(identity_map.c.golden_id).where(identity_map.c.source_id.in_(source_ids))
        ).fetchall()
    return {r[0] for r in rows}


def test_purchase_reaches_voyado_salesforce_voucherify_once(dagster_env, tmp_path) -> None:
    with Sandbox(seed=7, people=150) as sb:
        data = sb.data
        truth = sb.truth()
        people = data.people.set_index("person_id")
        in_all = set.intersection(
            *(
                set(truth.loc[truth["system"] == s, "person_id"])
                for s in ("salesforce", "voyado", "voucherify")
            )
        )
        sf_contacts = {r["Id"]: r for r in sb.records("salesforce")}
        buyer = next(
            p
            for p in sorted(in_all)
            if people.loc[p, "shared_email"] == ""
            and any(
                sf_contacts.get(s, {}).get("Email") == people.loc[p, "email"]
                for s in truth.loc[
                    (truth["person_id"] == p) & (truth["system"] == "salesforce"), "source_id"
                ]
            )
        )
        email = people.loc[buyer, "email"]
        family = people[people["shared_email"] == "family"]
        fam_email = family["email"].iloc[0]
        shop = sb.emulators["shop"]
        shop.add_order({"email": email.upper(), "guest": True}, store_code="SE02", channel="web",
                       currency="SEK", order_id="SN-GUEST-1")  # fmt: skip
        shop.add_order({"email": fam_email, "guest": True}, order_id="SN-FAMILY-1")
        shop.add_order({"email": email}, currency="XXX", order_id="SN-BAD-1")  # quarantined

        db_url, _ = run_against_sandbox(dagster_env, tmp_path, sb.urls)
        instance = dg.DagsterInstance.ephemeral()
        first = materialize_all(instance)
        meta = metadata_of(first, "transactions")
        engine = make_engine(db_url)

        # the guest purchase lands on the buyer's golden record, the family one on nobody
        stored = load_transactions(engine).set_index("transaction_id")
        buyer_ids = truth.loc[truth["person_id"] == buyer, "source_id"].tolist()
        golden = _goldens_of(engine, buyer_ids)
        assert len(golden) == 1
        (gid,) = golden
        assert stored.loc["SN-GUEST-1", "golden_id"] == gid
        assert stored.loc["SN-GUEST-1", "link_rule"] == "email"
        fam_people = family.index[family["email"] == fam_email].tolist()
        fam_goldens = _goldens_of(
            engine, truth.loc[truth["person_id"].isin(fam_people), "source_id"].tolist()
        )
        if len(fam_goldens) > 1:  # two people's records: no person picked
            assert pd.isna(stored.loc["SN-FAMILY-1", "golden_id"])
            assert stored.loc["SN-FAMILY-1", "link_rule"] == "ambiguous:email"
        else:  # identity made them one household record: that one
            assert stored.loc["SN-FAMILY-1", "golden_id"] in fam_goldens
        # broken orders are quarantined, not stored
        assert meta["shop_rejected"] == len(shop.defect_rows) + 1
        assert not set(stored.index) & {"SN-BAD-1", *(d["source_id"] for d in shop.defect_rows)}
        with engine.connect() as conn:
            reason = conn.execute(
                sa.text(
                    "SELECT reason FROM quarantine WHERE connector = 'shop' AND source_id = 'SN-BAD-1'"
                )
            ).scalar()
        assert reason == "transaction SN-BAD-1: currency is not a supported ISO 4217 currency code"

        # Voyado: one receipt, on the buyer's contact, with store, channel and time
        receipts = voyado_receipts(sb.emulators["voyado"]).by_id
        receipt = receipts["shop:SN-GUEST-1"]
        voyado_ids = set(
            truth.loc[(truth["person_id"] == buyer) & (truth["system"] == "voyado"), "source_id"]
        )
        assert receipt["contactId"] in voyado_ids
        assert receipt["storeExternalId"] == "SE02" and receipt["extraData"]["channel"] == "web"
        assert receipt["createdDate"].startswith(
            stored.loc["SN-GUEST-1", "ordered_at"].strftime("%Y-%m-%dT%H:%M")
        )

        # Salesforce: a Purchase__c under the buyer's Contact
        q = "SELECT Id, Contact__c, Store_Code__c, Channel__c, Ordered_At__c FROM Purchase__c WHERE Transaction_Id__c = 'shop:SN-GUEST-1'"
        rows = requests.get(
            f"{sb.urls['salesforce']}/services/data/v60.0/query",
            params={"q": q},
            headers=SF,
            timeout=10,
        ).json()["records"]
        assert len(rows) == 1
        assert rows[0]["Contact__c"] in set(
            truth.loc[
                (truth["person_id"] == buyer) & (truth["system"] == "salesforce"), "source_id"
            ]
        )
        assert rows[0]["Store_Code__c"] == "SE02" and rows[0]["Channel__c"] == "web"

        # Voucherify: an order upserted by source_id, on the buyer's customer
        order = requests.get(
            f"{sb.urls['voucherify']}/v1/orders/shop:SN-GUEST-1", headers=VF, timeout=10
        ).json()
        vf_ids = set(
            truth.loc[
                (truth["person_id"] == buyer) & (truth["system"] == "voucherify"), "source_id"
            ]
        )
        assert order["customer"]["id"] in vf_ids
        assert order["metadata"]["store_code"] == "SE02" and order["metadata"]["channel"] == "web"
        assert order["amount"] == 12900

        # order history on the golden record, with provenance
        hist = load_order_history(engine, gid)
        assert len(hist) >= 1 and (hist["orders_count"] >= 1).all()
        assert "SN-GUEST-1" in hist.loc[hist["currency"] == "SEK", "transactions"].iloc[0]
        shown = format_order_history(engine, gid)  # what `custsync explain` prints
        assert "order_history (" in shown and "SEK:" in shown and "from shop" in shown

        # a replay of the same run sends nothing twice (what it sends is only what was held
        # back: golden records that got a member in the target through the first run)
        second = materialize_all(instance)
        meta2 = metadata_of(second, "transactions")
        vr = voyado_receipts(sb.emulators["voyado"])
        orders = voucherify_orders(sb.emulators["voucherify"]).by_id
        purchases = sb.records("salesforce", "Purchase__c")
        for target, stored_n in (
            ("voyado", len(vr.by_id)),
            ("voucherify", len(orders)),
            ("salesforce", len(purchases)),
        ):
            assert meta2[f"{target}_already_sent"] == meta[f"{target}_sent"]
            assert stored_n == meta[f"{target}_sent"] + meta2[f"{target}_sent"]
            assert meta2[f"{target}_failed"] == 0
        assert vr.duplicates == 0  # no receipt id came twice
        assert all(o["updated_at"] is None for o in orders.values())  # no order re-upserted
        assert len({p["Transaction_Id__c"] for p in purchases}) == len(purchases)
        assert meta2["voyado_requests"] == meta2["voyado_sent"]  # one receipt a request
        assert meta2["salesforce_requests"] == -(-meta2["salesforce_sent"] // 200)
        third = metadata_of(materialize_all(instance), "transactions")
        assert third["voyado_sent"] == third["voucherify_sent"] == third["salesforce_sent"] == 0


@pytest.mark.parametrize("kind", ["receipt", "order"])
def test_sandbox_targets_dedupe_by_key(kind: str) -> None:
    with Sandbox(seed=3, people=30, systems=["voyado", "voucherify"]) as sb:
        if kind == "receipt":
            contact = sb.records("voyado")[0]
            body = {
                "contact": {"matchKey": contact["id"], "matchKeyType": "ContactId"},
                "uniqueReceiptId": "r-1", "createdDate": "2025-01-01T10:00:00Z",
                "storeExternalId": "SE01", "currency": "SEK",
                "items": [{"type": "PURCHASE", "sku": "A", "quantity": 1, "grossPaidPrice": 5}],
            }  # fmt: skip
            h = {"apikey": "sandbox-voyado-key", "Content-Type": "application/json"}
            url = f"{sb.urls['voyado']}/api/v2/receipts"
            assert requests.post(url, json=body, headers=h, timeout=10).status_code == 202
            assert requests.post(url, json=body, headers=h, timeout=10).status_code == 202
            assert len(voyado_receipts(sb.emulators["voyado"]).by_id) == 1
            missing = {
                **body,
                "uniqueReceiptId": "r-2",
                "contact": {"matchKey": "x", "matchKeyType": "Email"},
            }
            assert requests.post(url, json=missing, headers=h, timeout=10).status_code == 404
        else:
            cust = sb.records("voucherify")[0]
            body = {"source_id": "o-1", "customer": {"id": cust["id"]},
                    "items": [{"source_id": "A", "quantity": 1, "price": 500}]}  # fmt: skip
            url = f"{sb.urls['voucherify']}/v1/orders"
            a = requests.post(url, json=body, headers=VF, timeout=10).json()
            b = requests.post(url, json={**body, "status": "PAID"}, headers=VF, timeout=10).json()
            assert a["id"] == b["id"] and b["status"] == "PAID"
            assert len(voucherify_orders(sb.emulators["voucherify"]).by_id) == 1
            assert not voucherify_orders(sb.emulators["voucherify"]).products  # no override


def test_one_transaction_refused_first_does_not_hold_the_others_back() -> None:
    """The run's first transaction to a target goes alone: a 403 about that one (a store
    the key may not touch) is followed by a second; only when that is refused too is it the
    credential (nothing more sent)."""
    from custsync_pipeline.connectors.http import ConnectorError
    from custsync_pipeline.transactions_sync import _probe

    class Answer:
        def json(self) -> dict:
            return {"id": "r1"}

    class Http:
        def __init__(self, refuse: set[str]) -> None:
            self.refuse, self.sent = refuse, []

        def request(self, method: str, path: str, json: dict) -> Answer:
            self.sent.append(json["id"])
            if json["id"] in self.refuse:
                raise ConnectorError("voyado", f"{method} http://h{path} -> HTTP 403: Forbidden")
            return Answer()

    class Target:
        def __init__(self, refuse: set[str]) -> None:
            self.http = Http(refuse)

    bodies = [{"id": f"t{i}"} for i in range(1, 31)]
    # a run of refused ones (one store's, sent together) does not hold the others back
    some = Target({"t1", "t2", "t3"})
    got = _probe(some, "POST", "/api/v2/receipts", bodies)
    assert [ok for ok, _, _ in got] == [False, False, False, True]
    assert some.http.sent == ["t1", "t2", "t3", "t4"] and "HTTP 403" in got[0][2]
    every = Target({b["id"] for b in bodies})
    with pytest.raises(ConnectorError, match="HTTP 403"):
        _probe(every, "POST", "/api/v2/receipts", bodies)
    assert len(every.http.sent) == 20  # the probe, no more
    fine = Target(set())
    assert [ok for ok, _, _ in _probe(fine, "POST", "/x", bodies)] == [True]
