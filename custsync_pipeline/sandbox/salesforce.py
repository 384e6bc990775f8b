"""Salesforce REST emulator (Contact; Account and Lead answer queries too, empty unless written).

Paths under ``/services/data/vNN.0/``:

- ``GET query?q=SOQL`` and ``GET query/<locator>-<offset>``: ``SELECT f1, f2 FROM
  Contact|Account|Lead [WHERE f op value [AND ...]] [ORDER BY f [ASC|DESC]] [LIMIT n]``,
  ``page_size`` (default 2,000) records a page with ``nextRecordsUrl`` until ``done``;
  bad SOQL -> 400 ``MALFORMED_QUERY``, unknown field -> 400 ``INVALID_FIELD``;
- ``GET|PATCH|DELETE sobjects/<Type>/<Id>``, ``POST sobjects/<Type>``;
- ``PATCH sobjects/<Type>/<ExtIdField>/<value>``: upsert, 201 created / 204 updated /
  300 when several records hold the value (nothing written);
- ``PATCH composite/sobjects/<Type>/<ExtIdField>``: upsert up to 200, per-record
  ``{id, success, created, errors}`` in request order (``allOrNone`` honoured);
- ``PATCH|POST composite/sobjects``: update by ``Id`` / create, up to 200;
- ``GET sobjects/<Type>/deleted/?start=&end=``: ``{deletedRecords: [{id, deletedDate}], ...}``;
  ``GET sobjects/<Type>/updated/?start=&end=``: ``{ids, latestDateCovered}``;
- ``GET queryAll?q=``: like ``query`` plus deleted records (``IsDeleted = true``).

WHERE supports ``= != <> > >= < <=``, ``IN (...)``, ``NOT IN (...)``, ``LIKE '%x%'`` joined
by ``AND`` (no ``OR``, no sub-queries, no relationship fields).

Lead conversion (Salesforce converts through SOAP ``convertLead`` or Apex, not REST): the
admin call ``POST /_sandbox/convert_lead`` ``{"lead_id", "contact_id"?}`` (or
:meth:`SalesforceEmulator.convert_lead`) marks the Lead ``IsConverted``, ``Status: Closed -
Converted``, sets ``ConvertedContactId`` (the given Contact, else a new one made from the
Lead's fields) and ``ConvertedDate``, as a conversion does. Contacts carry the loyalty custom
fields ``Loyalty_Tier__c``, ``Loyalty_Points__c`` (number) and ``Membership_Status__c``.

Auth ``Authorization: Bearer <SALESFORCE_ACCESS_TOKEN>`` (401 ``INVALID_SESSION_ID``).
Every answer carries ``Sforce-Limit-Info: api-usage=used/limit``; past ``daily_limit``
calls: 403 ``REQUEST_LIMIT_EXCEEDED``. Writes set ``LastModifiedDate``.
"""

from __future__ import annotations

import random
import re
from datetime import datetime
from typing import Any

from .server import BadRequest, Emulator, Faults, Request, Response, credential

_ID_PREFIX = {"Contact": "003", "Account": "001", "Lead": "00Q", "Purchase__c": "a0P"}
_EXTRA_FIELDS = {
    "Contact": (
        "AccountId",
        "MobilePhone",
        "Title",
        "MailingStreet",
        "MailingCity",
        "MailingPostalCode",
        "MailingCountry",
        "OtherStreet",
        "OtherCity",
        "OtherPostalCode",
        "OtherCountry",
        "Birthdate",
        "Description",
        "LeadSource",
        "Salutation",
        "Loyalty_Points__c",
        "Membership_Status__c",
    ),
    "Account": (
        "Name",
        "Phone",
        "Website",
        "BillingCity",
        "BillingCountry",
        "BillingPostalCode",
        "BillingStreet",
        "ShippingCity",
        "ShippingCountry",
        "ShippingPostalCode",
        "ShippingStreet",
        "Customer_Number__c",
        "Custsync_Id__c",
        "Voyado_Id__c",
        "Loyalty_Tier__c",
        "Description",
    ),
    "Lead": (
        "FirstName",
        "LastName",
        "Email",
        "Phone",
        "Company",
        "Country",
        "City",
        "PostalCode",
        "Street",
        "Status",
        "Custsync_Id__c",
        "Description",
        "IsConverted",
        "ConvertedContactId",
        "ConvertedAccountId",
        "ConvertedDate",
    ),
}
_SYSTEM_FIELDS = ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SOQL_RE = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<obj>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?(?:\s+ORDER\s+BY\s+(?P<order>.+?))?(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_COND_RE = re.compile(
    r"^\s*(\w+)\s*(=|!=|<>|>=|<=|>|<|\bNOT\s+IN\b|\bIN\b|\bLIKE\b)\s*(.+?)\s*$",
    re.DOTALL | re.IGNORECASE,
)
_LIST_ITEM_RE = re.compile(r"'(?:[^'\\]|\\.)*'|[^,\s()]+")
_DT_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)$")


