"""Icomm (e-mail marketing) connector: customers keyed by ``UserId`` + ``StoreCode`` (seed 003).

Icomm's public documentation is thin, so the paths are the ones our sandbox
chose (say so to anyone pointing this at a real account, and adjust
``options.paths``): ``GET /api/v1/profiles/{profile}/customers?offset=&limit=``
(``updatedSince`` for incremental reads), ``.../customers/deleted?since=``,
``POST .../contacts/upsert-batch`` (up to 1,000 contacts) and
``DELETE .../customers/{StoreCode}/{UserId}``. ``CustomFields: [{Key, Value}]``
are flattened to ``CustomFields.<Key>`` columns. The record id is
``"<UserId>|<StoreCode>"``; ``UserId`` is the shop's customer id where there is
one, else the e-mail.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import pandas as pd

from custsync_pipeline.config import ConnectorConfig
from custsync_pipeline.connectors.base import ReadResult, WriteOp, WriteResult
from custsync_pipeline.connectors.common import (
    HttpConnectorBase,
    batched,
    column,
    is_missing,
    iso_z,
    jsonable,
    newest,
    overlap_start,
    records_frame,
)
from custsync_pipeline.connectors.http import (
    ConnectorError,
    HttpClient,
    QuotaExceededError,
    require_env,
)
from custsync_pipeline.domain.canonical import conform

BATCH_LIMIT = 1000
PAGE_LIMIT = 500

_TO_CANONICAL = {
    "email": "Email",
    "first_name": "FirstName",
    "last_name": "LastName",
    "phone": "MobilePhone",
    "country": "CountryCode",
    "language": "CustomFields.Language",
    "loyalty_tier": "CustomFields.LoyaltyTier",
}
_FROM_CANONICAL = {
    "email": "Email",
    "first_name": "FirstName",
    "last_name": "LastName",
    "phone": "MobilePhone",
    "country": "CountryCode",
    "store_code": "StoreCode",
}
_CUSTOM_FROM_CANONICAL = {"language": "Language"}


def _flatten_custom_fields(item: dict[str, Any]) -> dict[str, Any]:
    fields = item.get("CustomFields")
    if isinstance(fields, list):
        item = dict(item)
        item["CustomFields"] = {
            str(f.get("Key")): f.get("Value") for f in fields if isinstance(f, dict)
        }
    return item


class IcommConnector(HttpConnectorBase):
    """Icomm customers (``options``: profile_id, page_limit, batch_size, http, overlap_minutes)."""

    DEFAULT_RATE_PER_S = 10.0  # not documented: a polite default
    OPTIONS = frozenset({"batch_size", "page_limit", "profile_id"})

    def __init__(self, name: str, cfg: ConnectorConfig, env: Mapping[str, str]) -> None:
        super().__init__(name, cfg, env)
        key = require_env(name, cfg.credentials, "api_key", env)
        self.profile_id = str(self.options.get("profile_id", 1))
        self.page_limit = max(1, min(int(self.options.get("page_limit", PAGE_LIMIT)), PAGE_LIMIT))
        self.batch_size = min(int(self.options.get("batch_size", BATCH_LIMIT)), BATCH_LIMIT)
        self.http = HttpClient(
            name,
            cfg.base_url,
            headers={"X-Api-Key": key, "Content-Type": "application/json"},
            secrets=[key],
            settings=self._settings(),
        )

    @property
    def base(self) -> str:
        return f"/api/v1/profiles/{self.profile_id}"

    # -- read -----------------------------------------------------------------

    def read(self, since: datetime | None = None) -> ReadResult:
        start = overlap_start(since, self.overlap)
        params: dict[str, Any] = {"limit": self.page_limit}
        if start is not None:
            params["updatedSince"] = iso_z(start)
        records: list[dict[str, Any]] = []
        deleted: list[str] = []
        offset = 0
        with self.measure() as stats:
            while True:
                body = self.http.get_json(
                    f"{self.base}/customers", params={**params, "offset": offset}
                )
                stats.pages += 1
                items = body.get("items") if isinstance(body, dict) else None
                if not isinstance(items, list):
                    raise self.http.error("customer page has no items list")
                records.extend(_flatten_custom_fields(i) for i in items)
                offset += len(items)
                if offset >= int(body.get("total", 0)):
                    break
                if not items:
                    # an empty page before the announced total: fail rather than return a part
                    raise self.http.error(
                        f"empty page at offset {offset} of {body.get('total')}", transient=True
                    )
            if start is not None:
                gone = self.http.get_json(
                    f"{self.base}/customers/deleted", params={"since": iso_z(start)}
                )
                if not isinstance(gone, list):
                    raise self.http.error("deleted feed did not answer a list")
                deleted = [f"{g['UserId']}|{g['StoreCode']}" for g in gone]
        raw = records_frame(records)
        watermark = newest(column(raw, "UpdatedAt"), floor=since) if len(raw) else None
        return ReadResult(records=raw, deleted_ids=deleted, watermark=watermark, stats=stats)

    # -- mapping --------------------------------------------------------------

    def to_canonical(self, raw: pd.DataFrame) -> pd.DataFrame:
        if raw.empty:
            return conform(pd.DataFrame())
        out = pd.DataFrame(index=raw.index)
        user = column(raw, "UserId").astype("string")
        store = column(raw, "StoreCode").astype("string")
        out["connector"] = self.name
        out["source_id"] = user + "|" + store
        out["icomm_user_id"] = user
        out["store_code"] = store
        out["object_type"] = "customer"
        out["kind"] = "person"
        for canon, fld in _TO_CANONICAL.items():
            out[canon] = column(raw, fld)
        unsubscribed = column(raw, "Unsubscribed")
        out["email_consent"] = unsubscribed.map({True: "no", False: "yes"})
        out["created_at"] = column(raw, "CreatedAt")
        out["updated_at"] = column(raw, "UpdatedAt")
        return conform(out)

    def from_canonical(self, golden: pd.DataFrame) -> list[dict[str, Any]]:
        payloads: list[dict[str, Any]] = []
        for row in golden.to_dict("records"):
            body: dict[str, Any] = {}
            for canon, fld in _FROM_CANONICAL.items():
                if canon in row and not is_missing(row[canon]):
                    body[fld] = jsonable(row[canon])
            # the shop's own customer id is the Icomm UserId when there is one (seed 003)
            if not is_missing(row.get("web_user_id")):
                body["UserId"] = row["web_user_id"]
            custom = [
                {"Key": key, "Value": jsonable(row[canon])}
                for canon, key in _CUSTOM_FROM_CANONICAL.items()
                if canon in row and not is_missing(row[canon])
            ]
            if custom:
                body["CustomFields"] = custom
            payloads.append(body)
        return payloads

    # -- write ----------------------------------------------------------------

    def write(self, ops: list[WriteOp]) -> list[WriteResult]:
        results: list[WriteResult | None] = [None] * len(ops)
        for i, op in enumerate(ops):
            if op.op == "delete":
                results[i] = self._delete(op)
            elif op.op != "upsert":
                results[i] = WriteResult(op.golden_id, op.target_id, False, f"unknown op {op.op!r}")
        upserts = [i for i in range(len(ops)) if results[i] is None]
        for chunk in batched(upserts, self.batch_size):
            body = [self._record(ops[i]) for i in chunk]
            try:
                answer = self.http.request(
                    "POST", f"{self.base}/contacts/upsert-batch", json=body
                ).json()
            except QuotaExceededError:
                raise
            except ConnectorError as exc:
                for i in chunk:
                    results[i] = WriteResult(
                        ops[i].golden_id, ops[i].target_id, False, str(exc), exc.transient
                    )
                continue
            per = {int(r.get("index", -1)): r for r in answer if isinstance(r, dict)}
            for pos, i in enumerate(chunk):
                res = per.get(pos)
                op = ops[i]
                if res is None:
                    results[i] = WriteResult(op.golden_id, op.target_id, False, "no result", True)
                elif res.get("Success"):
                    tid = f"{res.get('UserId')}|{res.get('StoreCode')}"
                    results[i] = WriteResult(op.golden_id, tid, True)
                else:
                    results[i] = WriteResult(
                        op.golden_id, op.target_id, False, str(res.get("Error") or "rejected")
                    )
        return [r for r in results if r is not None]

    def _record(self, op: WriteOp) -> dict[str, Any]:
        rec = {k: v for k, v in op.payload.items() if not is_missing(v)}
        if op.target_id and "|" in op.target_id:
            # an existing customer: address it by its key, never re-key it
            user, _, store = op.target_id.rpartition("|")
            rec["UserId"], rec["StoreCode"] = user, store
        return rec

    def _delete(self, op: WriteOp) -> WriteResult:
        if not op.target_id or "|" not in op.target_id:
            return WriteResult(op.golden_id, op.target_id, False, "delete needs UserId|StoreCode")
        user, _, store = op.target_id.rpartition("|")
        path = f"{self.base}/customers/{quote(store, safe='')}/{quote(user, safe='')}"
        try:
            self.http.request("DELETE", path, allow=(404,))
        except QuotaExceededError:
            raise
        except ConnectorError as exc:
            return WriteResult(op.golden_id, op.target_id, False, str(exc), exc.transient)
        return WriteResult(op.golden_id, op.target_id, True)
