"""Voucherify connector: customers.

Reads ``GET /v1/customers`` by ``page``/``limit`` (100 a page) ordered by
``created_at``; ``page`` stops at 99, so past 9,900 customers it continues
with the ``starting_after`` cursor (a ``created_at`` value). Incremental reads
filter on ``updated_at[after]`` (the wire name the official SDK sends) with an
overlap window. Writes upsert one customer per ``POST /v1/customers``: an
existing record by its ``id``, a new one with ``source_id`` = golden id and
``metadata.custsync_id`` = golden id. ``source_id`` cannot change once set,
so it is never sent for an existing record.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from custsync_pipeline.config import ConnectorConfig
from custsync_pipeline.connectors.base import ReadResult, WriteOp, WriteResult
from custsync_pipeline.connectors.common import (
    HttpConnectorBase,
    column,
    is_missing,
    iso_z,
    jsonable,
    newest,
    overlap_start,
    parse_times,
    records_frame,
    set_path,
)
from custsync_pipeline.connectors.entries import (
    column_entries,
    concat_entries,
    detail_entries,
    entry_list,
    first_entry,
)
from custsync_pipeline.connectors.http import (
    ConnectorError,
    HttpClient,
    QuotaExceededError,
    require_env,
)
from custsync_pipeline.domain.aspects import empty_entries
from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.domain.identity_names import split_full_names

PAGE_LIMIT = 100  # limit=1..100
MAX_PAGE = 99  # page=1..99
# a Salesforce Contact/Account/Lead id (15 or 18 characters) kept as source_id
SALESFORCE_ID_PATTERN = r"^(?:001|003|00Q)[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?$"

_TO_CANONICAL: dict[str, str] = {
    "email": "email",
    "phone": "phone",
    "street": "address.line_1",
    "city": "address.city",
    "postal_code": "address.postal_code",
    "country": "address.country",
    "custsync_id": "metadata.custsync_id",
    "language": "metadata.language",
}

_FROM_CANONICAL: dict[str, str] = {
    "email": "email",
    "phone": "phone",
    "street": "address.line_1",
    "city": "address.city",
    "postal_code": "address.postal_code",
    "country": "address.country",
}


# aspect column of an address entry -> customer field
_ADDRESS_PATHS = {"street": "address.line_1", "city": "address.city",
                  "postal_code": "address.postal_code", "country": "address.country"}  # fmt: skip
# metadata keys that are references, not attributes
_METADATA_NOT_ATTRIBUTES = frozenset({"custsync_id"})


class VoucherifyConnector(HttpConnectorBase):
    """Voucherify customers API (``options``: page_limit, metadata_map, http, overlap_minutes)."""

    DEFAULT_RATE_PER_S = 25.0  # quotas are per hour by plan; X-Rate-Limit-* headers tell the rest
    OPTIONS = frozenset({"concurrency", "metadata_map", "page_limit", "source_id_patterns"})

    def __init__(self, name: str, cfg: ConnectorConfig, env: Mapping[str, str]) -> None:
        super().__init__(name, cfg, env)
        app_id = require_env(name, cfg.credentials, "app_id", env)
        app_token = require_env(name, cfg.credentials, "app_token", env)
        self.page_limit = max(1, min(int(self.options.get("page_limit", PAGE_LIMIT)), PAGE_LIMIT))
        self.concurrency = max(1, int(self.options.get("concurrency", 4)))
        # metadata key -> canonical column, for references a shop stores in metadata
        self.metadata_map: dict[str, str] = dict(self.options.get("metadata_map") or {})
        # canonical column -> regex: a source_id matching it is also a reference to that
        # system (a CRM id used as source_id, seed 002; a web-shop user id)
        self.source_id_patterns: dict[str, str] = {
            "salesforce_id": SALESFORCE_ID_PATTERN,
            **dict(self.options.get("source_id_patterns") or {}),
        }
        settings = self._settings()
        settings.pool_size = max(settings.pool_size, self.concurrency)
        self.http = HttpClient(
            name,
            cfg.base_url,
            headers={
                "X-App-Id": app_id,
                "X-App-Token": app_token,
                "Content-Type": "application/json",
            },
            secrets=[app_id, app_token],
            settings=settings,
        )

    # -- read -----------------------------------------------------------------

    def read(self, since: datetime | None = None) -> ReadResult:
        start = overlap_start(since, self.overlap)
        base: dict[str, Any] = {"limit": self.page_limit, "order": "created_at"}
        if start is not None:
            base["updated_at[after]"] = iso_z(start)
        seen: set[str] = set()
        records: list[dict[str, Any]] = []
        page = 1
        cursor: str | None = None
        with self.measure() as stats:
            while True:
                params = dict(base)
                if cursor is None:
                    params["page"] = page
                else:
                    params["starting_after"] = cursor
                body = self.http.get_json("/v1/customers", params=params)
                stats.pages += 1
                batch = body.get("customers") if isinstance(body, dict) else None
                if not isinstance(batch, list):
                    raise self.http.error("customer list page has no 'customers' array")
                fresh = [c for c in batch if c.get("id") not in seen]
                seen.update(c.get("id") for c in fresh)
                records.extend(fresh)
                if not body.get("has_more"):
                    break
                if not batch:
                    # an empty page that claims more: stop loudly rather than return a part
                    raise self.http.error(
                        f"empty customer page {page} with has_more=true", transient=True
                    )
                newest_created = max(pd.Timestamp(c["created_at"]) for c in batch)
                if cursor is None and page < MAX_PAGE:
                    page += 1
                    continue
                if cursor is not None and not fresh:
                    # the step back only re-read customers we have: move past that instant
                    exact = iso_z(newest_created.to_pydatetime())
                    if exact == cursor:
                        raise self.http.error(
                            f"starting_after cursor {cursor} makes no progress: more customers "
                            "share one created_at than a page holds"
                        )
                    cursor = exact
                    continue
                # past page 99: continue after the newest created_at seen; step back one
                # millisecond so customers sharing that instant are not skipped (dedup by id)
                cursor = iso_z((newest_created - timedelta(milliseconds=1)).to_pydatetime())
        raw = records_frame(records)
        watermark = newest(column(raw, "updated_at").fillna(column(raw, "created_at")), floor=since)
        return ReadResult(records=raw, watermark=watermark if len(raw) else None, stats=stats)

    # -- mapping --------------------------------------------------------------

    def to_canonical(self, raw: pd.DataFrame) -> pd.DataFrame:
        if raw.empty:
            return conform(pd.DataFrame())
        out = pd.DataFrame(index=raw.index)
        out["connector"] = self.name
        out["source_id"] = raw["id"]
        out["voucherify_id"] = raw["id"]
        out["object_type"] = "customer"
        out["kind"] = "person"
        # one ``name`` field holds the whole name (custsync writes "first last" there): read
        # as a full name by the name parser, never as a first name ("Jensen" alone is a
        # surname; "van der Berg, Anna" splits right)
        names = column(raw, "name").astype("string").str.strip().replace("", pd.NA)
        first, last, _ = split_full_names(names.astype(object).to_numpy())
        out["full_name"] = names
        out["first_name"] = pd.Series(first, index=raw.index, dtype="string")
        out["last_name"] = pd.Series(last, index=raw.index, dtype="string")
        for canon, path in _TO_CANONICAL.items():
            out[canon] = column(raw, path)
        for key, canon in self.metadata_map.items():
            out[canon] = column(raw, f"metadata.{key}")
        source_id = column(raw, "source_id").astype("string")
        out["voucherify_source_id"] = source_id
        # a CRM id used as source_id (seed 002: "use its unique ID as a source_id") is also
        # a reference to that CRM record
        for canon, pattern in self.source_id_patterns.items():
            hit = source_id.str.fullmatch(pattern).fillna(False).astype(bool)
            out[canon] = source_id.where(hit, pd.NA)
        out["created_at"] = column(raw, "created_at")
        out["updated_at"] = column(raw, "updated_at").fillna(column(raw, "created_at"))
        return conform(out)

    def to_aspects(self, raw: pd.DataFrame) -> pd.DataFrame:
        """The customer's ``address`` (a mailing address), e-mail and phone, and its
        ``metadata`` keys as customer attributes (``custsync_id`` left out). As received."""
        if raw.empty:
            return empty_entries()
        sid = raw["id"].astype("string")
        seen = parse_times(column(raw, "updated_at").fillna(column(raw, "created_at")))
        address = {"type": "mailing"}
        for canon, path in _ADDRESS_PATHS.items():
            address[canon] = column(raw, path)
        parts = [
            column_entries(self.name, sid, "addresses", address, local_id="mailing", seen_at=seen)
        ]
        details = [("email", "email", "email"), ("phone", "phone", "phone")]
        parts += detail_entries(self.name, sid, raw, details, seen_at=seen)
        for col in raw.columns:  # one vectorized pass per metadata key
            key = col[len("metadata.") :] if col.startswith("metadata.") else None
            if not key or key in _METADATA_NOT_ATTRIBUTES:
                continue
            parts.append(
                column_entries(
                    self.name,
                    sid,
                    "customer_attributes",
                    {"name": key, "value": raw[col].astype("string")},
                    local_id=key,
                    seen_at=seen,
                )
            )
        return concat_entries(parts)

    def from_canonical(self, golden: pd.DataFrame) -> list[dict[str, Any]]:
        rows = golden.to_dict("records")
        payloads: list[dict[str, Any]] = []
        for row in rows:
            body: dict[str, Any] = {}
            name = " ".join(
                str(row[c])
                for c in ("first_name", "last_name")
                if c in row and not is_missing(row[c])
            )
            if name:
                body["name"] = name
            for canon, path in _FROM_CANONICAL.items():
                if canon in row and not is_missing(row[canon]):
                    set_path(body, path, jsonable(row[canon]))
            # the golden mailing address (else the first) replaces the flat one whole
            chosen = first_entry(row.get("addresses"), ("mailing",)) or first_entry(
                row.get("addresses")
            )
            if chosen:
                body.pop("address", None)
                for canon, path in _ADDRESS_PATHS.items():
                    if not is_missing(chosen[1].get(canon)):
                        set_path(body, path, jsonable(chosen[1][canon]))
            metadata = {
                str(a["name"]): jsonable(a["value"])
                for a in entry_list(row.get("customer_attributes"))
                if not is_missing(a.get("name")) and not is_missing(a.get("value"))
            }
            if metadata:
                body["metadata"] = {**body.get("metadata", {}), **metadata}
            payloads.append(body)
        return payloads

    # -- write ----------------------------------------------------------------

    def write(self, ops: list[WriteOp]) -> list[WriteResult]:
        """One upsert call per record (the sync API has no batch), several in flight.

        The async bulk endpoint answers per ``source_id`` only and cannot address records
        without one, so per-record calls keep exact results; the rate limit still applies.
        """
        if self.concurrency == 1 or len(ops) < 2:
            return [self._write_one(op) for op in ops]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._write_one, ops))  # map keeps the order of ops

    def _write_one(self, op: WriteOp) -> WriteResult:
        try:
            if op.op == "delete":
                if not op.target_id:
                    return WriteResult(op.golden_id, None, False, "delete needs a target_id")
                self.http.request("DELETE", f"/v1/customers/{op.target_id}", allow=(404,))
                return WriteResult(op.golden_id, op.target_id, True)
            if op.op != "upsert":
                return WriteResult(op.golden_id, op.target_id, False, f"unknown op {op.op!r}")
            body = {k: v for k, v in op.payload.items() if k not in ("id", "source_id", "object")}
            if op.target_id:
                # an existing record: by its id; its source_id is immutable, never sent
                body["id"] = op.target_id
            else:
                body["source_id"] = op.golden_id
                meta = dict(body.get("metadata") or {})
                meta["custsync_id"] = op.golden_id
                body["metadata"] = meta
            resp = self.http.request("POST", "/v1/customers", json=body)
            created = resp.json()
            return WriteResult(op.golden_id, str(created.get("id") or op.target_id), True)
        except QuotaExceededError:
            raise
        except ConnectorError as exc:
            gone = bool(op.target_id) and op.op == "upsert" and exc.status == 404
            return WriteResult(op.golden_id, op.target_id, False, str(exc), exc.transient, gone)
        except ValueError:
            return WriteResult(op.golden_id, op.target_id, False, "response is not JSON", True)
