"""KatanaPIM customers emulator. **Modeled**: no public customer API facts were found, so this
is a plain REST resource for the generic REST connector (page-number paging with a
next link, API-key header):

- ``GET /api/v1/customers?page=1&per_page=50`` (per_page ≤ 200), optional
  ``updated_since`` (ISO 8601) -> ``{data: [...], meta: {page, per_page, total,
  total_pages}, links: {next: <absolute url> | null}}`` ordered by ``id`` (numeric);
- ``GET|PUT|PATCH|DELETE /api/v1/customers/{id}``; ``POST /api/v1/customers`` (201 with the
  record). PUT replaces writable fields, PATCH merges; ``attributes`` merge by key;
  a customer is a person or a company (``kind``, ``company_name``, ``crm_account_id`` = its
  Salesforce Account) with ``contact_persons`` (``id``, ``first_name``, ``last_name``,
  ``role``, ``email``, ``phone``; a write replaces the list, a person sent without an ``id``
  gets one) and ``attributes`` (name -> value);
- ``GET /api/v1/customers/deleted?since=`` -> ``{data: [{id, deleted_at}]}``.

Auth header ``X-Api-Key: <KATANA_API_KEY>``, or OAuth2 client credentials (so the generic
REST connector's OAuth2 auth has something real to talk to): ``POST /oauth/token`` with
``grant_type=client_credentials`` and the client id/secret as HTTP basic auth (or form
fields ``client_id``/``client_secret``) -> ``{access_token, token_type, expires_in}``
(``token_ttl`` seconds); then ``Authorization: Bearer <token>`` until it expires (401).
Client: ``KATANA_CLIENT_ID`` / ``KATANA_CLIENT_SECRET`` (sandbox defaults). List answers
also carry the next page as a ``Link: <url>; rel="next"`` header; ``updated_since``
takes ISO 8601, epoch seconds or epoch milliseconds (digits above 10^11).
Error body ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import base64
import random
import secrets
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote

from .server import Emulator, Faults, Request, Response, credential, utcnow

_WRITABLE = {
    "first_name",
    "last_name",
    "email",
    "phone",
    "country",
    "customer_number",
    "attributes",
    "contacts",
    "kind",
    "company_name",
    "crm_account_id",
    "contact_persons",
}


def kt_time(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _parse(value: str) -> datetime:
    """ISO 8601, or epoch seconds / milliseconds (all digits; above 10^11 = milliseconds)."""
    text = value.strip()
    if text.isdigit():
        n = int(text)
        return datetime.fromtimestamp(n / 1000 if n > 10**11 else n, UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class KatanaEmulator(Emulator):
    system = "katana"

    def __init__(
        self,
        data,
        faults: Faults | None = None,
        max_per_page: int = 200,
        token_ttl: float = 3600.0,
    ) -> None:
        self.max_per_page = max_per_page
        self.token_ttl = token_ttl
        self.tokens: dict[str, float] = {}  # issued access token -> expiry (monotonic)
        super().__init__(data, faults)

    def reset(self) -> None:
        super().reset()
        self._next_id = max((int(k) for k in self.store if k.isdigit()), default=0)
        self.tokens = {}
        self.stats["tokens_issued"] = 0

    def authorized(self, req: Request) -> bool:
        if req.path.rstrip("/") == "/oauth/token":
            return True  # the token endpoint checks the client itself
        scheme, _, token = (req.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and token:
            with self.lock:
                expiry = self.tokens.get(token)
            return expiry is not None and time.monotonic() < expiry
        return req.headers.get("X-Api-Key") == credential("KATANA_API_KEY")

    def _token(self, req: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, encoded = (req.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, client_secret = base64.b64decode(encoded).decode().partition(":")
            except ValueError:
                client_id = client_secret = None
        if form.get("grant_type") != "client_credentials":
            return Response(400, {"error": "unsupported_grant_type"})
        if (client_id, client_secret) != (
            credential("KATANA_CLIENT_ID"),
            credential("KATANA_CLIENT_SECRET"),
        ):
            return Response(
                401,
                {"error": "invalid_client", "error_description": "Client authentication failed"},
            )
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = time.monotonic() + self.token_ttl
            self.stats["tokens_issued"] += 1
        return Response(
            200, {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl}
        )

    def error(self, status: int, code: str, message: str) -> Response:
        return Response(status, {"error": {"code": code, "message": message}})

    def unauthorized(self) -> Response:
        return self.error(401, "unauthorized", "Missing or invalid X-Api-Key")

    def route(self, req: Request) -> Response:
        parts = req.path.strip("/").split("/")
        if parts == ["oauth", "token"] and req.method == "POST":
            return self._token(req)
        if parts[:3] != ["api", "v1", "customers"]:
            return self.error(404, "not_found", f"No resource at {req.path}")
        rest = parts[3:]
        if not rest and req.method == "GET":
            return self._list(req)
        if not rest and req.method == "POST":
            return self._write(None, req.json(), replace=False)
        if rest == ["deleted"] and req.method == "GET":
            try:
                since = _parse(req.arg("since") or "1970-01-01T00:00:00Z")
            except ValueError:
                return self.error(400, "invalid_parameter", "since must be ISO 8601")
            with self.lock:
                rows = [{"id": k, "deleted_at": kt_time(w)} for k, w in self.deleted if w > since]
            return Response(200, {"data": rows})
        if len(rest) == 1:
            with self.lock:
                rec = self.store.get(rest[0])
            if rec is None:
                return self.error(404, "not_found", f"customer {rest[0]} not found")
            if req.method == "GET":
                return Response(200, dict(rec))
            if req.method in ("PUT", "PATCH"):
                return self._write(rest[0], req.json(), replace=req.method == "PUT")
            if req.method == "DELETE":
                with self.lock:
                    self.store.pop(rest[0], None)
                    self.on_delete(rest[0], rec, utcnow())
                return Response(204)
        return self.error(405, "method_not_allowed", f"{req.method} not allowed")

    def _list(self, req: Request) -> Response:
        try:
            page, per_page = int(req.arg("page", "1")), int(req.arg("per_page", "50"))
            since = _parse(req.arg("updated_since")) if req.arg("updated_since") else None
        except ValueError:
            return self.error(
                400,
                "invalid_parameter",
                "page/per_page must be integers, updated_since ISO 8601 or epoch (s or ms)",
            )
        if page < 1 or not 1 <= per_page <= self.max_per_page:
            return self.error(400, "invalid_parameter", f"per_page must be 1..{self.max_per_page}")
        with self.lock:
            rows = self.sorted_rows("id", self.store, key=lambda r: int(r["id"]))
        if since is not None:
            rows = [r for r in rows if _parse(r["updated_at"]) > since]
        total_pages = max(1, -(-len(rows) // per_page))
        chunk = rows[(page - 1) * per_page : page * per_page]
        nxt = None
        if page < total_pages:
            host = req.headers.get("Host") or "127.0.0.1"
            extra = (
                f"&updated_since={quote(req.arg('updated_since') or '', safe='')}"
                if since is not None
                else ""
            )
            nxt = f"{self.scheme}://{host}/api/v1/customers?page={page + 1}&per_page={per_page}{extra}"
        return Response(
            200,
            {"data": [dict(r) for r in chunk],
             "meta": {"page": page, "per_page": per_page, "total": len(rows), "total_pages": total_pages},
             "links": {"next": nxt}},
            headers={"Link": f'<{nxt}>; rel="next"'} if nxt else {},
        )  # fmt: skip

    def _write(self, rec_id: str | None, body: Any, replace: bool) -> Response:
        if not isinstance(body, dict):
            return self.error(400, "invalid_body", "expected a JSON object")
        unknown = set(body) - _WRITABLE - {"id", "created_at", "updated_at"}
        if unknown:
            return self.error(422, "unknown_field", f"unknown fields: {sorted(unknown)}")
        if body.get("attributes") is not None and not isinstance(body["attributes"], dict):
            return self.error(422, "invalid_field", "attributes must be an object")
        persons = body.get("contact_persons")
        if persons is not None and not (
            isinstance(persons, list) and all(isinstance(p, dict) for p in persons)
        ):
            return self.error(422, "invalid_field", "contact_persons must be a list of objects")
        now = kt_time(utcnow())
        with self.lock:
            if rec_id is None:
                self._next_id += 1
                rec: dict[str, Any] = {"id": str(self._next_id), **{f: None for f in _WRITABLE}, "attributes": {},
                                       "contact_persons": [], "kind": "person", "created_at": now}  # fmt: skip
                status, kind = 201, "Created"
            else:
                rec = self.store[rec_id]
                status, kind = 200, "Updated"
                if replace:
                    for f in _WRITABLE:
                        rec[f] = {"attributes": {}, "contact_persons": []}.get(f)
            for f, v in body.items():
                if f == "attributes" and isinstance(v, dict):
                    rec["attributes"] = {**(rec.get("attributes") or {}), **v}
                elif f == "contact_persons" and isinstance(v, list):
                    # the PIM gives a new contact person an id of its own
                    rec[f] = [
                        {**p, "id": p.get("id") or f"cp{rec['id']}-{i + 1}"}
                        for i, p in enumerate(v)
                    ]
                elif f in _WRITABLE:
                    rec[f] = v
            rec["updated_at"] = now
            self.store[rec["id"]] = rec
            self.changes.append((rec["id"], kind, utcnow()))
            return Response(status, dict(rec))

    def new_record(self, person: dict, now: datetime) -> dict:
        self._next_id += 1
        t = kt_time(now)
        return {
            "id": str(self._next_id), "first_name": person["first_name"], "last_name": person["last_name"],
            "email": person["email"], "phone": person["phone"], "country": person["country"],
            "customer_number": None, "attributes": {"segment": "retail", "preferred_language": person["language"]},
            "kind": "person", "company_name": None, "crm_account_id": None, "contact_persons": [],
            "created_at": t, "updated_at": t,
        }  # fmt: skip

    def edit_record(self, rec: dict, rng: random.Random, now: datetime) -> None:
        rec["attributes"] = {
            **(rec.get("attributes") or {}),
            "segment": rng.choice(["retail", "b2b", "vip"]),
        }
        rec["updated_at"] = kt_time(now)