def sf_time(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}+0000"


def _parse_dt(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _errors(status: int, code: str, message: str, fields: list[str] | None = None) -> Response:
    return Response(status, [{"message": message, "errorCode": code, "fields": fields or []}])


class SalesforceEmulator(Emulator):
    system = "salesforce"
    id_field = "Id"

    def __init__(
        self,
        data,
        faults: Faults | None = None,
        page_size: int = 2000,
        daily_limit: int = 1_000_000,
        api_version: str = "60.0",
    ) -> None:
        self.page_size = page_size
        self.daily_limit = daily_limit
        self.api_version = api_version
        self.used = 0
        self._cursors: dict[str, list[dict]] = {}
        self._locator = 0
        self._new_ids = 0
        super().__init__(data, faults)

    def reset(self) -> None:
        super().reset()
        with self.lock:
            # one store per object type; the base store holds Contacts
            def load(key: str) -> dict[str, dict]:
                recs = self.data.records(key) if key in self.data.frames else []
                return {r["Id"]: r for r in recs}

            self.objects: dict[str, dict[str, dict]] = {
                "Contact": self.store,
                "Account": load("salesforce.Account"),
                "Lead": load("salesforce.Lead"),
            }
            self.tombstones: dict[str, dict[str, dict]] = {"Contact": {}, "Account": {}, "Lead": {}}
            self.deleted_by_type: dict[str, list[tuple[str, datetime]]] = {
                "Contact": self.deleted,
                "Account": [],
                "Lead": [],
            }
            self.fields: dict[str, set[str]] = {}
            self.shape: dict[str, list[str]] = {}  # keys every stored record of a type carries
            for obj, store in self.objects.items():
                first = next(iter(store.values()), {})
                self.fields[obj] = set(first) | set(_EXTRA_FIELDS[obj]) | set(_SYSTEM_FIELDS)
                self.shape[obj] = list(first) or ["Id", *_EXTRA_FIELDS[obj], "IsDeleted"]
            self.used = 0
            from .transactions import add_purchase_object

            add_purchase_object(self)  # the Purchase__c custom object (transactions)

    def stores(self) -> dict[str, dict[str, dict]]:
        return self.objects

    # ----------------------------------------------------------------- plumbing
    def authorized(self, req: Request) -> bool:
        auth = req.headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        return scheme.lower() in ("bearer", "oauth") and token == credential(
            "SALESFORCE_ACCESS_TOKEN"
        )

    def unauthorized(self) -> Response:
        return _errors(401, "INVALID_SESSION_ID", "Session expired or invalid")

    def error(self, status: int, code: str, message: str) -> Response:
        return _errors(status, code, message)

    def extra_headers(self) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={self.used}/{self.daily_limit}"}

    def _new_id(self, obj: str) -> str:
        self._new_ids += 1
        return f"{_ID_PREFIX[obj]}Sb{self._new_ids:010d}IAA"

    # ----------------------------------------------------------------- routing
    def route(self, req: Request) -> Response:
        with self.lock:
            self.used += 1
            if self.used > self.daily_limit:
                return _errors(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        m = re.match(r"^/services/data/v(\d+\.\d)/?(.*)$", req.path)
        if req.path.rstrip("/") == "/services/data":
            return Response(
                200,
                [
                    {
                        "label": "Sandbox",
                        "url": f"/services/data/v{self.api_version}",
                        "version": self.api_version,
                    }
                ],
            )
        if not m:
            return _errors(404, "NOT_FOUND", "The requested resource does not exist")
        ver, rest = m.group(1), m.group(2).rstrip("/")
        parts = rest.split("/") if rest else []
        method = req.method
        if parts[:1] in (["query"], ["queryAll"]):
            if len(parts) == 1 and method == "GET":
                return self._query(ver, req.arg("q") or "", include_deleted=parts[0] == "queryAll")
            if len(parts) == 2 and method == "GET":
                return self._query_more(ver, parts[1])
        if parts[:3] == ["composite", "sobjects", "Purchase__c"] and len(parts) == 4:
            from .transactions import salesforce_purchases_upsert

            if method == "PATCH":
                return salesforce_purchases_upsert(self, parts[3], req.json())
        if parts[:2] == ["composite", "sobjects"]:
            if len(parts) == 4 and method == "PATCH":
                return self._composite_upsert(ver, parts[2], parts[3], req.json())
            if len(parts) == 2 and method in ("PATCH", "POST"):
                return self._composite_write(ver, method, req.json())
            if len(parts) == 2 and method == "DELETE":
                ids = (req.arg("ids") or "").split(",")
                return Response(200, [self._delete_one(i) for i in ids if i])
        if parts[:1] == ["sobjects"] and len(parts) >= 2:
            obj = self._object(parts[1])
            if len(parts) == 2 and method == "POST":
                return self._create(ver, obj, req.json() or {})
            if len(parts) == 3 and parts[2] == "deleted" and method == "GET":
                return self._deleted(obj, req)
            if len(parts) == 3 and parts[2] == "updated" and method == "GET":
                return self._updated(obj, req)
            if len(parts) == 3 and parts[2] == "describe" and method == "GET":
                return Response(
                    200, {"name": obj, "fields": [{"name": f} for f in sorted(self.fields[obj])]}
                )
            if len(parts) == 3:
                return self._by_id(ver, obj, parts[2], method, req)
            if len(parts) == 4 and method == "PATCH":
                return self._upsert_one(ver, obj, parts[2], parts[3], req.json() or {})
            if len(parts) == 4 and method == "GET":
                matches = self._match(obj, parts[2], parts[3])
                if not matches:
                    return _errors(
                        404,
                        "NOT_FOUND",
                        "Provided external ID field does not exist or is not accessible",
                    )
                return Response(200, self._with_attributes(ver, obj, matches[0]))
        return _errors(404, "NOT_FOUND", "The requested resource does not exist")

    def _object(self, name: str) -> str:
        for obj in self.objects:
            if obj.lower() == name.lower():
                return obj
        raise BadRequest(
            _errors(
                404,
                "NOT_FOUND",
                f"The requested resource does not exist: sObject type '{name}' is not supported.",
            )
        )

    def _with_attributes(
        self, ver: str, obj: str, rec: dict, fields: list[str] | None = None
    ) -> dict:
        out: dict[str, Any] = {
            "attributes": {"type": obj, "url": f"/services/data/v{ver}/sobjects/{obj}/{rec['Id']}"}
        }
        for f in fields if fields is not None else rec:
            out[f] = rec.get(f)
        return out

    # ----------------------------------------------------------------- query
    def _query(self, ver: str, soql: str, include_deleted: bool = False) -> Response:
        m = _SOQL_RE.match(soql)
        if not m:
            return _errors(400, "MALFORMED_QUERY", f"unexpected token in query: {soql[:40]!r}")
        obj_name = m.group("obj")
        try:
            obj = self._object(obj_name)
        except BadRequest:
            return _errors(400, "INVALID_TYPE", f"sObject type '{obj_name}' is not supported.")
        fields = [f.strip() for f in m.group("fields").split(",")]
        if any(not re.fullmatch(r"\w+", f) for f in fields):
            return _errors(400, "MALFORMED_QUERY", "only plain field names are supported in SELECT")
        known = {f.lower(): f for f in self.fields[obj]}
        for f in fields:
            if f.lower() not in known:
                return _errors(400, "INVALID_FIELD", f"No such column '{f}' on entity '{obj}'.")
        fields = [known[f.lower()] for f in fields]
        conds = []
        if m.group("where"):
            for cond in re.split(r"\s+AND\s+", m.group("where"), flags=re.IGNORECASE):
                cm = _COND_RE.match(cond)
                if not cm or cm.group(1).lower() not in known:
                    return _errors(400, "MALFORMED_QUERY", f"cannot parse condition: {cond[:40]!r}")
                op = " ".join(cm.group(2).upper().split())
                if op in ("IN", "NOT IN"):
                    text = cm.group(3).strip()
                    if not (text.startswith("(") and text.endswith(")")):
                        return _errors(400, "MALFORMED_QUERY", f"IN needs a (list): {cond[:40]!r}")
                    value: Any = [self._literal(t) for t in _LIST_ITEM_RE.findall(text[1:-1])]
                elif op == "LIKE":
                    lit = self._literal(cm.group(3))
                    pattern = re.escape(str(lit)).replace("%", ".*").replace("_", ".")
                    value = re.compile(f"^{pattern}$", re.IGNORECASE | re.DOTALL)
                else:
                    value = self._literal(cm.group(3))
                conds.append((known[cm.group(1).lower()], op, value))
        with self.lock:
            # queryAll also returns deleted records (IsDeleted = true), as Salesforce does
            pool = list(self.objects[obj].values())
            if include_deleted:
                pool += list(self.tombstones[obj].values())
            rows = [r for r in pool if all(self._test(r.get(f), op, v) for f, op, v in conds)]
        if m.group("order"):
            for term in reversed([t.strip() for t in m.group("order").split(",")]):
                name, _, direction = term.partition(" ")
                if name.lower() not in known:
                    return _errors(400, "MALFORMED_QUERY", f"cannot order by {name!r}")
                key = known[name.lower()]
                rows.sort(
                    key=lambda r, k=key: (r.get(k) is None, r.get(k) or ""),
                    reverse=direction.strip().upper() == "DESC",
                )
        if m.group("limit"):
            rows = rows[: int(m.group("limit"))]
        result = [self._with_attributes(ver, obj, r, fields) for r in rows]
        with self.lock:
            self._locator += 1
            locator = f"01gSb{self._locator:013d}"
            self._cursors[locator] = result
            if len(self._cursors) > 200:  # bounded memory: forget the oldest cursors
                self._cursors.pop(next(iter(self._cursors)))
        return self._page(ver, locator, 0)

    def _query_more(self, ver: str, token: str) -> Response:
        locator, _, offset = token.rpartition("-")
        if locator not in self._cursors or not offset.isdigit():
            return _errors(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(ver, locator, int(offset))

    def _page(self, ver: str, locator: str, offset: int) -> Response:
        rows = self._cursors[locator]
        end = offset + self.page_size
        body: dict[str, Any] = {
            "totalSize": len(rows),
            "done": end >= len(rows),
            "records": rows[offset:end],
        }
        if end < len(rows):
            body["nextRecordsUrl"] = f"/services/data/v{ver}/query/{locator}-{end}"
        return Response(200, body)

    @staticmethod
    def _literal(text: str) -> Any:
        t = text.strip()
        if len(t) >= 2 and t[0] == t[-1] == "'":
            return t[1:-1].replace("\\'", "'")
        if t.lower() == "null":
            return None
        if t.lower() in ("true", "false"):
            return t.lower() == "true"
        if _DT_RE.match(t):
            return _parse_dt(t)
        try:
            return float(t)
        except ValueError:
            raise BadRequest(
                _errors(400, "MALFORMED_QUERY", f"unexpected literal: {t[:40]!r}")
            ) from None

    @staticmethod
    def _test(value: Any, op: str, lit: Any) -> bool:
        if op in ("IN", "NOT IN"):
            hit = any(SalesforceEmulator._test(value, "=", item) for item in lit)
            return hit if op == "IN" else not hit
        if op == "LIKE":
            return value is not None and bool(lit.match(str(value)))
        if isinstance(lit, datetime):
            if value is None:
                return False
            value = _parse_dt(str(value))
        if op == "=":
            return value == lit
        if op in ("!=", "<>"):
            return value != lit
        if value is None or lit is None:
            return False
        try:
            return {">": value > lit, ">=": value >= lit, "<": value < lit, "<=": value <= lit}[op]
        except TypeError:
            return False

    # ----------------------------------------------------------------- writes
    def _check(self, obj: str, body: dict, creating: bool) -> list[dict]:
        errs = []
        for f in body:
            if f != "attributes" and f not in self.fields[obj]:
                errs.append(
                    {
                        "statusCode": "INVALID_FIELD",
                        "message": f"No such column '{f}' on sobject of type {obj}",
                        "fields": [f],
                    }
                )
        for f in ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp"):
            if f in body and f != "Id":
                errs.append(
                    {
                        "statusCode": "INVALID_FIELD_FOR_INSERT_UPDATE",
                        "message": f"Unable to create/update fields: {f}",
                        "fields": [f],
                    }
                )
        email = body.get("Email")
        if email not in (None, "") and not _EMAIL_RE.match(str(email)):
            errs.append(
                {
                    "statusCode": "INVALID_EMAIL_ADDRESS",
                    "message": "Email: invalid email address",
                    "fields": ["Email"],
                }
            )
        if creating and obj in ("Contact", "Lead") and not body.get("LastName"):
            errs.append(
                {
                    "statusCode": "REQUIRED_FIELD_MISSING",
                    "message": "Required fields are missing: [LastName]",
                    "fields": ["LastName"],
                }
            )
        return errs

    def _apply(self, obj: str, rec_id: str | None, body: dict) -> tuple[str, bool]:
        """Create (rec_id None) or update; returns (id, created). Caller holds the lock and checked."""
        now = sf_time(_now())
        fields = {k: v for k, v in body.items() if k not in ("attributes", "Id")}
        store = self.objects[obj]
        if rec_id is None:
            rec_id = self._new_id(obj)
            rec = dict.fromkeys(self.shape[obj])
            rec.update({"Id": rec_id, "IsDeleted": False, "CreatedDate": now})
            rec.update(fields)
            rec["LastModifiedDate"] = now
            store[rec_id] = rec
            self.changes.append((rec_id, "Created", _now()))
            return rec_id, True
        store[rec_id].update(fields)
        store[rec_id]["LastModifiedDate"] = now
        self.changes.append((rec_id, "Updated", _now()))
        return rec_id, False

    def _match(self, obj: str, field: str, value: str) -> list[dict]:
        if field not in self.fields[obj]:
            raise BadRequest(
                _errors(
                    404,
                    "NOT_FOUND",
                    "Provided external ID field does not exist or is not accessible",
                )
            )
        with self.lock:
            return [
                r
                for r in self.objects[obj].values()
                if r.get(field) is not None and str(r.get(field)) == value
            ]

    def _upsert_one(self, ver: str, obj: str, field: str, value: str, body: dict) -> Response:
        if "Id" in body or field in body:
            return _errors(
                400,
                "INVALID_FIELD",
                f"Unable to create/update fields: {'Id' if 'Id' in body else field}. The external ID goes in the URL.",
            )
        with self.lock:
            matches = (
                self._match(obj, field, value)
                if field != "Id"
                else [r for r in [self.objects[obj].get(value)] if r]
            )
            if len(matches) > 1:
                return Response(
                    300, [f"/services/data/v{ver}/sobjects/{obj}/{r['Id']}" for r in matches]
                )
            errs = self._check(obj, body, creating=not matches)
            if errs:
                return Response(
                    400,
                    [
                        {
                            "message": e["message"],
                            "errorCode": e["statusCode"],
                            "fields": e["fields"],
                        }
                        for e in errs
                    ],
                )
            if matches:
                self._apply(obj, matches[0]["Id"], body)
                return Response(204)
            rec_id, _ = self._apply(
                obj, None, {**body, **({field: value} if field != "Id" else {})}
            )
        return Response(201, {"id": rec_id, "success": True, "errors": [], "created": True})

    def _create(self, ver: str, obj: str, body: dict) -> Response:
        with self.lock:
            errs = self._check(obj, body, creating=True)
            if "Id" in body:
                errs.append(
                    {
                        "statusCode": "INVALID_FIELD_FOR_INSERT_UPDATE",
                        "message": "Id not allowed on create",
                        "fields": ["Id"],
                    }
                )
            if errs:
                return Response(
                    400,
                    [
                        {
                            "message": e["message"],
                            "errorCode": e["statusCode"],
                            "fields": e["fields"],
                        }
                        for e in errs
                    ],
                )
            rec_id, _ = self._apply(obj, None, body)
        return Response(201, {"id": rec_id, "success": True, "errors": []})

    def _by_id(self, ver: str, obj: str, rec_id: str, method: str, req: Request) -> Response:
        with self.lock:
            rec = self.objects[obj].get(rec_id)
            if rec is None:
                deleted = any(i == rec_id for i, _ in self.deleted_by_type[obj])
                code = "ENTITY_IS_DELETED" if deleted else "NOT_FOUND"
                return _errors(
                    404,
                    code,
                    "entity is deleted" if deleted else "The requested resource does not exist",
                )
            if method == "GET":
                return Response(200, self._with_attributes(ver, obj, rec))
            if method == "PATCH":
                body = req.json() or {}
                errs = self._check(obj, body, creating=False)
                if errs:
                    return Response(
                        400,
                        [
                            {
                                "message": e["message"],
                                "errorCode": e["statusCode"],
                                "fields": e["fields"],
                            }
                            for e in errs
                        ],
                    )
                self._apply(obj, rec_id, body)
                return Response(204)
            if method == "DELETE":
                self._delete_one(rec_id, obj)
                return Response(204)
        return _errors(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")

    def _delete_one(self, rec_id: str, obj: str | None = None) -> dict:
        with self.lock:
            for name, store in self.objects.items():
                if obj in (None, name) and rec_id in store:
                    rec = store.pop(rec_id)
                    self.on_delete(rec_id, rec, _now(), name)
                    return {"id": rec_id, "success": True, "errors": []}
        return {
            "id": rec_id,
            "success": False,
            "errors": [
                {"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": []}
            ],
        }

    def on_delete(self, key: str, rec: dict, now: datetime, obj: str = "Contact") -> None:
        self.deleted_by_type[obj].append((key, now))
        self.tombstones[obj][key] = {**rec, "IsDeleted": True, "LastModifiedDate": sf_time(now)}
        self.changes.append((key, "Deleted", now))

    def _composite_upsert(self, ver: str, obj_name: str, field: str, body: Any) -> Response:
        obj = self._object(obj_name)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            return _errors(400, "JSON_PARSER_ERROR", "Expected {allOrNone, records: [...]}")
        records = body["records"]
        if len(records) > 200:
            return _errors(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        if field not in self.fields[obj]:
            return _errors(
                400,
                "INVALID_FIELD",
                f"Field name provided, {field} is not an External ID or indexed field for {obj}",
            )
        all_or_none = bool(body.get("allOrNone"))
        results: list[dict] = []
        with self.lock:
            snapshot = {k: dict(v) for k, v in self.objects[obj].items()} if all_or_none else None
            changes_len = len(self.changes)
            for rec in records:
                results.append(self._composite_one(obj, field, rec))
            if all_or_none and any(not r["success"] for r in results):
                self.objects[obj].clear()
                self.objects[obj].update(snapshot or {})
                del self.changes[changes_len:]
                results = [
                    r
                    if not r["success"]
                    else {
                        "id": None,
                        "success": False,
                        "errors": [
                            {
                                "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                                "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
                                "fields": [],
                            }
                        ],
                    }
                    for r in results
                ]
        return Response(200, results)

    def _composite_one(self, obj: str, field: str, rec: Any) -> dict:
        def fail(code: str, message: str, fields: list[str]) -> dict:
            return {
                "success": False,
                "errors": [{"statusCode": code, "message": message, "fields": fields}],
            }

        if not isinstance(rec, dict) or (rec.get("attributes") or {}).get("type") != obj:
            return fail("INVALID_TYPE", f"records must carry attributes.type = {obj}", [])
        value = rec.get(field)
        if value in (None, ""):
            return fail(
                "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{field}]", [field]
            )
        if field == "Id":
            matches = [r for r in [self.objects[obj].get(str(value))] if r]
        else:
            matches = [
                r
                for r in self.objects[obj].values()
                if r.get(field) is not None and str(r.get(field)) == str(value)
            ]
        if len(matches) > 1:
            return fail(
                "DUPLICATE_EXTERNAL_ID",
                f"{field}: more than one record found for external id field: {[r['Id'] for r in matches]}",
                [field],
            )
        body = {
            k: v
            for k, v in rec.items()
            if k not in ("attributes",) and not (k == "Id" and field != "Id")
        }
        errs = self._check(obj, body, creating=not matches)
        if errs:
            return {"success": False, "errors": errs}
        rec_id, created = self._apply(obj, matches[0]["Id"] if matches else None, body)
        return {"id": rec_id, "success": True, "errors": [], "created": created}

    def _composite_write(self, ver: str, method: str, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            return _errors(400, "JSON_PARSER_ERROR", "Expected {allOrNone, records: [...]}")
        if len(body["records"]) > 200:
            return _errors(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        results = []
        with self.lock:
            for rec in body["records"]:
                obj = (rec.get("attributes") or {}).get("type") if isinstance(rec, dict) else None
                if obj not in self.objects:
                    results.append(
                        {
                            "success": False,
                            "errors": [
                                {
                                    "statusCode": "INVALID_TYPE",
                                    "message": "attributes.type required",
                                    "fields": [],
                                }
                            ],
                        }
                    )
                    continue
                fields = {k: v for k, v in rec.items() if k not in ("attributes", "Id")}
                if method == "PATCH":
                    rec_id = rec.get("Id")
                    if rec_id not in self.objects[obj]:
                        deleted = any(i == rec_id for i, _ in self.deleted_by_type[obj])
                        code = "ENTITY_IS_DELETED" if deleted else "INVALID_CROSS_REFERENCE_KEY"
                        results.append(
                            {
                                "id": rec_id,
                                "success": False,
                                "errors": [
                                    {
                                        "statusCode": code,
                                        "message": "invalid cross reference id"
                                        if not deleted
                                        else "entity is deleted",
                                        "fields": [],
                                    }
                                ],
                            }
                        )
                        continue
                    errs = self._check(obj, fields, creating=False)
                    if errs:
                        results.append({"id": rec_id, "success": False, "errors": errs})
                        continue
                    self._apply(obj, rec_id, fields)
                    results.append({"id": rec_id, "success": True, "errors": []})
                else:
                    errs = self._check(obj, fields, creating=True)
                    if "Id" in rec:
                        errs.append(
                            {
                                "statusCode": "INVALID_FIELD_FOR_INSERT_UPDATE",
                                "message": "Id not allowed on create",
                                "fields": ["Id"],
                            }
                        )
                    if errs:
                        results.append({"success": False, "errors": errs})
                        continue
                    rec_id, _ = self._apply(obj, None, fields)
                    results.append({"id": rec_id, "success": True, "errors": []})
        return Response(200, results)

    def _updated(self, obj: str, req: Request) -> Response:
        try:
            start = _parse_dt(req.arg("start") or "")
            end = _parse_dt(req.arg("end") or "")
        except ValueError:
            return _errors(400, "MALFORMED_QUERY", "start and end must be ISO 8601 date-times")
        with self.lock:
            ids = [
                r["Id"]
                for r in self.objects[obj].values()
                if r.get("LastModifiedDate") and start <= _parse_dt(r["LastModifiedDate"]) <= end
            ]
        return Response(200, {"ids": ids, "latestDateCovered": sf_time(end)})

    def _deleted(self, obj: str, req: Request) -> Response:
        try:
            start = _parse_dt(req.arg("start") or "")
            end = _parse_dt(req.arg("end") or "")
        except ValueError:
            return _errors(400, "MALFORMED_QUERY", "start and end must be ISO 8601 date-times")
        with self.lock:
            rows = [
                {"id": i, "deletedDate": sf_time(when)}
                for i, when in self.deleted_by_type[obj]
                if start <= when <= end
            ]
        return Response(
            200,
            {
                "deletedRecords": rows,
                "earliestDateAvailable": sf_time(start),
                "latestDateCovered": sf_time(end),
            },
        )

    # ----------------------------------------------------------------- changes knob
    def new_record(self, person: dict, now: datetime) -> dict:
        t = sf_time(now)
        rec = dict.fromkeys(self.shape["Contact"])
        rec.update(
            {
                "Id": self._new_id("Contact"),
                "FirstName": person["first_name"],
                "LastName": person["last_name"],
                "Email": person["email"],
                "Phone": person["phone"],
                "MailingStreet": person["street"],
                "MailingCity": person["city"],
                "MailingPostalCode": person["postal_code"],
                "MailingCountry": person["country"],
                "HasOptedOutOfEmail": False,
                "IsDeleted": False,
                "CreatedDate": t,
                "LastModifiedDate": t,
            }
        )
        return rec

    def edit_record(self, rec: dict, rng: random.Random, now: datetime) -> None:
        rec["MailingCity"] = rng.choice(["Lund", "Umeå", "Visby", "Kiruna"])
        rec["MailingPostalCode"] = f"{rng.randrange(100, 999)} {rng.randrange(10, 99)}"
        rec["LastModifiedDate"] = sf_time(now)

    def new_record_of(self, object_type: str, person: dict, now: datetime) -> dict:
        t = sf_time(now)
        rec = dict.fromkeys(self.shape[object_type])
        common = {"Id": self._new_id(object_type), "Phone": person["phone"], "IsDeleted": False}
        if object_type == "Account":
            rec.update(
                {
                    "Name": f"{person['last_name']} Handel AB",
                    "BillingStreet": person["street"],
                    "BillingCity": person["city"],
                    "BillingPostalCode": person["postal_code"],
                    "BillingCountry": person["country"],
                }
            )
        else:  # Lead
            rec.update(
                {
                    "FirstName": person["first_name"],
                    "LastName": person["last_name"],
                    "Email": person["email"],
                    "Company": "[not provided]",
                    "Street": person["street"],
                    "City": person["city"],
                    "PostalCode": person["postal_code"],
                    "Country": person["country"],
                    "Status": "Open - Not Contacted",
                    "IsConverted": False,
                }
            )
        rec.update({**common, "CreatedDate": t, "LastModifiedDate": t})
        return rec

    def edit_record_of(
        self, object_type: str, rec: dict, rng: random.Random, now: datetime
    ) -> None:
        city = "BillingCity" if object_type == "Account" else "City"
        rec[city] = rng.choice(["Lund", "Umeå", "Visby", "Kiruna"])
        rec["LastModifiedDate"] = sf_time(now)

    def on_delete_of(self, object_type: str, key: str, rec: dict, now: datetime) -> None:
        self.on_delete(key, rec, now, object_type)

    # ----------------------------------------------------------------- lead conversion
    def convert_lead(self, lead_id: str, contact_id: str | None = None) -> dict:
        """Convert a Lead as Salesforce does: into ``contact_id`` (an existing Contact), or
        into a new Contact made from the Lead's fields. Answers the converted Lead."""
        with self.lock:
            lead = self.objects["Lead"].get(lead_id)
            if lead is None:
                raise KeyError(f"no Lead {lead_id}")
            if lead.get("IsConverted"):
                raise ValueError(f"Lead {lead_id} is converted already")
            if contact_id is None:
                body = {
                    "FirstName": lead.get("FirstName"),
                    "LastName": lead.get("LastName"),
                    "Email": lead.get("Email"),
                    "Phone": lead.get("Phone"),
                    "MailingStreet": lead.get("Street"),
                    "MailingCity": lead.get("City"),
                    "MailingPostalCode": lead.get("PostalCode"),
                    "MailingCountry": lead.get("Country"),
                    "LeadSource": lead.get("LeadSource"),
                }
                contact_id, _ = self._apply("Contact", None, body)
            elif contact_id not in self.objects["Contact"]:
                raise KeyError(f"no Contact {contact_id}")
            now = sf_time(_now())
            fields = {
                "IsConverted": True,
                "Status": "Closed - Converted",
                "ConvertedContactId": contact_id,
                "ConvertedDate": now[:10],
            }
            self._apply("Lead", lead_id, fields)
            return dict(self.objects["Lead"][lead_id])

    def admin(self, req: Request, action: str) -> Response:
        if req.method == "POST" and action == "convert_lead":
            body = req.json() or {}
            try:
                lead = self.convert_lead(str(body.get("lead_id")), body.get("contact_id"))
            except (KeyError, ValueError) as exc:
                return Response(400, {"error": str(exc)})
            return Response(200, lead)
        return super().admin(req, action)


def _now() -> datetime:
    from .server import utcnow

    return utcnow()
