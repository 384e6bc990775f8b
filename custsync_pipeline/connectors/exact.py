"""Exact Online connector: CRM Accounts and Contacts (REST, OData v2).

Reads ``/api/v1/{division}/crm/Accounts`` (and ``crm/Contacts``) following
``d.__next`` links, incrementally with ``$filter=Modified ge datetime'…'`` and
an overlap window. Deletes are not visible through ``Modified``; when
``read_deletes`` is on they come from ``sync/Deleted`` (the public docs are
unsure about it; client code uses it), filtered to the window. Dates arrive
as ``/Date(ms)/``; an Account ``Code`` is space-padded to 18 and is the
customer number other systems refer to (trimmed here). Exact allows 60 calls
a minute and 5,000 a day per company: the client keeps to 1 request/s with a
burst of 60 and pauses when ``X-RateLimit-Minutely-Remaining`` reaches 0
until ``X-RateLimit-Minutely-Reset``. Writes are one record a call (no batch
endpoint): POST creates, PUT updates by ``guid'…'``.

Aspects (``to_aspects``): an Account's own address fields are its visit address; with
``Addresses`` among ``options.resources`` the ``crm/Addresses`` rows (read whole on every
pull) are attached to their Account (column ``Addresses``) and become its postal, invoice
and delivery addresses; Contacts become contact persons of their Account.
"""

from __future__ import annotations

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
    is_missing,
    jsonable,
    newest,
    overlap_start,
    parse_times,
    records_frame,
)
from custsync_pipeline.connectors.entries import (
    column_entries,
    concat_entries,
    detail_entries,
    explode_items,
    present,
)
from custsync_pipeline.connectors.http import (
    ConnectorError,
    HttpClient,
    HttpSettings,
    QuotaExceededError,
    rate_limit_reset_hook,
    require_env,
)
from custsync_pipeline.domain.aspects import empty_entries
from custsync_pipeline.domain.canonical import conform

RESOURCES = ("Accounts", "Contacts", "Addresses")
# crm/Addresses Type: 1 visit, 2 postal, 3 invoice, 4 delivery
ADDRESS_TYPES = {1: "visiting", 2: "mailing", 3: "billing", 4: "shipping"}
_ACCOUNT_ADDRESS = (("street", "AddressLine1"), ("city", "City"), ("postal_code", "Postcode"),
                    ("country", "Country"))  # fmt: skip
_ENTITY_TYPES = {"Accounts": 2, "Contacts": 3}  # sync/Deleted EntityType (modeled in the sandbox)

_ACCOUNT_TO_CANONICAL = {
    "email": "Email",
    "phone": "Phone",
    "street": "AddressLine1",
    "city": "City",
    "postal_code": "Postcode",
    "country": "Country",
    "language": "Language",
}
_CONTACT_TO_CANONICAL = {
    "first_name": "FirstName",
    "last_name": "LastName",
    "email": "Email",
    "phone": "Phone",
}
_ACCOUNT_FROM_CANONICAL = {
    "email": "Email",
    "phone": "Phone",
    "street": "AddressLine1",
    "city": "City",
    "postal_code": "Postcode",
    "country": "Country",
}


def _attach(raw: pd.DataFrame, addresses: pd.DataFrame) -> pd.Series:
    """Each Account row's ``crm/Addresses`` as a list of dicts (``[]`` when it has none;
    missing on Contact rows), so the raw frame keeps one row per customer record."""
    if addresses.empty or "Account" not in addresses.columns:
        lists: pd.Series = pd.Series(dtype=object)
    else:
        key = addresses["Account"].astype("string").str.lower()
        clean = addresses.astype(object).where(addresses.notna(), None)
        lists = pd.Series(clean.to_dict("records"), index=key.to_numpy()).groupby(level=0).agg(list)
    is_account = column(raw, "__resource").fillna("Accounts") == "Accounts"
    ids = raw["ID"].astype("string").str.lower()
    out = pd.Series([None] * len(raw), index=raw.index, dtype=object)
    for i in np.flatnonzero(is_account.to_numpy()):
        out.iat[i] = list(lists.get(ids.iat[i], []))
    return out


