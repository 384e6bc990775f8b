"""Web shop / POS emulator: orders with lines, store, channel, currency and the buyer's keys.

No public API is copied: the paths are ours to choose (a plain JSON order feed, the shape
most shop platforms share). Served on the sandbox port after katana (base + 6).

- ``GET /api/v1/orders?updated_since=<ISO>&limit=1..1000&page_token=<t>``: orders whose
  ``updated_at`` is at or after ``updated_since`` (all without it), oldest change first
  (ties by id), ``{"orders": [...], "next_page_token": "…" | null}``;
- ``GET /api/v1/orders/{id}``: one order (404 ``order_not_found``).

An order: ``{id, number, status, channel: web|pos, store_code, currency, total,
created_at, updated_at, customer: {email, phone, member_number, guest}, lines: [{line_no,
sku, name, quantity, unit_price, line_total}]}``. ``customer`` holds the keys the buyer gave:
a loyalty member (member number from Voyado, e-mail, phone), a shop account (e-mail,
maybe phone), a phone-only buyer, a guest with an e-mail (``guest: true``) or an anonymous
guest (every key null). Family members buy under their shared e-mail. About one order in
200 is broken on purpose (unknown currency, a line with quantity 0, no ``created_at``):
its id is in ``/_sandbox/defects``.

Auth: header ``X-Shop-Key: <SHOP_API_KEY>`` (401 otherwise). Error body ``{"error": {code,
message}}``.

Admin (besides the common ones): ``POST /_sandbox/orders`` ``{customer, lines, store_code,
channel, currency, id?}``: a purchase made now (answers the order); the common ``changes``
knob adds orders by new account holders and marks edited orders ``returned``.
Knobs (``Sandbox(options={"shop": {...}})``): ``orders`` (how many to generate, default one
per two people), ``buyers`` (share per buyer kind: member, account, phone_only, guest_email,
anonymous), ``broken_rate`` (default 0.005).
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from .generator import GEN_NOW, SandboxData
from .server import Emulator, Faults, Request, Response, credential, utcnow

PAGE_LIMIT = 1000
CURRENCY = {
    "SE": "SEK",
    "NO": "NOK",
    "DK": "DKK",
    "FI": "EUR",
    "NL": "EUR",
    "DE": "EUR",
    "GB": "GBP",
}
_PRODUCTS = (
    ("SKU-1001", "Running shoe", 899.0),
    ("SKU-1002", "Trail jacket", 1499.0),
    ("SKU-1003", "Wool socks", 129.0),
    ("SKU-1004", "Kids boot", 549.0),
    ("SKU-1005", "Yoga mat", 299.0),
    ("SKU-1006", "Rain hat", 199.0),
    ("SKU-1007", "Backpack 25l", 749.0),
    ("SKU-1008", "Water bottle", 149.0),
)
# buyer kinds and their shares
BUYER_KINDS = ("member", "account", "phone_only", "guest_email", "anonymous")
_BUYER_P = np.array([0.35, 0.25, 0.1, 0.2, 0.1])
_SHOP_STREAM = 2002  # second word of the orders' seed: the other systems' data stay as they were


def shop_time(ts: Any) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``."""
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _member_numbers(data: SandboxData) -> dict[str, str]:
    """person_id -> Voyado member number (the person's first Voyado record)."""
    frame = data.frames.get("voyado")
    if frame is None or "memberNumber" not in frame:
        return {}
    truth = data.truth[data.truth["system"] == "voyado"]
    person = dict(zip(truth["source_id"], truth["person_id"], strict=False))
    out: dict[str, str] = {}
    for rid, number in zip(frame["id"], frame["memberNumber"], strict=True):
        pid = person.get(rid)
        if pid is not None and pid not in out and number is not None:
            out[pid] = str(number)
    return out


