"""Icomm customers emulator. **The paths are ours**: Icomm's public documentation is thin
(customers identified by ``UserId`` + ``StoreCode``; contact upsert by e-mail within a
profile with ``CustomFields: [{Key, Value}]``; queries by user id + store code with
``offset``/``limit``), so this module chooses the shapes below and says so.

- ``GET /api/v1/profiles/{profileId}/customers?offset=0&limit=100`` (limit ≤ 500), optional
  ``userId``, ``storeCode``, ``updatedSince`` (ISO 8601) -> ``{items, offset, limit, total}``
  ordered by (``UpdatedAt``, ``UserId``, ``StoreCode``) ascending;
- ``GET|DELETE /api/v1/profiles/{profileId}/customers/{storeCode}/{userId}`` (``userId``
  URL-encoded: it may be an e-mail);
- ``POST /api/v1/profiles/{profileId}/contacts/upsert``: one contact
  ``{Email, UserId?, StoreCode?, FirstName, LastName, MobilePhone, CountryCode,
  Unsubscribed, CustomFields: [{Key, Value}]}``. Matched by ``UserId`` + ``StoreCode``
  when both are given, else by e-mail (trimmed, case-insensitive) within the profile;
  several e-mail matches -> 409 ``AmbiguousEmail``. A new contact without ``UserId`` gets
  the e-mail as ``UserId`` (as Icomm advises when the shop has no id). Answers
  ``{UserId, StoreCode, Created}``. ``CustomFields`` merge by ``Key``;
- ``POST /api/v1/profiles/{profileId}/contacts/upsert-batch``: a JSON array of up to
  1,000 contacts -> ``[{index, UserId, StoreCode, Created, Success, Error}]``;
- ``GET /api/v1/profiles/{profileId}/customers/deleted?since=`` ->
  ``[{UserId, StoreCode, DeletedAt}]``.

Auth header ``X-Api-Key: <ICOMM_API_KEY>``. Error body ``{"Error": code, "Message": text}``.
The record key (truth ``source_id``) is ``"<UserId>|<StoreCode>"``.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from .server import Emulator, Faults, Request, Response, credential, utcnow

BATCH_LIMIT = 1000
_FIELDS = {
    "Email",
    "UserId",
    "StoreCode",
    "FirstName",
    "LastName",
    "MobilePhone",
    "CountryCode",
    "Unsubscribed",
    "CustomFields",
}


def ic_time(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class IcommEmulator(Emulator):
    system = "icomm"

    def __init__(
        self, data, faults: Faults | None = None, profile_id: int = 1, page_limit: int = 500
    ) -> None:
        self.profile_id = profile_id
        self.page_limit = page_limit
        super().__init__(data, faults)

    def key_of(self, rec: dict) -> str:
        return f"{rec['UserId']}|{rec['StoreCode']}"

    def authorized(self, req: Request) -> bool:
        return req.headers.get("X-Api-Key") == credential("ICOMM_API_KEY")

    def error(self, status: int, code: str, message: str) -> Response:
        return Response(status, {"Error": code, "Message": message})

    def unauthorized(self) -> Response:
        return self.error(401, "Unauthorized", "Missing or invalid X-Api-Key")

    def route(self, req: Request) -> Response:
        parts = [unquote(p) for p in req.path.strip("/").split("/")]
        if len(parts) < 5 or parts[:3] != ["api", "v1", "profiles"]:
            return self.error(404, "NotFound", f"No resource at {req.path}")
        if parts[3] != str(self.profile_id):
            return self.error(404, "ProfileNotFound", f"No profile {parts[3]}")
        rest = parts[4:]
        if rest == ["customers"] and req.method == "GET":
            return self._list(req)
        if rest == ["customers", "deleted"] and req.method == "GET":
            return self._deleted(req)
        if len(rest) == 3 and rest[0] == "customers":
            key = f"{rest[2]}|{rest[1]}"
            with self.lock:
                rec = self.store.get(key)
                if rec is None:
                    return self.error(
                        404, "CustomerNotFound", "No customer with that UserId and StoreCode"
                    )
                if req.method == "GET":
                    return Response(200, dict(rec))
                if req.method == "DELETE":
                    self.store.pop(key)
                    self.on_delete(key, rec, utcnow())
                    return Response(204)
        if rest == ["contacts", "upsert"] and req.method == "POST":
            body = req.json()
            with self.lock:
                status, out = self._upsert(body)
            return Response(status, out)
        if rest == ["contacts", "upsert-batch"] and req.method == "POST":
            body = req.json()
            if not isinstance(body, list):
                return self.error(400, "InvalidBody", "expected a JSON array of contacts")
            if len(body) > BATCH_LIMIT:
                return self.error(400, "BatchTooLarge", f"at most {BATCH_LIMIT} contacts per batch")
            results = []
            with self.lock:
                for i, item in enumerate(body):
                    status, out = self._upsert(item)
                    ok = status < 300
                    results.append(
                        {"index": i, "UserId": out.get("UserId"), "StoreCode": out.get("StoreCode"),
                         "Created": out.get("Created", False), "Success": ok, "Error": None if ok else out.get("Error")}
                    )  # fmt: skip
            return Response(200, results)
        return self.error(405, "MethodNotAllowed", f"{req.method} not allowed on {req.path}")

    def _list(self, req: Request) -> Response:
        try:
            offset, limit = int(req.arg("offset", "0")), int(req.arg("limit", "100"))
            since = _parse(req.arg("updatedSince")) if req.arg("updatedSince") else None
        except ValueError:
            return self.error(
                400, "InvalidQuery", "offset/limit must be integers, updatedSince ISO 8601"
            )
        if offset < 0 or not 1 <= limit <= self.page_limit:
            return self.error(400, "InvalidQuery", f"limit must be 1..{self.page_limit}")
        user, store = req.arg("userId"), req.arg("storeCode")
        with self.lock:
            ordered = self.sorted_rows(
                "updated", self.store, key=lambda r: (r["UpdatedAt"], r["UserId"], r["StoreCode"])
            )
            rows = [
                r for r in ordered
                if (user is None or r["UserId"] == user) and (store is None or r["StoreCode"] == store)
                and (since is None or _parse(r["UpdatedAt"]) > since)
            ]  # fmt: skip
        return Response(
            200,
            {
                "items": rows[offset : offset + limit],
                "offset": offset,
                "limit": limit,
                "total": len(rows),
            },
        )

    def _deleted(self, req: Request) -> Response:
        try:
            since = _parse(req.arg("since") or "1970-01-01T00:00:00Z")
        except ValueError:
            return self.error(400, "InvalidQuery", "since must be ISO 8601")
        with self.lock:
            rows = []
            for key, when in self.deleted:
                if when > since:
                    user, _, store = key.rpartition("|")
                    rows.append({"UserId": user, "StoreCode": store, "DeletedAt": ic_time(when)})
        return Response(200, rows)

    def _upsert(self, body: Any) -> tuple[int, dict]:
        """Upsert one contact (caller holds the lock)."""
        if not isinstance(body, dict):
            return 400, {"Error": "InvalidBody", "Message": "expected a JSON object"}
        unknown = set(body) - _FIELDS
        if unknown:
            return 400, {"Error": "UnknownField", "Message": f"unknown fields: {sorted(unknown)}"}
        email = str(body.get("Email") or "").strip()
        if not email or "@" not in email:
            return 400, {
                "Error": "InvalidEmail",
                "Message": "Email is required and must be an address",
            }
        custom = body.get("CustomFields") or []
        if not isinstance(custom, list) or not all(
            isinstance(c, dict) and set(c) == {"Key", "Value"} for c in custom
        ):
            return 400, {
                "Error": "InvalidCustomFields",
                "Message": "CustomFields must be [{Key, Value}]",
            }
        now = ic_time(utcnow())
        target = None
        if body.get("UserId") and body.get("StoreCode"):
            target = self.store.get(f"{body['UserId']}|{body['StoreCode']}")
        if target is None and not body.get("UserId"):
            hits = [r for r in self.store.values() if str(r.get("Email") or "").strip().lower() == email.lower()
                    and (not body.get("StoreCode") or r["StoreCode"] == body["StoreCode"])]  # fmt: skip
            if len(hits) > 1:
                return 409, {
                    "Error": "AmbiguousEmail",
                    "Message": f"{len(hits)} customers share that e-mail",
                }
            target = hits[0] if hits else None
        if target is not None:
            for f, v in body.items():
                if f == "CustomFields":
                    merged = {c["Key"]: c["Value"] for c in target.get("CustomFields") or []}
                    merged.update({c["Key"]: c["Value"] for c in custom})
                    target["CustomFields"] = [{"Key": k, "Value": v2} for k, v2 in merged.items()]
                elif f not in ("UserId", "StoreCode"):
                    target[f] = v
            target["UpdatedAt"] = now
            self.changes.append((self.key_of(target), "Updated", utcnow()))
            return 200, {
                "UserId": target["UserId"],
                "StoreCode": target["StoreCode"],
                "Created": False,
            }
        rec = {
            "UserId": body.get("UserId") or email, "StoreCode": body.get("StoreCode") or "DEFAULT",
            "Email": email, "FirstName": None, "LastName": None, "MobilePhone": None, "CountryCode": None,
            "ProfileId": self.profile_id, "Unsubscribed": False, "CreatedAt": now, "UpdatedAt": now, "CustomFields": [],
        }  # fmt: skip
        for f, v in body.items():
            if f not in ("UserId", "StoreCode"):
                rec[f] = v
        self.store[self.key_of(rec)] = rec
        self.changes.append((self.key_of(rec), "Created", utcnow()))
        return 201, {"UserId": rec["UserId"], "StoreCode": rec["StoreCode"], "Created": True}

    def new_record(self, person: dict, now: datetime) -> dict:
        t = ic_time(now)
        return {
            "UserId": person["email"], "StoreCode": person["store_code"], "Email": person["email"],
            "FirstName": person["first_name"], "LastName": person["last_name"], "MobilePhone": person["phone"],
            "CountryCode": person["country"], "ProfileId": self.profile_id, "Unsubscribed": False,
            "CreatedAt": t, "UpdatedAt": t, "CustomFields": [{"Key": "Language", "Value": person["language"]}],
        }  # fmt: skip

    def edit_record(self, rec: dict, rng: random.Random, now: datetime) -> None:
        rec["FirstName"] = (rec.get("FirstName") or "") + rng.choice(["a", "e", "o"])
        rec["UpdatedAt"] = ic_time(now)