class ExactConnector(HttpConnectorBase):
    """Exact Online CRM (``options``: division, resources, account_kind, select, read_deletes, ...)."""

    DEFAULT_RATE_PER_S = 1.0  # documented: 60 calls a minute per company
    OPTIONS = frozenset(
        {"account_kind", "division", "read_deletes", "resources", "select", "write_resource"}
    )

    def __init__(self, name: str, cfg: ConnectorConfig, env: Mapping[str, str]) -> None:
        super().__init__(name, cfg, env)
        token = require_env(name, cfg.credentials, "access_token", env)
        if "division" not in self.options:
            raise ConnectorError(name, "options.division: the Exact Online division (company) id")
        self.division = str(self.options["division"])
        self.resources: list[str] = list(self.options.get("resources") or ["Accounts"])
        unknown = sorted(set(self.resources) - set(RESOURCES))
        if unknown:
            raise ConnectorError(name, f"options.resources: unknown {unknown}; known {RESOURCES}")
        self.account_kind = self.options.get("account_kind", "person")
        if self.account_kind not in ("person", "company"):
            raise ConnectorError(name, "options.account_kind: person or company")
        self.select: dict[str, list[str]] = dict(self.options.get("select") or {})
        self.read_deletes = bool(self.options.get("read_deletes", True))
        self.write_resource = self.options.get("write_resource", "Accounts")
        self.http = HttpClient(
            name,
            cfg.base_url,
            headers={"Authorization": f"Bearer {token}", "Prefer": "return=representation"},
            secrets=[token],
            settings=self._settings(),
            response_hooks=[
                rate_limit_reset_hook(
                    "X-RateLimit-Minutely-Remaining", "X-RateLimit-Minutely-Reset"
                )
            ],
        )

    def _settings(self) -> HttpSettings:
        settings = super()._settings()
        if settings.burst is None and settings.rate_per_s == self.DEFAULT_RATE_PER_S:
            settings.burst = 60.0  # 60 a minute may come as a burst
        return settings

    @property
    def api(self) -> str:
        return f"/api/v1/{self.division}"

    # -- read -----------------------------------------------------------------

    def read(self, since: datetime | None = None) -> ReadResult:
        start = overlap_start(since, self.overlap)
        frames: list[pd.DataFrame] = []
        deleted: list[str] = []
        addresses: pd.DataFrame | None = None
        with self.measure() as stats:
            for resource in self.resources:
                params: dict[str, Any] = {}
                # Addresses are read whole: an Account's list must be complete, and an address
                # edit does not touch its Account's Modified
                if start is not None and resource != "Addresses":
                    stamp = start.strftime("%Y-%m-%dT%H:%M:%S")
                    params["$filter"] = f"Modified ge datetime'{stamp}'"
                if self.select.get(resource):
                    params["$select"] = ",".join(self.select[resource])
                url: str | None = f"{self.api}/crm/{resource}"
                records: list[dict[str, Any]] = []
                while url:
                    body = self.http.get_json(url, params=params or None)
                    params = {}  # the __next link carries every parameter
                    stats.pages += 1
                    d = body.get("d") if isinstance(body, dict) else None
                    results = d.get("results") if isinstance(d, dict) else None
                    if not isinstance(results, list):
                        raise self.http.error(f"{resource} page has no d.results list")
                    records.extend(results)
                    url = d.get("__next") or None
                if resource == "Addresses":
                    for rec in records:
                        rec.pop("__metadata", None)
                    addresses = pd.DataFrame.from_records(records)
                    continue
                frame = records_frame(records)
                if not frame.empty:
                    frame = frame.drop(
                        columns=[c for c in frame.columns if c.startswith("__metadata")]
                    )
                    frame["__resource"] = resource
                frames.append(frame)
            if start is not None and self.read_deletes:
                deleted = self._deleted(start)
        frames = [f for f in frames if not f.empty]
        raw = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if addresses is not None and not raw.empty:
            raw["Addresses"] = _attach(raw, addresses)
        watermark = newest(parse_times(column(raw, "Modified")), floor=since) if len(raw) else None
        return ReadResult(records=raw, deleted_ids=deleted, watermark=watermark, stats=stats)

    def _deleted(self, start: datetime) -> list[str]:
        wanted = {_ENTITY_TYPES[r] for r in self.resources if r in _ENTITY_TYPES}
        rows: list[dict[str, Any]] = []
        since = 0
        while True:
            body = self.http.get_json(
                f"{self.api}/sync/Deleted", params={"$filter": f"Timestamp gt {since}L"}
            )
            page = (body.get("d") or {}).get("results") if isinstance(body, dict) else None
            if not isinstance(page, list):
                raise self.http.error("sync/Deleted answered without d.results")
            rows.extend(page)
            if len(page) < 1000:
                break
            since = max(int(r.get("Timestamp", 0)) for r in page)
        if not rows:
            return []
        frame = pd.DataFrame(rows)
        when = parse_times(frame["DeletedDate"])
        keep = frame["EntityType"].isin(wanted) & (when >= pd.Timestamp(start))
        return frame.loc[keep, "EntityKey"].astype(str).tolist()

    # -- mapping --------------------------------------------------------------

    def to_canonical(self, raw: pd.DataFrame) -> pd.DataFrame:
        if raw.empty:
            return conform(pd.DataFrame())
        resource = column(raw, "__resource").fillna("Accounts")
        is_account = resource == "Accounts"
        out = pd.DataFrame(index=raw.index)
        out["connector"] = self.name
        out["source_id"] = raw["ID"]
        out["exact_id"] = raw["ID"]
        out["object_type"] = resource.str.rstrip("s")
        for canon, fld in _CONTACT_TO_CANONICAL.items():
            out[canon] = column(raw, fld).where(~is_account)
        for canon, fld in _ACCOUNT_TO_CANONICAL.items():
            values = column(raw, fld)
            out[canon] = values.where(is_account, out[canon] if canon in out else pd.NA)
        # a Contact has no country of its own: it takes its Account's, which is also the
        # region its national phone numbers are read in (a snapshot holds both resources)
        account_country = pd.Series(
            column(raw, "Country").where(is_account).to_numpy(), index=raw["ID"].to_numpy()
        ).dropna()
        account_country = account_country[~account_country.index.duplicated()]
        out["country"] = out["country"].where(
            is_account, column(raw, "Account").map(account_country)
        )
        # the Code is right-aligned, space-padded to 18: the customer number is the trimmed value
        out["customer_number"] = column(raw, "Code").astype("string").str.strip().where(is_account)
        name = column(raw, "Name").astype("string").str.strip()
        if self.account_kind == "person":
            parts = name.str.split(r"\s+", n=1, expand=True, regex=True)
            first = parts[0] if 0 in parts.columns else pd.NA
            last = parts[1] if 1 in parts.columns else pd.NA
            out["first_name"] = out["first_name"].where(~is_account, first)
            out["last_name"] = out["last_name"].where(~is_account, last)
            out["kind"] = "person"
        else:
            out["company_name"] = name.where(is_account)
            out["kind"] = is_account.map({True: "company", False: "person"})
        out["created_at"] = parse_times(column(raw, "Created"))
        out["updated_at"] = parse_times(column(raw, "Modified"))
        return conform(out)

    def to_aspects(self, raw: pd.DataFrame) -> pd.DataFrame:
        """An Account's visit address (its own address fields) and its ``crm/Addresses``
        (postal, invoice, delivery …, when ``Addresses`` is among the resources read); the
        e-mail and phone of every record; every Contact as a contact person of its Account
        (its e-mail and phone as the contact person's details). Values as received."""
        if raw.empty:
            return empty_entries()
        resource = column(raw, "__resource").fillna("Accounts")
        accounts = resource == "Accounts"
        sid = raw["ID"].astype("string")
        seen = parse_times(column(raw, "Modified"))
        parts = [
            column_entries(
                self.name,
                sid,
                "addresses",
                {"type": "visiting", **{c: column(raw, f) for c, f in _ACCOUNT_ADDRESS}},
                local_id="visiting",
                seen_at=seen,
                mask=accounts,
            )
        ]
        items = explode_items(raw[accounts], "Addresses")
        if not items.empty:
            rows = items["__row"]
            kind = pd.to_numeric(column(items, "Type"), errors="coerce").map(ADDRESS_TYPES)
            parts.append(
                column_entries(
                    self.name,
                    pd.Series(sid.loc[rows].to_numpy(), index=items.index),
                    "addresses",
                    {
                        "type": kind.fillna("other"),
                        **{c: column(items, f) for c, f in _ACCOUNT_ADDRESS},
                    },
                    local_id=column(items, "ID").astype("string"),
                    seen_at=seen.loc[rows].to_numpy(),  # the Account's change time
                )
            )
        details = [
            ("Email", "email", "email"),
            ("BusinessEmail", "email", "business_email"),
            ("Phone", "phone", "phone"),
        ]
        parts += detail_entries(self.name, sid, raw, details, seen_at=seen)
        account = column(raw, "Account").astype("string")
        staff = (resource == "Contacts") & present(account)
        if staff.any():
            parts.append(
                column_entries(
                    self.name,
                    account,
                    "contact_persons",
                    {
                        "first_name": column(raw, "FirstName"),
                        "last_name": column(raw, "LastName"),
                        "role": column(raw, "JobTitleDescription"),
                        "email": column(raw, "Email"),
                        "phone": column(raw, "Phone"),
                        "person_id": sid,
                    },
                    local_id=sid,
                    seen_at=seen,
                    mask=staff,
                )
            )
            person_details = [("Email", "email", "email"), ("Phone", "phone", "phone")]
            parts += detail_entries(
                self.name,
                account,
                raw,
                person_details,
                seen_at=seen,
                parent_local_id=sid,
                mask=staff,
            )
        return concat_entries(parts)

    def from_canonical(self, golden: pd.DataFrame) -> list[dict[str, Any]]:
        payloads: list[dict[str, Any]] = []
        for row in golden.to_dict("records"):
            body: dict[str, Any] = {}
            if self.account_kind == "company" and not is_missing(row.get("company_name")):
                body["Name"] = row["company_name"]
            else:
                name = " ".join(
                    str(row[c])
                    for c in ("first_name", "last_name")
                    if c in row and not is_missing(row[c])
                )
                if name:
                    body["Name"] = name
            for canon, fld in _ACCOUNT_FROM_CANONICAL.items():
                if canon in row and not is_missing(row[canon]):
                    body[fld] = jsonable(row[canon])
            payloads.append(body)
        return payloads

    # -- write ----------------------------------------------------------------

    def write(self, ops: list[WriteOp]) -> list[WriteResult]:
        return [self._write_one(op) for op in ops]

    def _write_one(self, op: WriteOp) -> WriteResult:
        base = f"{self.api}/crm/{self.write_resource}"
        body = {k: v for k, v in op.payload.items() if k not in ("ID", "Created", "Modified")}
        try:
            if op.op == "delete":
                if not op.target_id:
                    return WriteResult(op.golden_id, None, False, "delete needs a target_id")
                self.http.request("DELETE", f"{base}(guid'{op.target_id}')", allow=(404,))
                return WriteResult(op.golden_id, op.target_id, True)
            if op.op != "upsert":
                return WriteResult(op.golden_id, op.target_id, False, f"unknown op {op.op!r}")
            if op.target_id:
                self.http.request("PUT", f"{base}(guid'{op.target_id}')", json=body)
                return WriteResult(op.golden_id, op.target_id, True)
            created = self.http.request("POST", base, json=body).json()
            new_id = (created.get("d") or {}).get("ID") if isinstance(created, dict) else None
            return WriteResult(op.golden_id, str(new_id) if new_id else None, True)
        except QuotaExceededError:
            raise
        except ConnectorError as exc:
            gone = bool(op.target_id) and op.op == "upsert" and exc.status == 404
            return WriteResult(op.golden_id, op.target_id, False, str(exc), exc.transient, gone)
        except ValueError:
            return WriteResult(op.golden_id, op.target_id, False, "response is not JSON", True)