def generate_orders(
    data: SandboxData,
    orders: int | None = None,
    buyers: dict[str, float] | None = None,
    broken_rate: float = 0.005,
) -> tuple[list[dict], list[dict]]:
    """``orders`` orders (default one per two people) of the generated people, deterministically;
    ``buyers``: share per buyer kind (``BUYER_KINDS``; default 35/25/10/20/10 %),
    ``broken_rate``: share of broken orders. Returns (orders, truth rows ``{source_id,
    person_id, buyer, broken}``)."""
    people = data.people
    n_people = len(people)
    n = max(1, n_people // 2) if orders is None else int(orders)
    if n == 0 or n_people == 0:
        return [], []
    rng = np.random.default_rng([data.seed, _SHOP_STREAM])
    p = rng.integers(0, n_people, n)
    if buyers:
        unknown = sorted(set(buyers) - set(BUYER_KINDS))
        if unknown:
            raise ValueError(f"shop buyers: unknown kind(s) {unknown}; known: {list(BUYER_KINDS)}")
        weights = np.array([float(buyers.get(k, 0.0)) for k in BUYER_KINDS])
        share = weights / weights.sum()
    else:
        share = _BUYER_P
    kind = np.array(BUYER_KINDS, dtype=object)[rng.choice(len(BUYER_KINDS), size=n, p=share)]
    members = _member_numbers(data)
    pid = people["person_id"].to_numpy(object)[p]
    member_no = pd.Series(pid).map(members).to_numpy(object)
    # a member order from someone without a Voyado record is an account order
    kind = np.where((kind == "member") & pd.isna(member_no), "account", kind)
    email = people["email"].to_numpy(object)[p]
    phone = people["phone"].to_numpy(object)[p]
    country = people["country"].to_numpy(object)[p]
    store = people["store_code"].to_numpy(object)[p]
    channel = np.where(rng.random(n) < 0.55, "web", "pos")
    store = np.where(channel == "web", "WEB-" + country.astype(str), store)
    has_phone = rng.random(n) < 0.5
    start = people["created_at"].to_numpy()[p].astype("datetime64[s]")
    span = ((GEN_NOW - start) / np.timedelta64(1, "s")).astype(np.int64)
    created = start + (rng.random(n) * span).astype("timedelta64[s]")
    updated = created + rng.integers(0, 3600, n).astype("timedelta64[s]")
    n_lines = rng.integers(1, 4, n)
    product = rng.integers(0, len(_PRODUCTS), int(n_lines.sum()))
    qty = rng.integers(1, 4, int(n_lines.sum()))
    broken = rng.random(n) < broken_rate
    broken_how = rng.integers(0, 3, n)
    out: list[dict] = []
    truth: list[dict] = []
    pos = 0
    for i in range(n):  # the sandbox builds wire dicts; the pipeline's hot paths are vectorized
        k = kind[i]
        lines = []
        for j in range(int(n_lines[i])):
            sku, name, price = _PRODUCTS[product[pos + j]]
            q = int(qty[pos + j])
            lines.append(
                {
                    "line_no": j + 1,
                    "sku": sku,
                    "name": name,
                    "quantity": q,
                    "unit_price": price,
                    "line_total": round(price * q, 2),
                }  # fmt: skip
            )
        pos += int(n_lines[i])
        oid = f"SO{i + 1:08d}"
        order = {
            "id": oid,
            "number": f"{store[i]}-{i + 1:08d}",
            "status": "completed",
            "channel": str(channel[i]),
            "store_code": str(store[i]),
            "currency": CURRENCY.get(str(country[i]), "EUR"),
            "total": round(sum(line["line_total"] for line in lines), 2),
            "created_at": shop_time(created[i]),
            "updated_at": shop_time(updated[i]),
            "customer": {
                "email": email[i] if k in ("member", "account", "guest_email") else None,
                "phone": phone[i]
                if k == "phone_only" or (k != "anonymous" and k != "guest_email" and has_phone[i])
                else None,  # noqa: E501
                "member_number": member_no[i] if k == "member" else None,
                "guest": k in ("guest_email", "anonymous"),
            },
            "lines": lines,
        }
        if broken[i]:
            how = int(broken_how[i])
            if how == 0:
                order["currency"] = "XXX"
            elif how == 1:
                order["lines"][0]["quantity"] = 0
            else:
                order["created_at"] = None
        out.append(order)
        truth.append({"source_id": oid, "person_id": pid[i], "buyer": k, "broken": bool(broken[i])})
    return out, truth


class ShopEmulator(Emulator):
    system = "shop"
    id_field = "id"

    def __init__(
        self,
        data: SandboxData,
        faults: Faults | None = None,
        orders: int | None = None,
        buyers: dict[str, float] | None = None,
        broken_rate: float = 0.005,
    ) -> None:
        self.n_orders = orders
        self.buyer_shares = buyers
        self.broken_rate = broken_rate
        self._generated: tuple[list[dict], list[dict]] | None = None
        self._new_orders = 0
        super().__init__(data, faults)

    def reset(self) -> None:
        super().reset()
        if self._generated is None:
            self._generated = generate_orders(
                self.data, self.n_orders, self.buyer_shares, self.broken_rate
            )
        orders, truth = self._generated
        with self.lock:
            self.store = {o["id"]: _copy(o) for o in orders}
            self.truth_rows = [
                {
                    "system": "shop",
                    "object_type": "order",
                    "source_id": t["source_id"],
                    "person_id": t["person_id"],
                }  # fmt: skip
                for t in truth
            ]
            self.defect_rows = [
                {
                    "system": "shop",
                    "object_type": "order",
                    "source_id": t["source_id"],
                    "field": "",
                    "wire_field": "",
                    "defect": "broken_order",
                    "expect": "reject",
                }  # fmt: skip
                for t in truth
                if t["broken"]
            ]
            self.buyers = {t["source_id"]: t["buyer"] for t in truth}

    def authorized(self, req: Request) -> bool:
        return req.headers.get("X-Shop-Key") == credential("SHOP_API_KEY")

    def error(self, status: int, code: str, message: str) -> Response:
        return Response(status, {"error": {"code": code, "message": message}})

    def unauthorized(self) -> Response:
        return self.error(401, "unauthorized", "Missing or invalid X-Shop-Key header")

    def route(self, req: Request) -> Response:
        parts = req.path.strip("/").split("/")
        if parts[:3] != ["api", "v1", "orders"] or req.method != "GET":
            return self.error(404, "not_found", f"No resource {req.method} {req.path}")
        if len(parts) == 4:
            with self.lock:
                order = self.store.get(parts[3])
            if order is None:
                return self.error(404, "order_not_found", f"No order {parts[3]}")
            return Response(200, _copy(order))
        return self._list(req)

    def _list(self, req: Request) -> Response:
        try:
            limit = int(req.arg("limit") or 100)
            offset = int(req.arg("page_token") or 0)
        except ValueError:
            return self.error(400, "invalid_parameter", "limit and page_token must be integers")
        if not 1 <= limit <= PAGE_LIMIT:
            return self.error(400, "invalid_parameter", f"limit must be 1..{PAGE_LIMIT}")
        since = req.arg("updated_since")
        with self.lock:
            rows = self.sorted_rows("orders", self.store, key=lambda o: (o["updated_at"], o["id"]))
            if since:
                try:
                    floor = shop_time(datetime.fromisoformat(since.replace("Z", "+00:00")))
                except ValueError:
                    return self.error(400, "invalid_parameter", "updated_since is not ISO 8601")
                lo, hi = 0, len(rows)
                while lo < hi:  # first order changed at or after the floor (sorted by updated_at)
                    mid = (lo + hi) // 2
                    if rows[mid]["updated_at"] < floor:
                        lo = mid + 1
                    else:
                        hi = mid
                rows = rows[lo:]
            page = [_copy(o) for o in rows[offset : offset + limit]]
            more = offset + limit < len(rows)
        return Response(
            200, {"orders": page, "next_page_token": str(offset + limit) if more else None}
        )

    # ----------------------------------------------------------------- admin
    def add_order(
        self,
        customer: dict[str, Any],
        lines: list[dict[str, Any]] | None = None,
        store_code: str = "SE01",
        channel: str = "pos",
        currency: str = "SEK",
        order_id: str | None = None,
    ) -> dict:
        """A purchase made now; answers the stored order."""
        now = utcnow()
        with self.lock:
            self._new_orders += 1
            oid = order_id or f"SN{self._new_orders:08d}"
            lines = [
                {
                    "line_no": i + 1,
                    "sku": line.get("sku", "SKU-1001"),
                    "name": line.get("name", "Item"),
                    "quantity": int(line.get("quantity", 1)),
                    "unit_price": float(line.get("unit_price", 100.0)),
                    "line_total": round(
                        float(line.get("unit_price", 100.0)) * int(line.get("quantity", 1)), 2
                    ),
                }
                for i, line in enumerate(
                    lines or [{"sku": "SKU-1003", "name": "Wool socks", "unit_price": 129.0}]
                )
            ]
            order = {
                "id": oid,
                "number": f"{store_code}-{oid}",
                "status": "completed",
                "channel": channel,
                "store_code": store_code,
                "currency": currency,
                "total": round(sum(line["line_total"] for line in lines), 2),
                "created_at": shop_time(now),
                "updated_at": shop_time(now),
                "customer": {
                    "email": customer.get("email"),
                    "phone": customer.get("phone"),
                    "member_number": customer.get("member_number"),
                    "guest": bool(customer.get("guest", False)),
                },
                "lines": lines,
            }
            self.store[oid] = order
            self.changes.append((oid, "Created", now))
            return _copy(order)

    def new_record(self, person: dict, now: datetime) -> dict:
        self._new_orders += 1
        oid = f"SN{self._new_orders:08d}"
        return {
            "id": oid, "number": f"{person['store_code']}-{oid}", "status": "completed",
            "channel": "web", "store_code": "WEB-" + person["country"], "currency": CURRENCY[person["country"]],
            "total": 129.0, "created_at": shop_time(now), "updated_at": shop_time(now),
            "customer": {"email": person["email"], "phone": person["phone"], "member_number": None, "guest": False},
            "lines": [{"line_no": 1, "sku": "SKU-1003", "name": "Wool socks", "quantity": 1,
                       "unit_price": 129.0, "line_total": 129.0}],
        }  # fmt: skip

    def edit_record(self, rec: dict, rng: random.Random, now: datetime) -> None:
        rec["status"] = "returned"
        rec["updated_at"] = shop_time(now)

    def admin(self, req: Request, action: str) -> Response:
        if req.method == "POST" and action == "orders":
            body = req.json() or {}
            unknown = set(body) - {"customer", "lines", "store_code", "channel", "currency", "id"}
            if unknown:
                return Response(400, {"error": f"unknown order keys: {sorted(unknown)}"})
            order = self.add_order(
                body.get("customer") or {},
                body.get("lines"),
                body.get("store_code", "SE01"),
                body.get("channel", "pos"),
                body.get("currency", "SEK"),
                body.get("id"),
            )
            return Response(201, order)
        if req.method == "GET" and action == "defects":
            return Response(200, list(self.defect_rows))
        return super().admin(req, action)


def _copy(order: dict) -> dict:
    return {
        **order,
        "customer": dict(order["customer"]),
        "lines": [dict(x) for x in order["lines"]],
    }
