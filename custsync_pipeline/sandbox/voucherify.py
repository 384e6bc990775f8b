"""Voucherify customers emulator.

- ``GET /v1/customers?limit=1..100&page=1..99`` with ``updated_at_after/_before``,
  ``created_at_after/_before`` (also in the SDK's bracket form ``updated_at[after]``),
  ``email``, ``name``, ``city``, ``starting_after`` (a ``created_at`` date-time: only
  customers created after it) and ``order`` (``created_at``, ``-created_at`` (default),
  ``updated_at``, ``-updated_at``) -> ``{object: "list", data_ref: "customers",
  customers, total, has_more}``;
- ``POST /v1/customers``: create-or-upsert by ``id`` or ``source_id``;
- ``GET|PUT /v1/customers/{id|source_id}`` (PUT leaves omitted fields as they are),
  ``DELETE /v1/customers/{id}`` (204);
- ``POST /v1/customers/bulk/async`` (≤ 100 upserts by ``source_id``) -> 202
  ``{async_action_id}``; ``GET /v1/async-actions/{id}`` -> ``{status: "DONE", result:
  {results: [{source_id, updated, found}]}, ...}`` (processed at once);
- ``source_id`` is set once: changing it answers 400 ``{code, key, message, details,
  request_id}``.

Auth headers ``X-App-Id`` / ``X-App-Token``; every answer carries
``X-Rate-Limit-Limit`` / ``X-Rate-Limit-Remaining`` (``hourly_limit`` knob, 429 past it).
"""

from __future__ import annotations

import bisect
import random
import secrets
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from .server import Emulator, Faults, Request, Response, credential, utcnow

_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_WRITABLE = {
    "id",
    "source_id",
    "name",
    "description",
    "email",
    "phone",
    "birthdate",
    "birthday",
    "address",
    "metadata",
}
_ORDERS = {"created_at", "-created_at", "updated_at", "-updated_at"}


def vf_time(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@lru_cache(maxsize=1 << 20)  # list filters parse every stored time on every page
def _parse(value: str) -> datetime:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)  # the SDK may send naive times: UTC


def _dig(rec: dict, path: tuple[str, ...]) -> Any:
    for part in path:
        rec = rec.get(part) if isinstance(rec, dict) else None
    return rec


