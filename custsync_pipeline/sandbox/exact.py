"""Exact Online CRM emulator (REST/OData v2), after the public API documentation.

- ``GET /api/v1/{division}/crm/Accounts``, ``/crm/Contacts`` and ``/crm/Addresses``
  (an Account's extra addresses: ``Account`` guid, ``Type`` 1 visit / 2 postal / 3 invoice /
  4 delivery, ``Main``, ``AddressLine1..2``, ``City``, ``Postcode``, ``Country``; the
  Account's own ``AddressLine1``/``City``/``Postcode``/``Country`` are its visit address;
  Contacts carry ``JobTitleDescription``): OData JSON
  ``{"d": {"results": [...], "__next": "<url with $skiptoken=guid'…'>"}}``, ``page_size``
  (default 60) a page, ordered by ``ID``; ``$select=A,B``, ``$filter=Modified ge
  datetime'2024-01-01T00:00:00'`` (``ge``/``gt``/``le``/``lt``/``eq`` on ``Modified`` /
  ``Created``, ``eq`` on strings and guids, joined by ``and``), ``$top``; every record has
  ``__metadata: {uri, type}``; dates are ``/Date(ms)/``; ``Code`` is space-padded to 18;
- ``GET /api/v1/{division}/crm/Accounts(guid'…')``: one record ``{"d": {...}}``;
- ``POST`` on the collection: 201 ``{"d": {...}}`` (the created record; ``Prefer:
  return=representation`` accepted); ``PUT`` / ``DELETE`` on ``(guid'…')``: 204;
- ``GET /api/v1/{division}/sync/Deleted?$filter=Timestamp gt 0L`` (**unsure** in the
  public docs; modeled): ``{d: {results: [{EntityKey, EntityType, DeletedDate,
  Timestamp}]}}`` with EntityType 2 = Account, 3 = Contact (modeled values).

Auth ``Authorization: Bearer <EXACT_ACCESS_TOKEN>``; a division other than the
generated one (``division`` knob, 1) answers 403. Every answer carries
``X-RateLimit-Minutely-Remaining`` / ``X-RateLimit-Minutely-Reset`` (epoch ms) and the
daily ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset``; past ``minutely_limit`` (default
6,000 so tests are quick; the real API allows 60) or ``daily_limit`` calls: 429.
Error body (OData): ``{"error": {"code": "", "message": {"lang": "", "value": …}}}``.
"""

from __future__ import annotations

import bisect
import itertools
import random
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from .server import Emulator, Faults, Request, Response, credential, utcnow

_RESOURCES = {
    "Accounts": "Exact.Web.Api.Models.Account",
    "Contacts": "Exact.Web.Api.Models.Contact",
    "Addresses": "Exact.Web.Api.Models.Address",
}
_FILTER_RE = re.compile(
    r"^\s*(\w+)\s+(eq|ne|ge|gt|le|lt)\s+(datetime'[^']+'|guid'[^']+'|'[^']*'|\d+L?|true|false|null)\s*$",
    re.IGNORECASE,
)
_KEY_RE = re.compile(r"^(\w+)\(guid'([0-9a-fA-F-]{36})'\)$")


def exact_date(dt: datetime) -> str:
    return f"/Date({int(dt.timestamp() * 1000)})/"


def _ms(value: Any) -> int | None:
    m = re.match(r"^/Date\((-?\d+)", str(value or ""))
    return int(m.group(1)) if m else None


