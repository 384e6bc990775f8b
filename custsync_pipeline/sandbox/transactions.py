"""Transaction endpoints of the emulated targets (receipts, purchases, orders), kept apart
from their customer endpoints: each emulator's ``route`` hands these paths over.

**Voyado** (CONNECTORS.md): ``POST /api/v2/receipts``, one receipt a request, matched to a
contact by ``contact.matchKey`` / ``contact.matchKeyType`` (``ContactId``, ``Email``,
``Mobile``, ``MemberNumber``, ``ExternalId``); 404 ``ContactNotFound``, 409
``MultipleMatches`` when the key is held by several contacts; a repeated
``uniqueReceiptId`` is ignored as a duplicate (202, nothing stored; receipts cannot be
updated); 400 ``InvalidModel`` naming the missing field. ``GET
/api/v2/receipts?contactId=`` lists a contact's receipts (a reading aid: modeled).

**Salesforce**: the custom object ``Purchase__c`` (fields ``PURCHASE_FIELDS``, lookup
``Contact__c`` to a Contact, external id ``Transaction_Id__c``) through the composite
upsert ``PATCH composite/sobjects/Purchase__c/Transaction_Id__c`` (at most 200 records,
per-record results in request order), and SOQL ``SELECT … FROM Purchase__c WHERE
Contact__c = '…'``. A lookup to a Contact that does not exist fails that record
(``INVALID_CROSS_REFERENCE_KEY``), as Salesforce does.

**Voucherify** (seed 002): ``POST /v1/orders`` creates an order, or with an ``id`` or
``source_id`` that exists updates it (upsert); one order a request. ``customer`` by ``id``
or ``source_id`` (404 when unknown); ``items`` with ``source_id`` (or ``sku_id`` /
``product_id``), ``quantity`` and ``price`` in the currency's minor unit; a product is
stored only when its ``product`` object carries ``override: true``. ``GET /v1/orders``
(``limit`` 1..100, ``page``) and ``GET /v1/orders/{id|source_id}``.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

from .server import Request, Response, utcnow

RECEIPT_BATCH_LIMIT = 1  # POST /api/v2/receipts takes one receipt
PURCHASE_BATCH_LIMIT = 200  # composite/sobjects
ORDER_BATCH_LIMIT = 1  # POST /v1/orders takes one order

PURCHASE_FIELDS = (
    "Name",
    "Transaction_Id__c",
    "Contact__c",
    "Order_Number__c",
    "Status__c",
    "Channel__c",
    "Store_Code__c",
    "Currency__c",
    "Amount__c",
    "Ordered_At__c",
    "Line_Count__c",
    "Lines__c",
)
_MATCH_FIELDS = {
    "ContactId": "id",
    "Email": "email",
    "Mobile": "mobilePhone",
    "MemberNumber": "memberNumber",
    "ExternalId": "externalId",
}
_lock = threading.Lock()


def _state(emu: Any, name: str, factory) -> Any:
    """Per-emulator state, rebuilt when the emulator was reset (its store is a new dict)."""
    with _lock:
        held = emu.__dict__.get(name)
        if held is None or held[0] is not emu.store:
            held = (emu.store, factory())
            emu.__dict__[name] = held
        return held[1]


# ----------------------------------------------------------------------------- Voyado


class _Receipts:
    def __init__(self) -> None:
        self.by_id: dict[str, dict] = {}
        self.duplicates = 0
        self.index_version: tuple | None = None
        self.index: dict[str, dict[str, list[str]]] = {}


def voyado_receipts(emu: Any) -> _Receipts:
    return _state(emu, "_custsync_receipts", _Receipts)


def _contact_index(emu: Any, state: _Receipts) -> dict[str, dict[str, list[str]]]:
    version = (len(emu.changes), len(emu.store))
    if state.index_version != version:
        index: dict[str, dict[str, list[str]]] = {k: {} for k in _MATCH_FIELDS}
        for cid, rec in emu.store.items():
            for key_type, field in _MATCH_FIELDS.items():
                value = rec.get(field)
                if value not in (None, ""):
                    norm = str(value).strip().lower()
                    index[key_type].setdefault(norm, []).append(cid)
        state.index, state.index_version = index, version
    return state.index


def voyado_receipts_route(emu: Any, req: Request) -> Response:
    state = voyado_receipts(emu)
    if req.method == "GET":
        contact = req.arg("contactId")
        with emu.lock:
            rows = [r for r in state.by_id.values() if contact in (None, r["contactId"])]
        return Response(200, {"items": rows, "count": len(rows)})
    if req.method != "POST" or req.path.rstrip("/") != "/api/v2/receipts":
        return emu.error(405, "MethodNotAllowed", f"{req.method} not allowed on {req.path}")
    body = req.json()
    if not isinstance(body, dict):
        return emu.error(400, "InvalidModel", "The receipt must be a JSON object")
    for field in ("uniqueReceiptId", "createdDate", "storeExternalId", "currency", "items"):
        if body.get(field) in (None, "", []):
            return emu.error(400, "InvalidModel", f"The {field} field is required.")
    contact = body.get("contact") or {}
    key_type, key = contact.get("matchKeyType"), contact.get("matchKey")
    if key_type not in _MATCH_FIELDS or key in (None, ""):
        return emu.error(
            400,
            "InvalidModel",
            f"contact.matchKeyType must be one of {sorted(_MATCH_FIELDS)} with a matchKey",
        )
    with emu.lock:
        if str(body["uniqueReceiptId"]) in state.by_id:
            state.duplicates += 1  # ignored: a receipt cannot be updated
            return Response(202, {"uniqueReceiptId": body["uniqueReceiptId"], "duplicate": True})
        index = _contact_index(emu, state)
        holders = index[key_type].get(str(key).strip().lower(), [])
        if not holders:
            return emu.error(404, "ContactNotFound", "No contact matches the receipt's key")
        if len(holders) > 1:
            return emu.error(409, "MultipleMatches", "Several contacts match the receipt's key")
        stored = {**body, "contactId": holders[0], "receivedDate": utcnow().isoformat()}
        state.by_id[str(body["uniqueReceiptId"])] = stored
    return Response(202, {"uniqueReceiptId": body["uniqueReceiptId"], "contactId": holders[0]})


# ----------------------------------------------------------------------------- Salesforce


def add_purchase_object(emu: Any) -> None:
    """Give a Salesforce emulator (after its reset) the ``Purchase__c`` custom object."""
    emu.objects["Purchase__c"] = {}
    emu.tombstones["Purchase__c"] = {}
    emu.deleted_by_type["Purchase__c"] = []
    emu.fields["Purchase__c"] = set(PURCHASE_FIELDS) | {
        "Id",
        "IsDeleted",
        "CreatedDate",
        "LastModifiedDate",
        "SystemModstamp",
    }
    emu.shape["Purchase__c"] = ["Id", *PURCHASE_FIELDS, "IsDeleted"]


class _Purchases:
    def __init__(self) -> None:
        self.by_ext: dict[str, str] = {}


def salesforce_purchases_upsert(emu: Any, field: str, body: Any) -> Response:
    """``PATCH composite/sobjects/Purchase__c/Transaction_Id__c`` with an index on the
    external id (a 100k-purchase org answers in constant time per record)."""
    from .salesforce import _errors

    obj = "Purchase__c"
    if field != "Transaction_Id__c":
        return _errors(
            400,
            "INVALID_FIELD",
            f"Field name provided, {field} is not an External ID or indexed field for {obj}",
        )
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        return _errors(400, "JSON_PARSER_ERROR", "Expected {allOrNone, records: [...]}")
    records = body["records"]
    if len(records) > PURCHASE_BATCH_LIMIT:
        return _errors(
            400,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        )
    state = _state(emu, "_custsync_purchases", _Purchases)
    results: list[dict] = []

    def fail(code: str, message: str, fields: list[str]) -> dict:
        return {
            "success": False,
            "errors": [{"statusCode": code, "message": message, "fields": fields}],
        }

    with emu.lock:
        store = emu.objects[obj]
        if len(state.by_ext) != len(store):
            state.by_ext = {str(r.get(field)): k for k, r in store.items() if r.get(field)}
        for rec in records:
            if not isinstance(rec, dict) or (rec.get("attributes") or {}).get("type") != obj:
                results.append(
                    fail("INVALID_TYPE", f"records must carry attributes.type = {obj}", [])
                )
                continue
            value = rec.get(field)
            if value in (None, ""):
                results.append(
                    fail(
                        "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{field}]", [field]
                    )
                )
                continue
            contact = rec.get("Contact__c")
            if contact and contact not in emu.objects["Contact"]:
                results.append(
                    fail(
                        "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["Contact__c"]
                    )
                )
                continue
            fields = {k: v for k, v in rec.items() if k not in ("attributes", "Id")}
            errs = emu._check(obj, fields, creating=str(value) not in state.by_ext)
            if errs:
                results.append({"success": False, "errors": errs})
                continue
            existing = state.by_ext.get(str(value))
            rec_id, created = emu._apply(obj, existing, fields)
            state.by_ext[str(value)] = rec_id
            results.append({"id": rec_id, "success": True, "errors": [], "created": created})
    return Response(200, results)


# ----------------------------------------------------------------------------- Voucherify


class _Orders:
    def __init__(self) -> None:
        self.by_id: dict[str, dict] = {}
        self.by_source: dict[str, str] = {}
        self.products: dict[str, dict] = {}


def voucherify_orders(emu: Any) -> _Orders:
    return _state(emu, "_custsync_orders", _Orders)


def voucherify_orders_route(emu: Any, req: Request, parts: list[str]) -> Response:
    state = voucherify_orders(emu)
    if len(parts) == 2 and req.method == "GET":
        try:
            limit = int(req.arg("limit") or 10)
            page = int(req.arg("page") or 1)
        except ValueError:
            return emu.error(
                400, "invalid_payload", "Invalid query", "limit and page must be integers"
            )
        if not 1 <= limit <= 100:
            return emu.error(400, "invalid_payload", "Invalid query", "limit must be 1..100")
        with emu.lock:
            rows = list(state.by_id.values())
        chunk = rows[(page - 1) * limit : page * limit]
        return Response(
            200,
            {
                "object": "list",
                "data_ref": "orders",
                "orders": chunk,
                "total": len(rows),
                "has_more": page * limit < len(rows),
            },  # fmt: skip
        )
    if len(parts) == 3 and req.method == "GET":
        with emu.lock:
            order = state.by_id.get(parts[2]) or state.by_id.get(state.by_source.get(parts[2], ""))
        if order is None:
            return emu.error(
                404, "not_found", "Resource not found", f"Cannot find order {parts[2]}"
            )
        return Response(200, order)
    if len(parts) == 2 and req.method == "POST":
        return _upsert_order(emu, state, req.json())
    return emu.error(405, "method_not_allowed", "Method not allowed")


def _upsert_order(emu: Any, state: _Orders, body: Any) -> Response:
    if not isinstance(body, dict):
        return emu.error(400, "invalid_payload", "Invalid payload", "The order must be an object")
    items = body.get("items")
    if not isinstance(items, list) or not items:
        return emu.error(400, "invalid_payload", "Invalid payload", "items: at least one item")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not (
            item.get("source_id") or item.get("sku_id") or item.get("product_id")
        ):
            return emu.error(
                400, "invalid_payload", "Invalid payload", f"items[{i}]: needs source_id"
            )
        if not isinstance(item.get("quantity"), int) or item["quantity"] < 1:
            return emu.error(
                400, "invalid_payload", "Invalid payload", f"items[{i}].quantity: int >= 1"
            )
        if not isinstance(item.get("price"), int):
            return emu.error(
                400,
                "invalid_payload",
                "Invalid payload",
                f"items[{i}].price: an integer (minor unit)",
            )
    amount = body.get("amount")
    if amount is not None and not isinstance(amount, int):
        return emu.error(
            400, "invalid_payload", "Invalid payload", "amount: an integer (minor unit)"
        )
    now = utcnow().strftime("%Y-%m-%dT%H:%M:%S.") + f"{utcnow().microsecond // 1000:03d}Z"
    with emu.lock:
        customer = body.get("customer") or {}
        cust = None
        if customer.get("id"):
            cust = emu.store.get(customer["id"])
        elif customer.get("source_id"):
            cust_id = emu.by_source.get(customer["source_id"])
            cust = emu.store.get(cust_id) if cust_id else None
        if customer and cust is None:
            return emu.error(
                404, "not_found", "Resource not found", "Cannot find the order's customer"
            )
        existing = None
        if body.get("id"):
            existing = state.by_id.get(body["id"])
            if existing is None:
                return emu.error(
                    404, "not_found", "Resource not found", f"Cannot find order {body['id']}"
                )
        elif body.get("source_id"):
            existing = state.by_id.get(state.by_source.get(str(body["source_id"]), ""))
        for item in items:
            product = item.get("product") or {}
            if product.get("override") is True:
                state.products[str(item.get("source_id") or item.get("product_id"))] = {
                    "name": product.get("name"), "price": product.get("price"),
                    "metadata": product.get("metadata") or {},
                }  # fmt: skip
        total = amount if amount is not None else sum(i["price"] * i["quantity"] for i in items)
        order = dict(existing or {})
        order.update(
            {
                "id": order.get("id") or "ord_" + secrets.token_hex(12),
                "source_id": order.get("source_id") or body.get("source_id"),
                "object": "order",
                "status": body.get("status") or order.get("status") or "CREATED",
                "amount": total,
                "items": [{**i, "object": "order_item"} for i in items],
                "customer": {"id": cust["id"], "object": "customer"}
                if cust
                else order.get("customer"),
                "metadata": {**(order.get("metadata") or {}), **(body.get("metadata") or {})},
                "created_at": order.get("created_at") or now,
                "updated_at": now if existing else None,
            }
        )
        state.by_id[order["id"]] = order
        if order.get("source_id"):
            state.by_source[str(order["source_id"])] = order["id"]
    return Response(200, order)