class VoucherifyEmulator(Emulator):
    system = "voucherify"
    id_field = "id"

    def __init__(self, data, faults: Faults | None = None, hourly_limit: int = 1_000_000) -> None:
        self.hourly_limit = hourly_limit
        self.used = 0
        self._rng = random.Random(data.seed)
        super().__init__(data, faults)

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.used = 0
            self.async_actions: dict[str, dict] = {}
            self.by_source: dict[str, str] = {
                r["source_id"]: k for k, r in self.store.items() if r.get("source_id")
            }

    def authorized(self, req: Request) -> bool:
        return req.headers.get("X-App-Id") == credential("VOUCHERIFY_APP_ID") and req.headers.get(
            "X-App-Token"
        ) == credential("VOUCHERIFY_APP_TOKEN")

    def error(self, status: int, code: str, message: str, details: str = "") -> Response:
        key = {
            400: "invalid_payload",
            401: "unauthorized",
            404: "not_found",
            429: "too_many_requests",
        }.get(status, "error")
        return Response(
            status,
            {
                "code": status,
                "key": key,
                "message": message,
                "details": details or message,
                "request_id": "v-" + secrets.token_hex(8),
            },
        )

    def unauthorized(self) -> Response:
        return self.error(
            401, "unauthorized", "Unauthorized", "Missing or invalid X-App-Id / X-App-Token"
        )

    def extra_headers(self) -> dict[str, str]:
        return {
            "X-Rate-Limit-Limit": str(self.hourly_limit),
            "X-Rate-Limit-Remaining": str(max(0, self.hourly_limit - self.used)),
        }

    def route(self, req: Request) -> Response:
        with self.lock:
            self.used += 1
            if self.used > self.hourly_limit:
                resp = self.error(
                    429, "too_many_requests", "Too many requests", "Hourly API limit reached"
                )
                resp.headers["Retry-After"] = "3600"
                return resp
        parts = req.path.strip("/").split("/")
        if parts[:2] == ["v1", "async-actions"] and len(parts) == 3 and req.method == "GET":
            with self.lock:
                action = self.async_actions.get(parts[2])
            if action is None:
                return self.error(
                    404, "not_found", "Resource not found", f"Cannot find async action {parts[2]}"
                )
            return Response(200, action)
        if parts[:2] == ["v1", "orders"]:  # orders (seed 002): sandbox/transactions.py
            from .transactions import voucherify_orders_route

            return voucherify_orders_route(self, req, parts)
        if parts[:2] != ["v1", "customers"]:
            return self.error(404, "not_found", "Resource not found", f"Unknown path {req.path}")
        if len(parts) == 2 and req.method == "GET":
            return self._list(req)
        if len(parts) == 2 and req.method == "POST":
            return self._upsert(req.json())
        if parts[2:] == ["bulk", "async"] and req.method == "POST":
            return self._bulk(req.json())
        if len(parts) == 3:
            return self._one(parts[2], req)
        return self.error(405, "method_not_allowed", "Method not allowed")

    # ----------------------------------------------------------------- list
    def _list(self, req: Request) -> Response:
        try:
            limit = int(req.arg("limit", "10"))
            page = int(req.arg("page", "1"))
        except ValueError:
            return self.error(
                400,
                "invalid_query_params",
                "Invalid query params",
                "limit and page must be integers",
            )
        if not 1 <= limit <= 100 or not 1 <= page <= 99:
            return self.error(
                400,
                "invalid_query_params",
                "Invalid query params",
                "limit must be 1..100 and page 1..99",
            )
        order = req.arg("order", "-created_at")
        if order not in _ORDERS:
            return self.error(
                400,
                "invalid_query_params",
                "Invalid query params",
                f"order must be one of {sorted(_ORDERS)}",
            )
        filters = []
        try:
            for arg, fld, after in (
                ("updated_at_after", "updated_at", True),
                ("updated_at_before", "updated_at", False),
                ("created_at_after", "created_at", True),
                ("created_at_before", "created_at", False),
                ("starting_after", "created_at", True),
            ):
                # the official SDK sends the bracket form: updated_at[after]
                value = req.arg(arg) or req.arg(
                    arg.replace("_after", "[after]").replace("_before", "[before]")
                )
                if value:
                    filters.append((fld, _parse(value), after))
        except ValueError:
            return self.error(
                400, "invalid_query_params", "Invalid query params", "timestamps must be ISO 8601"
            )
        key = order.lstrip("-")
        with self.lock:
            rows = self.sorted_rows(
                order,
                self.store,
                key=lambda r: (r.get(key) or r.get("created_at"), r["id"]),
                reverse=order.startswith("-"),
            )
        for fld, path in (
            ("email", ("email",)),
            ("name", ("name",)),
            ("city", ("address", "city")),
        ):
            if req.arg(fld):
                want = req.arg(fld)
                rows = [r for r in rows if _dig(r, path) == want]
        if (
            filters
            and order == "created_at"
            and all(f == "created_at" and a for f, _, a in filters)
        ):
            # the cursor walk (starting_after): a binary search in the cached order, not a
            # scan of every record on every page
            times = self._created_times(rows)
            if times is not None:
                rows = rows[bisect.bisect_right(times, max(w for _, w, _ in filters)) :]
                filters = []
        if filters:

            def keep(r: dict) -> bool:
                for fld, when, after in filters:
                    value = r.get(fld) or r.get("created_at")
                    t = _parse(value)
                    if (after and not t > when) or (not after and not t < when):
                        return False
                return True

            rows = [r for r in rows if keep(r)]
        start = (page - 1) * limit
        chunk = rows[start : start + limit]
        return Response(
            200,
            {
                "object": "list",
                "data_ref": "customers",
                "customers": [dict(r) for r in chunk],
                "total": len(rows),
                "has_more": start + limit < len(rows),
            },
        )

    def _created_times(self, rows: list[dict]) -> list[datetime] | None:
        """Parsed ``created_at`` of rows in created_at order (cached per sorted list), or
        None when they are not in time order (mixed spellings): then the scan is used."""
        cached = getattr(self, "_times_cache", None)
        if cached is not None and cached[0] is rows:
            return cached[1]
        times = [_parse(r.get("created_at")) for r in rows]
        ordered = all(a <= b for a, b in zip(times, times[1:], strict=False))
        self._times_cache = (rows, times if ordered else None)
        return self._times_cache[1]

    # ----------------------------------------------------------------- writes
    def _validate(self, body: Any) -> Response | None:
        if not isinstance(body, dict):
            return self.error(
                400, "invalid_payload", "Invalid payload", "body must be a JSON object"
            )
        unknown = (
            set(body)
            - _WRITABLE
            - {
                "object",
                "created_at",
                "updated_at",
                "summary",
                "loyalty",
                "referrals",
                "system_metadata",
                "assets",
            }
        )
        if unknown:
            return self.error(
                400, "invalid_payload", "Invalid payload", f"unknown properties: {sorted(unknown)}"
            )
        for f in ("address", "metadata"):
            if body.get(f) is not None and not isinstance(body[f], dict):
                return self.error(
                    400, "invalid_payload", "Invalid payload", f"{f} must be an object"
                )
        return None

    def _write(self, existing: dict | None, body: dict) -> tuple[int, dict]:
        """Apply an upsert body to an existing customer (or create). Caller holds the lock."""
        now = vf_time(utcnow())
        if existing is not None:
            new_src = body.get("source_id")
            if new_src is not None and existing.get("source_id") not in (None, new_src):
                raise ValueError("source_id")
            for f, v in body.items():
                if f in _WRITABLE - {"id"}:
                    if (
                        f in ("address", "metadata")
                        and isinstance(v, dict)
                        and isinstance(existing.get(f), dict)
                    ):
                        existing[f] = {**existing[f], **v}
                    else:
                        existing[f] = v
            if existing.get("source_id"):
                self.by_source[existing["source_id"]] = existing["id"]
            existing["updated_at"] = now
            self.changes.append((existing["id"], "Updated", utcnow()))
            return 200, existing
        cid = body.get("id") or "cust_" + "".join(self._rng.choice(_ALNUM) for _ in range(24))
        rec = {
            "id": cid,
            "source_id": None,
            "name": None,
            "description": None,
            "email": None,
            "phone": None,
            "address": {
                "city": None,
                "state": None,
                "line_1": None,
                "line_2": None,
                "country": None,
                "postal_code": None,
            },
            "metadata": {},
            "created_at": now,
            "updated_at": now,
            "object": "customer",
        }
        for f, v in body.items():
            if f in _WRITABLE:
                rec[f] = {**rec[f], **v} if f == "address" and isinstance(v, dict) else v
        self.store[cid] = rec
        if rec.get("source_id"):
            self.by_source[rec["source_id"]] = cid
        self.changes.append((cid, "Created", utcnow()))
        return 200, rec

    def _immutable(self) -> Response:
        return self.error(
            400, "invalid_customer", "Invalid customer", "source_id cannot be changed once set"
        )

    def _upsert(self, body: Any) -> Response:
        bad = self._validate(body)
        if bad:
            return bad
        if isinstance(body, dict) and {body.get("id"), body.get("source_id")} & set(
            self.faults.forbid
        ):
            return self.error(403, "forbidden", "Forbidden", "This key may not modify the customer")
        with self.lock:
            existing = None
            if body.get("id"):
                existing = self.store.get(body["id"])
                if existing is None:
                    return self.error(
                        404,
                        "not_found",
                        "Resource not found",
                        f"Cannot find customer with id {body['id']}",
                    )
            elif body.get("source_id"):
                cid = self.by_source.get(body["source_id"])
                existing = self.store.get(cid) if cid else None
            try:
                status, rec = self._write(existing, body)
            except ValueError:
                return self._immutable()
            return Response(status, dict(rec))

    def _bulk(self, body: Any) -> Response:
        """``POST /v1/customers/bulk/async``: up to 100 upserts by ``source_id``; the result
        is ready at once under ``GET /v1/async-actions/{id}`` (status ``DONE``)."""
        if not isinstance(body, list) or not body:
            return self.error(
                400, "invalid_payload", "Invalid payload", "body must be a non-empty array"
            )
        if len(body) > 100:
            return self.error(
                400, "invalid_payload", "Invalid payload", "at most 100 customers per bulk request"
            )
        results = []
        with self.lock:
            for item in body:
                src = item.get("source_id") if isinstance(item, dict) else None
                if not src or self._validate(item) is not None:
                    results.append({"source_id": src, "updated": False, "found": False})
                    continue
                cid = self.by_source.get(src)
                existing = self.store.get(cid) if cid else None
                try:
                    self._write(existing, item)
                    results.append(
                        {"source_id": src, "updated": True, "found": existing is not None}
                    )
                except ValueError:
                    results.append({"source_id": src, "updated": False, "found": True})
            action_id = f"aa_{len(self.async_actions) + 1:020d}"
            now = vf_time(utcnow())
            self.async_actions[action_id] = {
                "id": action_id, "type": "CUSTOMERS_BULK_UPDATE", "status": "DONE", "operation_status": "SUCCESS",
                "result": {"results": results}, "created_at": now, "updated_at": now, "processing_time": 1,
                "progress": 100, "object": "async_action",
            }  # fmt: skip
        return Response(202, {"async_action_id": action_id})

    def _find(self, key: str) -> dict | None:
        rec = self.store.get(key)
        if rec is None and key in self.by_source:
            rec = self.store.get(self.by_source[key])
        return rec

    def _one(self, key: str, req: Request) -> Response:
        with self.lock:
            rec = self._find(key)
            if rec is None:
                return self.error(
                    404, "not_found", "Resource not found", f"Cannot find customer with id {key}"
                )
            if req.method == "GET":
                return Response(200, dict(rec))
            if req.method == "PUT":
                body = req.json() or {}
                bad = self._validate(body)
                if bad:
                    return bad
                body.pop("id", None)
                try:
                    _, rec = self._write(rec, body)
                except ValueError:
                    return self._immutable()
                return Response(200, dict(rec))
            if req.method == "DELETE":
                self.store.pop(rec["id"])
                if rec.get("source_id"):
                    self.by_source.pop(rec["source_id"], None)
                self.on_delete(rec["id"], rec, utcnow())
                return Response(204)
        return self.error(405, "method_not_allowed", "Method not allowed")

    # ----------------------------------------------------------------- changes knob
    def new_record(self, person: dict, now: datetime) -> dict:
        t = vf_time(now)
        return {
            "id": "cust_" + "".join(self._rng.choice(_ALNUM) for _ in range(24)),
            "source_id": None,
            "name": f"{person['first_name']} {person['last_name']}",
            "description": None,
            "email": person["email"],
            "phone": person["phone"],
            "address": {
                "city": person["city"],
                "state": None,
                "line_1": person["street"],
                "line_2": None,
                "country": person["country"],
                "postal_code": person["postal_code"],
            },
            "metadata": {"language": person["language"]},
            "created_at": t,
            "updated_at": t,
            "object": "customer",
        }

    def edit_record(self, rec: dict, rng: random.Random, now: datetime) -> None:
        rec["address"] = {
            **(rec.get("address") or {}),
            "city": rng.choice(["Lund", "Umeå", "Visby", "Kiruna"]),
        }
        rec["updated_at"] = vf_time(now)
