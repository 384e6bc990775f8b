"""Voyado Engage contacts emulator (API v3), after the public API documentation.

- ``GET /api/v3/contacts/{id}``: one contact;
- ``GET /api/v3/contacts/id?email=…|mobilePhone=…|externalId=…``: the contact id as a
  JSON string; 404 ``ContactNotFound``, 409 ``MultipleMatches``;
- ``POST /api/v3/contacts`` (query ``source``, ``storeExternalId``): create, 201 with the
  contact; 409 ``ContactAlreadyExists`` when the key field (``key_field`` knob, e-mail by
  default) already holds that value;
- ``PATCH /api/v3/contacts/{id}``: partial update where an empty or null value sent
  **overwrites** the stored one (as the real API does: never send empties);
- ``POST|PATCH /api/v3/contacts/bulk``: at most 4,000 contacts (400 above), processed at
  once; answers ``{batchId, status: "Completed", results: [{index, contactId, success,
  created, error}]}``, also at ``GET /api/v3/contacts/bulk/status?batchId=``;
- ``GET /api/v3/contacts/changes?changeType=Created|Updated|Deleted&fromDate=&toDate=``:
  the contact ids whose ``createdDate`` / ``lastModified`` / deletion falls in the
  window (400 when more than 250,000 would be returned);
- ``GET /api/v3/contacts?offset=&count=`` (count ≤ 1,000): **modeled, not a documented
  Voyado endpoint**: a full-snapshot listing ``{items, offset, count, totalCount}`` so a
  reader need not fetch 100k contacts one id at a time. A faithful reader uses the
  change feed + ``GET /contacts/{id}``.

Knob ``max_rps``: answer 429 (``Retry-After: 1``) above that many requests in one second
(the real API does so above 200/s per key); off by default.

Consents (``preferences.acceptsEmail`` / ``acceptsSms``: ``Yes`` / ``No`` / ``Not set``):
once Yes or No, a write of ``Not set`` or null is ignored (a consent never returns to
``Not set``). When each was set is in the contact's ``consents`` list (modeled on the v3
consent object: ``[{id, value, date, source, comment}]``, ``id`` = the preference name); a
write that sets or changes a preference stamps its entry with the time of the write. Custom
contact attributes are top-level fields, as in v3 (the sandbox's: ``segment``,
``favoriteCategory``). Header ``apikey`` (401 otherwise); a write without
``Content-Type: application/json`` answers 500, as the real API does.
Error body: ``{"errorCode", "message", "statusCode"}``.

Point accounts and point transactions (a contact's points balance): ``voyado_loyalty.py``.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from datetime import datetime
from typing import Any

from .server import Emulator, Faults, Request, Response, credential, utcnow
from .voyado_loyalty import VoyadoLoyaltyMixin

_CONSENTS = ("acceptsEmail", "acceptsSms", "acceptsPostal")
_SET = ("Yes", "No")
BULK_LIMIT = 4000
CHANGES_LIMIT = 250_000


def vy_time(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _parse(value: str) -> datetime:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=utcnow().tzinfo)


def _digits(phone: Any) -> str:
    return re.sub(r"[^\d+]", "", str(phone or ""))


class VoyadoEmulator(VoyadoLoyaltyMixin, Emulator):
    system = "voyado"
    id_field = "id"

    def __init__(
        self,
        data,
        faults: Faults | None = None,
        key_field: str = "email",
        max_rps: float | None = None,
    ) -> None:
        self.key_field = key_field
        self.max_rps = (
            max_rps  # the real API answers 429 above 200 requests/s per key; off by default
        )
        self._window: list[float] = []
        self.batches: dict[str, dict] = {}
        super().__init__(data, faults)

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.reset_loyalty()  # points move to point accounts (voyado_loyalty.py)

    def authorized(self, req: Request) -> bool:
        return req.headers.get("apikey") == credential("VOYADO_API_KEY")

    def error(self, status: int, code: str, message: str) -> Response:
        return Response(status, {"errorCode": code, "message": message, "statusCode": status})

    def unauthorized(self) -> Response:
        return self.error(401, "Unauthorized", "Missing or invalid apikey header")

    # ----------------------------------------------------------------- routing
    def route(self, req: Request) -> Response:
        if self.max_rps:
            now = time.monotonic()
            with self.lock:
                self._window = [t for t in self._window if now - t < 1.0]
                self._window.append(now)
                over = len(self._window) > self.max_rps
            if over:
                resp = self.error(429, "TooManyRequests", "Rate limit exceeded")
                resp.headers["Retry-After"] = "1"
                return resp
        if req.method in ("POST", "PATCH", "PUT") and "application/json" not in (
            req.headers.get("Content-Type") or ""
        ):
            return self.error(500, "InternalServerError", "An error has occurred.")
        parts = req.path.strip("/").split("/")
        loyalty = self.route_loyalty(req, parts)
        if loyalty is not None:
            return loyalty
        if parts[:3] == ["api", "v2", "receipts"]:  # receipts: sandbox/transactions.py
            from .transactions import voyado_receipts_route

            return voyado_receipts_route(self, req)
        if parts[:3] != ["api", "v3", "contacts"]:
            return self.error(404, "NotFound", f"No resource at {req.path}")
        rest = parts[3:]
        if not rest:
            if req.method == "GET":
                return self._list(req)
            if req.method == "POST":
                return self._create(req.json(), req.arg("storeExternalId"))
        elif rest == ["id"] and req.method == "GET":
            return self._find(req)
        elif rest == ["changes"] and req.method == "GET":
            return self._changes(req)
        elif rest == ["bulk"] and req.method in ("POST", "PATCH"):
            return self._bulk(req.method, req.json())
        elif rest == ["bulk", "status"] and req.method == "GET":
            batch = self.batches.get(req.arg("batchId") or "")
            return (
                Response(200, batch) if batch else self.error(404, "BatchNotFound", "No such batch")
            )
        elif len(rest) == 1:
            if req.method == "GET":
                with self.lock:
                    rec = self.store.get(rest[0])
                return (
                    Response(200, rec)
                    if rec
                    else self.error(404, "ContactNotFound", "Contact not found")
                )
            if req.method == "PATCH":
                return self._patch(rest[0], req.json())
            if req.method == "DELETE":
                with self.lock:
                    rec = self.store.pop(rest[0], None)
                    if rec is None:
                        return self.error(404, "ContactNotFound", "Contact not found")
                    self.on_delete(rest[0], rec, utcnow())
                return Response(204)
        return self.error(405, "MethodNotAllowed", f"{req.method} not allowed on {req.path}")

    # ----------------------------------------------------------------- reads
    def _list(self, req: Request) -> Response:
        try:
            offset, count = int(req.arg("offset", "0")), int(req.arg("count", "100"))
        except ValueError:
            return self.error(400, "InvalidParameter", "offset and count must be integers")
        if offset < 0 or not 1 <= count <= 1000:
            return self.error(400, "InvalidParameter", "count must be 1..1000")
        with self.lock:
            rows = list(self.store.values())
        return Response(
            200,
            {
                "items": rows[offset : offset + count],
                "offset": offset,
                "count": count,
                "totalCount": len(rows),
            },
        )

    def _find(self, req: Request) -> Response:
        for field in ("email", "mobilePhone", "externalId", "memberNumber"):
            value = req.arg(field)
            if value is None:
                continue
            with self.lock:
                if field == "email":
                    hits = [
                        k
                        for k, r in self.store.items()
                        if str(r.get("email") or "").strip().lower() == value.strip().lower()
                    ]
                elif field == "mobilePhone":
                    hits = [
                        k
                        for k, r in self.store.items()
                        if r.get("mobilePhone") and _digits(r["mobilePhone"]) == _digits(value)
                    ]
                else:
                    hits = [
                        k
                        for k, r in self.store.items()
                        if r.get(field) is not None and str(r[field]) == value
                    ]
            if not hits:
                return self.error(404, "ContactNotFound", "No contact matches the key")
            if len(hits) > 1:
                return self.error(409, "MultipleMatches", f"{len(hits)} contacts match the key")
            return Response(200, hits[0])
        return self.error(
            400, "InvalidParameter", "give one of email, mobilePhone, externalId, memberNumber"
        )

    def _changes(self, req: Request) -> Response:
        kind = req.arg("changeType", "Updated")
        if kind not in ("Created", "Updated", "Deleted"):
            return self.error(
                400, "InvalidParameter", "changeType must be Created, Updated or Deleted"
            )
        try:
            start = _parse(req.arg("fromDate") or "1970-01-01T00:00:00Z")
            end = _parse(req.arg("toDate") or vy_time(utcnow()))
        except ValueError:
            return self.error(400, "InvalidParameter", "fromDate and toDate must be ISO 8601")
        with self.lock:
            if kind == "Deleted":
                ids = [i for i, when in self.deleted if start <= when <= end]
            else:
                field = "createdDate" if kind == "Created" else "lastModified"
                ids = [
                    k
                    for k, r in self.store.items()
                    if r.get(field) and start <= _parse(r[field]) <= end
                ]
        if len(ids) > CHANGES_LIMIT:
            return self.error(
                400, "TooManyResults", f"more than {CHANGES_LIMIT} changes: narrow the window"
            )
        return Response(200, ids)

    # ----------------------------------------------------------------- writes
    def _check_body(self, body: Any) -> Response | None:
        if not isinstance(body, dict):
            return self.error(400, "InvalidModel", "body must be a JSON object")
        if "id" in body:
            return self.error(400, "InvalidModel", "id is read-only")
        return None

    def _merge(self, rec: dict, body: dict) -> None:
        """Apply a partial update: every key sent overwrites, empties included; consents never unset."""
        for key, value in body.items():
            if key in ("preferences",) and isinstance(value, dict):
                prefs = dict(rec.get("preferences") or {})
                for name, v in value.items():
                    if name in _CONSENTS and prefs.get(name) in _SET and v not in _SET:
                        continue  # once set, a consent never returns to "Not set"
                    if name in _CONSENTS and v in _SET and prefs.get(name) != v:
                        self._stamp_consent(rec, name, v)
                    prefs[name] = v
                rec["preferences"] = prefs
            elif key in ("createdDate", "lastModified"):
                continue
            else:
                rec[key] = value

    @staticmethod
    def _stamp_consent(rec: dict, name: str, value: str) -> None:
        """A consent set or changed: its entry in ``consents`` gets the value and today's date."""
        consents = [c for c in rec.get("consents") or [] if c.get("id") != name]
        consents.append(
            {
                "id": name,
                "value": value,
                "date": vy_time(utcnow()),
                "source": "API",
                "comment": None,
            }
        )
        rec["consents"] = consents

    def _key_taken(self, body: dict) -> bool:
        value = body.get(self.key_field)
        if value in (None, ""):
            return False
        norm = str(value).strip().lower()
        return any(
            str(r.get(self.key_field) or "").strip().lower() == norm for r in self.store.values()
        )

    def _new(self, body: dict, store_id: str | None) -> dict:
        now = vy_time(utcnow())
        rec: dict[str, Any] = {
            "id": str(uuid.UUID(int=random.Random(len(self.store) * 7919 + len(self.changes)).getrandbits(128), version=4)),
            "firstName": None, "lastName": None, "email": None, "mobilePhone": None, "street": None,
            "zipCode": None, "city": None, "countryCode": None, "language": None, "contactType": "Member",
            "externalId": None, "memberNumber": None, "storeExternalId": store_id,
            "preferences": {"acceptsEmail": "Not set", "acceptsSms": "Not set"},
            "loyalty": {"tier": None}, "consents": [], "createdDate": now,
            "lastModified": now,
        }  # fmt: skip
        while rec["id"] in self.store:
            rec["id"] = str(uuid.uuid4())
        self._merge(rec, body)
        self.store[rec["id"]] = rec
        self.changes.append((rec["id"], "Created", utcnow()))
        return rec

    def _create(self, body: Any, store_id: str | None) -> Response:
        bad = self._check_body(body)
        if bad:
            return bad
        with self.lock:
            if not body.get(self.key_field):
                return self.error(400, "InvalidModel", f"key field {self.key_field} is required")
            if self._key_taken(body):
                return self.error(
                    409, "ContactAlreadyExists", f"a contact with that {self.key_field} exists"
                )
            return Response(201, dict(self._new(body, store_id)))

    def _patch(self, contact_id: str, body: Any) -> Response:
        bad = self._check_body(body)
        if bad:
            return bad
        with self.lock:
            rec = self.store.get(contact_id)
            if rec is None:
                return self.error(404, "ContactNotFound", "Contact not found")
            self._merge(rec, body)
            rec["lastModified"] = vy_time(utcnow())
            self.changes.append((contact_id, "Updated", utcnow()))
            return Response(200, dict(rec))

    def _bulk(self, method: str, body: Any) -> Response:
        if not isinstance(body, list):
            return self.error(400, "InvalidModel", "bulk body must be a JSON array of contacts")
        if len(body) > BULK_LIMIT:
            return self.error(
                400, "TooManyContacts", f"at most {BULK_LIMIT} contacts per bulk request"
            )
        results = []
        with self.lock:
            for i, item in enumerate(body):
                if not isinstance(item, dict):
                    results.append(
                        {
                            "index": i,
                            "contactId": None,
                            "success": False,
                            "created": False,
                            "error": "InvalidModel",
                        }
                    )
                    continue
                item = dict(item)
                cid = item.pop("id", None)
                if method == "PATCH":
                    if cid not in self.store:
                        results.append(
                            {
                                "index": i,
                                "contactId": cid,
                                "success": False,
                                "created": False,
                                "error": "ContactNotFound",
                            }
                        )
                        continue
                    self._merge(self.store[cid], item)
                    self.store[cid]["lastModified"] = vy_time(utcnow())
                    self.changes.append((cid, "Updated", utcnow()))
                    results.append(
                        {
                            "index": i,
                            "contactId": cid,
                            "success": True,
                            "created": False,
                            "error": None,
                        }
                    )
                elif not item.get(self.key_field):
                    results.append(
                        {
                            "index": i,
                            "contactId": None,
                            "success": False,
                            "created": False,
                            "error": "InvalidModel",
                        }
                    )
                elif self._key_taken(item):
                    results.append(
                        {
                            "index": i,
                            "contactId": None,
                            "success": False,
                            "created": False,
                            "error": "ContactAlreadyExists",
                        }
                    )
                else:
                    rec = self._new(item, item.get("storeExternalId"))
                    results.append(
                        {
                            "index": i,
                            "contactId": rec["id"],
                            "success": True,
                            "created": True,
                            "error": None,
                        }
                    )
            batch_id = f"batch-{len(self.batches) + 1:06d}"
            self.batches[batch_id] = {
                "batchId": batch_id,
                "status": "Completed",
                "results": results,
            }
        return Response(200, self.batches[batch_id])

    # ----------------------------------------------------------------- changes knob
    def new_record(self, person: dict, now: datetime) -> dict:
        rec = self._new(
            {
                "firstName": person["first_name"], "lastName": person["last_name"], "email": person["email"],
                "mobilePhone": person["phone"], "street": person["street"], "zipCode": person["postal_code"],
                "city": person["city"], "countryCode": person["country"], "language": person["language"],
                "preferences": {"acceptsEmail": "Yes", "acceptsSms": "Not set"},
            },
            person["store_code"],
        )  # fmt: skip
        self.store.pop(rec["id"])
        self.changes.pop()  # the caller records the change
        return rec

    def edit_record(self, rec: dict, rng: random.Random, now: datetime) -> None:
        rec["city"] = rng.choice(["Lund", "Umeå", "Visby", "Kiruna"])
        rec["lastModified"] = vy_time(now)