class ExactEmulator(Emulator):
    system = "exact"
    id_field = "ID"

    def __init__(
        self,
        data,
        faults: Faults | None = None,
        page_size: int = 60,
        division: int = 1,
        minutely_limit: int = 6000,
        daily_limit: int = 1_000_000,
    ) -> None:
        self.page_size = page_size
        self.division = division
        self.minutely_limit = minutely_limit
        self.daily_limit = daily_limit
        self._minute = 0
        self._minute_used = 0
        self.used = 0
        super().__init__(data, faults)

    def reset(self) -> None:
        super().reset()
        with self.lock:
            contacts = {}
            if "exact.Contact" in self.data.frames:
                contacts = {r["ID"]: r for r in self.data.records("exact.Contact")}
                truth = self.data.truth
                extra = truth[(truth["system"] == "exact") & (truth["object_type"] == "Contact")]
                self.truth_rows = [r for r in self.truth_rows if r["object_type"] != "Contact"]
                self.truth_rows += extra.to_dict("records")
            addresses = {}
            if "exact.Address" in self.data.extras:
                addresses = {r["ID"]: r for r in self.data.records("exact.Address")}
            self.resources: dict[str, dict[str, dict]] = {
                "Accounts": self.store,
                "Contacts": contacts,
                "Addresses": addresses,
            }
            self.deleted_entities: list[tuple[str, int, datetime]] = []
            self.used = 0
            self._minute_used = 0

    def stores(self) -> dict[str, dict[str, dict]]:
        return self.resources

    def authorized(self, req: Request) -> bool:
        auth = req.headers.get("Authorization") or ""
        return auth == f"Bearer {credential('EXACT_ACCESS_TOKEN')}"

    def error(self, status: int, code: str, message: str) -> Response:
        return Response(status, {"error": {"code": "", "message": {"lang": "", "value": message}}})

    def unauthorized(self) -> Response:
        return self.error(401, "", "Unauthorized: invalid or expired access token")

    def _limits(self) -> dict[str, str]:
        minute = int(time.time() // 60)
        return {
            "X-RateLimit-Limit": str(self.daily_limit),
            "X-RateLimit-Remaining": str(max(0, self.daily_limit - self.used)),
            "X-RateLimit-Reset": str(int((time.time() // 86400 + 1) * 86400 * 1000)),
            "X-RateLimit-Minutely-Limit": str(self.minutely_limit),
            "X-RateLimit-Minutely-Remaining": str(max(0, self.minutely_limit - self._minute_used)),
            "X-RateLimit-Minutely-Reset": str((minute + 1) * 60 * 1000),
        }

    def extra_headers(self) -> dict[str, str]:
        return self._limits()

    # ----------------------------------------------------------------- routing
    def route(self, req: Request) -> Response:
        with self.lock:
            minute = int(time.time() // 60)
            if minute != self._minute:
                self._minute, self._minute_used = minute, 0
            self._minute_used += 1
            self.used += 1
            if self._minute_used > self.minutely_limit or self.used > self.daily_limit:
                resp = self.error(429, "", "API rate limit exceeded")
                resp.headers["Retry-After"] = str(max(1, 60 - int(time.time()) % 60))
                return resp
        parts = req.path.strip("/").split("/")
        if len(parts) < 4 or parts[:2] != ["api", "v1"]:
            return self.error(404, "", f"Not found: {req.path}")
        if parts[2] != str(self.division):
            return self.error(403, "", f"Forbidden: no access to division {parts[2]}")
        base = f"/api/v1/{parts[2]}"
        if parts[3:] == ["sync", "Deleted"] and req.method == "GET":
            return self._deleted(req)
        if len(parts) != 5 or parts[3] != "crm":
            return self.error(404, "", f"Not found: {req.path}")
        tail = parts[4]
        key = _KEY_RE.match(tail)
        resource = key.group(1) if key else tail
        if resource not in _RESOURCES:
            return self.error(404, "", f"Resource not found: {resource}")
        if key:
            return self._one(base, resource, key.group(2), req)
        if req.method == "GET":
            return self._list(base, resource, req)
        if req.method == "POST":
            return self._create(base, resource, req.json())
        return self.error(405, "", "Method not allowed")

    def _meta(self, base: str, resource: str, rec: dict, select: list[str] | None = None) -> dict:
        out: dict[str, Any] = {
            "__metadata": {
                "uri": f"{base}/crm/{resource}(guid'{rec['ID']}')",
                "type": _RESOURCES[resource],
            }
        }
        for f in select if select is not None else rec:
            out[f] = rec.get(f)
        return out

    # ----------------------------------------------------------------- reads
    def _filters(self, text: str) -> list[tuple[str, str, Any]]:
        out = []
        for cond in re.split(r"\s+and\s+", text, flags=re.IGNORECASE):
            m = _FILTER_RE.match(cond)
            if not m:
                raise ValueError(cond)
            name, op, lit = m.group(1), m.group(2).lower(), m.group(3)
            if lit.lower().startswith("datetime'"):
                dt = datetime.fromisoformat(lit[9:-1].replace("Z", "+00:00"))
                value: Any = int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)
            elif lit.lower().startswith("guid'"):
                value = lit[5:-1].lower()
            elif lit.startswith("'"):
                value = lit[1:-1]
            elif lit.lower() in ("true", "false"):
                value = lit.lower() == "true"
            elif lit.lower() == "null":
                value = None
            else:
                value = int(lit.rstrip("Ll"))
            out.append((name, op, value))
        return out

    @staticmethod
    def _test(rec: dict, name: str, op: str, value: Any) -> bool:
        got = rec.get(name)
        if isinstance(got, str) and got.startswith("/Date("):
            got = _ms(got)
        elif isinstance(got, str) and isinstance(value, str):
            got = got.lower() if re.fullmatch(r"[0-9a-fA-F-]{36}", got) else got
        if op == "eq":
            return got == value
        if op == "ne":
            return got != value
        if got is None or value is None:
            return False
        try:
            return {"gt": got > value, "ge": got >= value, "lt": got < value, "le": got <= value}[
                op
            ]
        except TypeError:
            return False

    def _list(self, base: str, resource: str, req: Request) -> Response:
        select = [s.strip() for s in (req.arg("$select") or "").split(",") if s.strip()] or None
        try:
            filters = self._filters(req.arg("$filter")) if req.arg("$filter") else []
        except (ValueError, KeyError) as exc:
            return self.error(400, "", f"Invalid $filter: {str(exc)[:60]}")
        skip = req.arg("$skiptoken")
        if skip:
            m = re.fullmatch(r"guid'([0-9a-fA-F-]{36})'", skip)
            if not m:
                return self.error(400, "", "Invalid $skiptoken")
            skip = m.group(1).lower()
        top = int(req.arg("$top")) if (req.arg("$top") or "").isdigit() else None
        with self.lock:
            rows = self.sorted_rows(resource, self.resources[resource], key=lambda r: r["ID"])
        if select:
            unknown = [s for s in select if rows and s not in rows[0]]
            if unknown:
                return self.error(400, "", f"Invalid $select: {unknown[0]}")
        # rows are sorted by ID: jump past the skip token, then filter only until the page is full
        start = bisect.bisect_right(rows, skip, key=lambda r: r["ID"].lower()) if skip else 0
        page_size = min(self.page_size, top) if top else self.page_size
        page: list[dict] = []
        more = False
        for r in itertools.islice(rows, start, None):
            if all(self._test(r, n, o, v) for n, o, v in filters):
                if len(page) == page_size:
                    more = True
                    break
                page.append(r)
        body: dict[str, Any] = {"results": [self._meta(base, resource, r, select) for r in page]}
        if more and not top:
            params = {k: v[0] for k, v in req.query.items() if k != "$skiptoken"}
            params["$skiptoken"] = f"guid'{page[-1]['ID']}'"
            query = "&".join(f"{k}={quote(v, safe=',$')}" for k, v in params.items())
            host = req.headers.get("Host") or "127.0.0.1"
            body["__next"] = f"{self.scheme}://{host}{base}/crm/{resource}?{query}"
        return Response(200, {"d": body})

    def _deleted(self, req: Request) -> Response:
        since = 0
        flt = req.arg("$filter") or ""
        m = re.search(r"Timestamp\s+gt\s+(\d+)L?", flt)
        if m:
            since = int(m.group(1))
        with self.lock:
            rows = [
                {
                    "EntityKey": key,
                    "EntityType": etype,
                    "DeletedDate": exact_date(when),
                    "Timestamp": ts,
                }
                for ts, (key, etype, when) in enumerate(self.deleted_entities, start=1)
                if ts > since
            ]
        return Response(200, {"d": {"results": rows[:1000]}})

    # ----------------------------------------------------------------- writes
    def _validate(self, resource: str, body: Any, creating: bool) -> Response | None:
        if not isinstance(body, dict):
            return self.error(400, "", "Body must be a JSON object")
        for f in ("ID", "Created", "Modified"):
            if f in body and not (f == "ID" and creating):
                return self.error(400, "", f"Property {f} is read-only")
        if creating and resource == "Accounts" and not body.get("Name"):
            return self.error(400, "", "Mandatory: Name")
        if (
            creating
            and resource == "Contacts"
            and not (body.get("Account") and body.get("LastName"))
        ):
            return self.error(400, "", "Mandatory: Account, LastName")
        if resource == "Addresses" and creating and not body.get("Account"):
            return self.error(400, "", "Mandatory: Account")
        if resource in ("Contacts", "Addresses") and body.get("Account"):
            if body["Account"] not in self.store:
                return self.error(400, "", "Account not found")
        return None

    def _create(self, base: str, resource: str, body: Any) -> Response:
        with self.lock:
            bad = self._validate(resource, body, creating=True)
            if bad:
                return bad
            rec = self._blank(resource)
            rec.update(body)
            if resource == "Accounts" and rec.get("Code"):
                rec["Code"] = str(rec["Code"]).strip().rjust(18)
            self.resources[resource][rec["ID"]] = rec
            self.changes.append((rec["ID"], "Created", utcnow()))
            return Response(201, {"d": self._meta(base, resource, rec)})

    def _blank(self, resource: str) -> dict:
        now = exact_date(utcnow())
        rec_id = str(
            uuid.UUID(
                int=random.Random(len(self.changes) * 31 + len(self.store)).getrandbits(128),
                version=4,
            )
        )
        while any(rec_id in store for store in self.resources.values()):
            rec_id = str(uuid.uuid4())
        if resource == "Accounts":
            codes = [
                int(str(r.get("Code") or "0").strip() or 0)
                for r in self.store.values()
                if str(r.get("Code") or "").strip().isdigit()
            ]
            code = str(max(codes, default=10000) + 1).rjust(18)
            return {"ID": rec_id, "Code": code, "Name": None, "Email": None, "Phone": None, "AddressLine1": None,
                    "City": None, "Postcode": None, "Country": None, "Language": None, "Status": "C",
                    "IsSupplier": False, "Division": self.division, "Created": now, "Modified": now}  # fmt: skip
        if resource == "Addresses":
            return {"ID": rec_id, "Account": None, "Type": 1, "Main": False, "AddressLine1": None,
                    "AddressLine2": None, "City": None, "Postcode": None, "Country": None,
                    "Division": self.division, "Created": now, "Modified": now}  # fmt: skip
        return {"ID": rec_id, "Account": None, "FirstName": None, "LastName": None, "Email": None, "Phone": None,
                "BusinessEmail": None, "Division": self.division, "Created": now, "Modified": now}  # fmt: skip

    def _one(self, base: str, resource: str, key: str, req: Request) -> Response:
        with self.lock:
            store = self.resources[resource]
            rec = store.get(key) or store.get(key.lower())
            if rec is None:
                return self.error(404, "", "Record not found")
            if req.method == "GET":
                return Response(200, {"d": self._meta(base, resource, rec)})
            if req.method == "PUT":
                body = req.json()
                bad = self._validate(resource, body, creating=False)
                if bad:
                    return bad
                rec.update(body)
                if resource == "Accounts" and rec.get("Code"):
                    rec["Code"] = str(rec["Code"]).strip().rjust(18)
                rec["Modified"] = exact_date(utcnow())
                self.changes.append((rec["ID"], "Updated", utcnow()))
                return Response(204)
            if req.method == "DELETE":
                store.pop(rec["ID"])
                self._log_delete(rec["ID"], {"Accounts": 2, "Contacts": 3}.get(resource, 0))
                return Response(204)
        return self.error(405, "", "Method not allowed")

    def _log_delete(self, key: str, entity_type: int) -> None:
        now = utcnow()
        self.deleted.append((key, now))
        self.deleted_entities.append((key, entity_type, now))
        self.changes.append((key, "Deleted", now))

    def on_delete(self, key: str, rec: dict, now: datetime) -> None:
        self._log_delete(key, 2)

    # ----------------------------------------------------------------- changes knob
    def new_record(self, person: dict, now: datetime) -> dict:
        rec = self._blank("Accounts")
        rec.update(
            {
                "Name": f"{person['first_name']} {person['last_name']}",
                "Email": person["email"],
                "Phone": person["phone"],
                "AddressLine1": person["street"],
                "City": person["city"],
                "Postcode": person["postal_code"],
                "Country": person["country"],
                "Language": person["language"].upper(),
            }
        )
        return rec

    def edit_record(self, rec: dict, rng: random.Random, now: datetime) -> None:
        rec["City"] = rng.choice(["Lund", "Umeå", "Visby", "Kiruna"])
        rec["Modified"] = exact_date(now)

    # Contacts through the changes knob (object_type="Contacts")
    def new_record_of(self, object_type: str, person: dict, now: datetime) -> dict:
        rec = self._blank("Contacts")
        accounts = sorted(self.store)
        rec.update(
            {
                "Account": accounts[len(self.changes) % len(accounts)] if accounts else None,
                "FirstName": person["first_name"],
                "LastName": person["last_name"],
                "Email": person["email"],
                "Phone": person["phone"],
            }
        )
        return rec

    def edit_record_of(
        self, object_type: str, rec: dict, rng: random.Random, now: datetime
    ) -> None:
        rec["Phone"] = f"+4670{rng.randrange(10**6, 10**7)}"
        rec["Modified"] = exact_date(now)

    def on_delete_of(self, object_type: str, key: str, rec: dict, now: datetime) -> None:
        self._log_delete(key, 3)

    def truth_object_type(self, object_type: str | None) -> str:
        return "Contact" if object_type == "Contacts" else super().truth_object_type(object_type)
