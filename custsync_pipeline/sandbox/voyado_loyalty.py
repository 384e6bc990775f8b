"""Voyado Engage loyalty emulator: point accounts and point transactions (API v3).

Mixed into :class:`~custsync_pipeline.sandbox.voyado.VoyadoEmulator`. A contact's points
live on its **point account**, not on the contact (as in Voyado v3):

- ``GET /api/v3/point-accounts?contactId=…`` → ``{items: [{id, contactId, definitionId,
  balance, pendingPoints, lastModified}], offset, count, totalCount}``; without
  ``contactId`` (``offset``/``count`` ≤ 1,000) the same page over every account:
  **modeled** for a fast full snapshot, as the contact listing is;
- ``GET /api/v3/point-accounts/{id}``: one account (404 ``PointAccountNotFound``);
- ``GET /api/v3/point-accounts/{id}/transactions``: ``{items: [...]}`` newest first;
- ``POST /api/v3/point-transactions``: a JSON array of ``{contactId, amount,
  definitionId?, timeStamp?, source?, description?}``; each moves the balance of the
  contact's account of that definition (created on first use) and answers per item
  ``{index, success, transactionId, error}``; a contact that does not exist: ``ContactNotFound``;
- ``GET /api/v3/point-transactions?fromDate=&toDate=&offset=&count=``: transactions whose
  ``timeStamp`` falls in the window, oldest first (**modeled**: how an incremental reader
  learns whose balance moved, since a points change does not touch the contact's
  ``lastModified``).

The tier (``loyalty.tier``) and the membership status (``contactType``: ``Member`` /
``Contact``) stay on the contact. The generated ``loyalty.points`` of a contact become the
opening balance of its account of the default definition (``DEFAULT_DEFINITION``).
"""

from __future__ import annotations

import uuid
from typing import Any

from .server import Request, Response, utcnow

DEFAULT_DEFINITION = "5f0b4a52-1c8f-4d37-9f0e-6b8d2d6c0001"  # the tenant's one point definition


def _account_id(contact_id: str, definition: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"voyado-point-account:{contact_id}:{definition}"))


class VoyadoLoyaltyMixin:
    """Point accounts and transactions; needs ``store``, ``lock``, ``error`` of the emulator."""

    point_accounts: dict[str, dict]
    point_transactions: list[dict]

    def reset_loyalty(self) -> None:
        """Accounts from the contacts' generated ``loyalty.points`` (moved off the contact)."""
        self.point_accounts = {}
        self.point_transactions = []
        for cid, rec in self.store.items():  # type: ignore[attr-defined]
            loyalty = rec.get("loyalty")
            points = loyalty.pop("points", None) if isinstance(loyalty, dict) else None
            if points is not None:
                acc = self._account(cid, DEFAULT_DEFINITION, rec.get("lastModified"))
                acc["balance"] = float(points)

    def _account(self, contact_id: str, definition: str, when: str | None = None) -> dict:
        aid = _account_id(contact_id, definition)
        if aid not in self.point_accounts:
            from .voyado import vy_time

            self.point_accounts[aid] = {
                "id": aid,
                "contactId": contact_id,
                "definitionId": definition,
                "balance": 0.0,
                "pendingPoints": 0.0,
                "lastModified": when or vy_time(utcnow()),
            }
        return self.point_accounts[aid]

    def route_loyalty(self, req: Request, parts: list[str]) -> Response | None:
        """Answer a point-account or point-transaction request; None for other paths."""
        if parts[:3] == ["api", "v3", "point-accounts"]:
            rest = parts[3:]
            if req.method != "GET":
                return None
            with self.lock:  # type: ignore[attr-defined]
                if not rest:
                    return self._accounts_page(req)
                acc = self.point_accounts.get(rest[0])
                if acc is None:
                    return self.error(404, "PointAccountNotFound", "Point account not found")  # type: ignore[attr-defined]
                if rest[1:] == ["transactions"]:
                    items = [t for t in self.point_transactions if t["pointAccountId"] == acc["id"]]
                    return Response(200, {"items": [dict(t) for t in reversed(items)]})
                if len(rest) == 1:
                    return Response(200, dict(acc))
            return None
        if parts[:3] == ["api", "v3", "point-transactions"] and len(parts) == 3:
            if req.method == "POST":
                return self._post_transactions(req.json())
            if req.method == "GET":
                return self._transactions_page(req)
        return None

    def _paging(self, req: Request) -> tuple[int, int] | Response:
        try:
            offset, count = int(req.arg("offset", "0")), int(req.arg("count", "100"))
        except ValueError:
            return self.error(400, "InvalidParameter", "offset and count must be integers")  # type: ignore[attr-defined]
        if offset < 0 or not 1 <= count <= 1000:
            return self.error(400, "InvalidParameter", "count must be 1..1000")  # type: ignore[attr-defined]
        return offset, count

    def _accounts_page(self, req: Request) -> Response:
        paging = self._paging(req)
        if isinstance(paging, Response):
            return paging
        offset, count = paging
        contact = req.arg("contactId")
        rows = [dict(a) for a in self.point_accounts.values() if contact in (None, a["contactId"])]
        page = rows[offset : offset + count]
        return Response(
            200, {"items": page, "offset": offset, "count": len(page), "totalCount": len(rows)}
        )

    def _transactions_page(self, req: Request) -> Response:
        from .voyado import _parse

        paging = self._paging(req)
        if isinstance(paging, Response):
            return paging
        offset, count = paging
        try:
            start = _parse(req.arg("fromDate") or "1970-01-01T00:00:00Z")
            end = _parse(req.arg("toDate") or "2999-01-01T00:00:00Z")
        except ValueError:
            return self.error(400, "InvalidParameter", "fromDate and toDate must be ISO 8601")  # type: ignore[attr-defined]
        with self.lock:  # type: ignore[attr-defined]
            rows = [
                dict(t) for t in self.point_transactions if start <= _parse(t["timeStamp"]) <= end
            ]
        page = rows[offset : offset + count]
        return Response(
            200, {"items": page, "offset": offset, "count": len(page), "totalCount": len(rows)}
        )

    def _post_transactions(self, body: Any) -> Response:
        from .voyado import vy_time

        if not isinstance(body, list):
            return self.error(400, "InvalidModel", "body must be a JSON array of transactions")  # type: ignore[attr-defined]
        results = []
        with self.lock:  # type: ignore[attr-defined]
            for i, item in enumerate(body):
                ok = isinstance(item, dict) and isinstance(item.get("amount"), int | float)
                cid = str(item.get("contactId")) if isinstance(item, dict) else ""
                if not ok:
                    results.append({"index": i, "success": False, "error": "InvalidModel"})
                    continue
                if cid not in self.store:  # type: ignore[attr-defined]
                    results.append({"index": i, "success": False, "error": "ContactNotFound"})
                    continue
                now = vy_time(utcnow())
                acc = self._account(cid, str(item.get("definitionId") or DEFAULT_DEFINITION))
                acc["balance"] = float(acc["balance"]) + float(item["amount"])
                acc["lastModified"] = now
                tid = str(uuid.uuid4())
                self.point_transactions.append(
                    {
                        "id": tid,
                        "pointAccountId": acc["id"],
                        "contactId": cid,
                        "definitionId": acc["definitionId"],
                        "amount": float(item["amount"]),
                        "timeStamp": now,
                        "source": item.get("source") or "API",
                        "description": item.get("description"),
                    }
                )
                results.append({"index": i, "success": True, "transactionId": tid, "error": None})
        return Response(200, {"results": results})
