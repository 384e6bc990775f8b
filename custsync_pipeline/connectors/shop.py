"""Web shop / POS connector: orders read incrementally from the shop's order feed.

The feed (``GET /api/v1/orders?updated_since=&limit=&page_token=``, header ``X-Shop-Key``)
is the sandbox shop's (``sandbox/shop.py``); no public shop API is copied, so the paths
are ours to choose. A shop gives **transactions**, not customers: its config entry has
``role: transactions`` and it takes no part in identity resolution or survivorship; its
orders are tied to golden records through the identity map's keys
(``domain.transactions``).

Reads: a full read without a watermark; with one, ``updated_since`` = watermark minus the
overlap (``options.overlap_minutes``, default 10). The watermark is the newest
``updated_at`` read, moved only after the transactions are stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from custsync_pipeline.config import ConnectorConfig
from custsync_pipeline.connectors.base import ReadResult, WriteOp, WriteResult
from custsync_pipeline.connectors.common import (
    HttpConnectorBase,
    column,
    iso_z,
    newest,
    overlap_start,
)
from custsync_pipeline.connectors.http import ConnectorError, HttpClient, require_env
from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.domain.transactions import TRANSACTION_COLUMNS

PAGE_LIMIT = 1000


class ShopConnector(HttpConnectorBase):
    """Shop order feed (``options``: page_limit, overlap_minutes, http)."""

    DEFAULT_RATE_PER_S = None  # our own shop: no documented rate
    OPTIONS = frozenset({"page_limit", "path"})

    def __init__(self, name: str, cfg: ConnectorConfig, env: Mapping[str, str]) -> None:
        super().__init__(name, cfg, env)
        key = require_env(name, cfg.credentials, "api_key", env)
        self.page_limit = max(1, min(int(self.options.get("page_limit", PAGE_LIMIT)), PAGE_LIMIT))
        self.path = str(self.options.get("path", "/api/v1/orders"))
        self.http = HttpClient(
            name,
            cfg.base_url,
            headers={"X-Shop-Key": key, "Accept": "application/json"},
            secrets=[key],
            settings=self._settings(),
        )

    # -- read -----------------------------------------------------------------
    def read(self, since: datetime | None = None) -> ReadResult:
        start = overlap_start(since, self.overlap)
        orders: list[dict[str, Any]] = []
        with self.measure() as stats:
            token: str | None = None
            while True:
                params: dict[str, Any] = {"limit": self.page_limit}
                if start is not None:
                    params["updated_since"] = iso_z(start)
                if token:
                    params["page_token"] = token
                page = self.http.get_json(self.path, params=params)
                stats.pages += 1
                if not isinstance(page, dict) or not isinstance(page.get("orders"), list):
                    raise self.http.error("order page has no orders list")
                orders.extend(page["orders"])
                token = page.get("next_page_token")
                if not token:
                    break
        raw = pd.DataFrame.from_records(orders) if orders else pd.DataFrame()
        watermark = newest(column(raw, "updated_at")) if len(raw) else None
        return ReadResult(records=raw, watermark=watermark, stats=stats)

    def to_transactions(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Orders -> ``TRANSACTION_COLUMNS`` plus ``min_quantity`` and ``lines_total`` (for
        validation), vectorized (lines exploded once, aggregated per order)."""
        if len(raw) == 0:
            return pd.DataFrame(columns=[*TRANSACTION_COLUMNS, "min_quantity", "lines_total"])
        out = pd.DataFrame(index=raw.index)
        out["source"] = self.name
        out["transaction_id"] = column(raw, "id").astype("string")
        for col in ("number", "status", "channel", "store_code", "currency"):
            out[col] = column(raw, col).astype("string")
        out["total"] = pd.to_numeric(column(raw, "total"), errors="coerce")
        out["ordered_at"] = pd.to_datetime(column(raw, "created_at"), utc=True, errors="coerce")
        out["updated_at"] = pd.to_datetime(column(raw, "updated_at"), utc=True, errors="coerce")
        customer = pd.json_normalize(column(raw, "customer").map(lambda c: c or {}).tolist())
        customer.index = raw.index
        for col in ("email", "phone", "member_number"):
            out[col] = column(customer, col).astype("string")
        out["guest"] = column(customer, "guest").fillna(False).astype(bool)
        lines = column(raw, "lines").map(lambda v: v if isinstance(v, list) else [])
        out["line_count"] = lines.map(len).astype("int64")
        exploded = lines.explode().dropna()
        if len(exploded):
            flat = pd.json_normalize(exploded.tolist())
            flat.index = exploded.index
            qty = pd.to_numeric(column(flat, "quantity"), errors="coerce")
            price = pd.to_numeric(column(flat, "unit_price"), errors="coerce")
            qty = qty.where(price >= 0, -1)  # a negative price fails like a bad quantity
            g = pd.DataFrame(
                {"q": qty, "t": pd.to_numeric(column(flat, "line_total"), errors="coerce")}
            )
            agg = g.groupby(level=0).agg(min_quantity=("q", "min"), lines_total=("t", "sum"))
            out = out.join(agg)
        else:
            out["min_quantity"] = np.nan
            out["lines_total"] = np.nan
        out["lines"] = lines.map(lambda v: json.dumps(v, separators=(",", ":"), default=str))
        return out.reset_index(drop=True)

    # -- the customer contract: a shop gives no customers ---------------------
    def to_canonical(self, raw: pd.DataFrame) -> pd.DataFrame:
        return conform(pd.DataFrame())

    def from_canonical(self, golden: pd.DataFrame) -> list[dict[str, Any]]:
        raise ConnectorError(self.name, "a shop is a transactions source, not a publish target")

    def write(self, ops: list[WriteOp]) -> list[WriteResult]:
        raise ConnectorError(self.name, "a shop is a transactions source, not a publish target")
