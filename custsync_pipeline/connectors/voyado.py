"""Voyado Engage connector: contacts (API v3).

Voyado documents no "list every contact" endpoint, so a faithful full
snapshot reads the change feed (``GET /api/v3/contacts/changes?changeType=
Created``, from ``options.full_from``) and fetches each contact by id
(``read_mode: change_feed``, the default, several requests in flight at
the documented 50 req/s). ``read_mode: listing`` uses ``GET /api/v3/contacts?
offset=&count=``, which the sandbox models for speed but a real tenant does
not have. Incremental reads always use the change feed (Created + Updated,
and Deleted for ``deleted_ids``) with an overlap window. Writes go through
``/api/v3/contacts/bulk`` (POST creates, PATCH updates, at most 4,000 a call);
empty values are never sent, because Voyado overwrites a stored value with
an empty one.

Aspects (``to_aspects``): the contact's address, e-mail and mobile phone, and its custom
contact attributes (top-level fields outside the standard model, or ``options.attributes``).
Consents stay on the row; the ``consents`` list (``[{id, value, date, source}]``, ``id`` =
the preference name) says when each was set.

Loyalty (seed 004): the tier is the contact's ``loyalty.tier``, the membership status its
``contactType`` (``Member`` / ``Contact`` -> ``member`` / ``contact``), the points balance
its point account's ``balance`` (``GET /api/v3/point-accounts?contactId=``, one request a
contact read, several in flight; ``options.point_definition`` picks one definition, else
the balances are summed; ``options.points: false`` skips them). A points change does not
touch the contact's ``lastModified``: incremental reads also take the contacts of the
window's point transactions (``GET /api/v3/point-transactions?fromDate=&toDate=``).
A contact custsync creates carries ``custsyncId`` = its golden id (a custom contact
attribute), so reading it back joins that golden record (``domain/stamps.py``), and
``contactType: Contact`` (custsync enrolls nobody); until Voyado makes it a member it has no
membership status.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

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
    parse_times,
    records_frame,
    set_path,
)
from custsync_pipeline.connectors.entries import (
    column_entries,
    concat_entries,
    detail_entries,
    explode_items,
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

BULK_LIMIT = 4000
CHANGES_LIMIT = 250_000  # the change feed answers 400 above this: the reader splits windows
LIST_PAGE = 1000

_TO_CANONICAL: dict[str, str] = {
    "first_name": "firstName",
    "last_name": "lastName",
    "email": "email",
    "phone": "mobilePhone",
    "street": "street",
    "postal_code": "zipCode",
    "city": "city",
    "country": "countryCode",
    "language": "language",
    "web_user_id": "externalId",
    "store_code": "storeExternalId",
    "loyalty_tier": "loyalty.tier",
    "custsync_id": "custsyncId",
}

_FROM_CANONICAL: dict[str, str] = {
    "first_name": "firstName",
    "last_name": "lastName",
    "email": "email",
    "phone": "mobilePhone",
    "street": "street",
    "postal_code": "zipCode",
    "city": "city",
    "country": "countryCode",
    "language": "language",
    "web_user_id": "externalId",
    "store_code": "storeExternalId",
}

# fields of Voyado's standard contact model: every other top-level scalar field is one of
# the tenant's custom contact attributes (``customer_attributes``)
STANDARD_FIELDS = frozenset(
    {
        "id", "firstName", "lastName", "email", "mobilePhone", "street", "zipCode", "city",
        "countryCode", "language", "contactType", "externalId", "memberNumber",
        "storeExternalId", "createdDate", "lastModified", "birthDay", "gender",
        "socialSecurityNumber", "careOf", "consents", "preferences", "loyalty",
        "discoveryKey", "currentStore", "registrationDate", "isSubscribed",
        "custsyncId", "pointAccount",
    }
)  # fmt: skip

# aspect column of an address entry -> contact field
_ADDRESS_FIELDS = {"street": "street", "postal_code": "zipCode", "city": "city",
                   "country": "countryCode"}  # fmt: skip

# Voyado consent values -> canonical (``Not set`` is no fact: missing)
_CONSENT_IN = {"Yes": "yes", "No": "no"}
_CONSENT_OUT = {"yes": "Yes", "no": "No"}
# contactType -> canonical membership status (loyalty_status)
_STATUS_IN = {"member": "member", "contact": "contact"}
POINTS_PAGE = 1000


def _consent_dates(raw: pd.DataFrame) -> dict[str, pd.Series]:
    """Preference name -> the time its consent was set (``consents[].date``), per record."""
    items = explode_items(raw, "consents")
    if items.empty or "id" not in items.columns or "date" not in items.columns:
        return {}
    items = items.assign(when=parse_times(items["date"])).dropna(subset=["id"])
    # one entry per consent id and record: the newest wins
    newest_first = items.sort_values("when", ascending=False, na_position="last")
    table = newest_first.drop_duplicates(["__row", "id"]).pivot(
        index="__row", columns="id", values="when"
    )
    return {str(name): table[name].reindex(raw.index) for name in table.columns}


class VoyadoConnector(HttpConnectorBase):
    """Voyado Engage v3 (``options``: read_mode, full_from, concurrency, source, http, ...)."""

    DEFAULT_RATE_PER_S = 50.0  # documented: stay under 50 req/s (429 above 200)
    OPTIONS = frozenset(
        {
            "attributes",
            "batch_size",
            "concurrency",
            "full_from",
            "point_definition",
            "points",
            "read_mode",
            "source",
        }
    )

    def __init__(self, name: str, cfg: ConnectorConfig, env: Mapping[str, str]) -> None:
        super().__init__(name, cfg, env)
        key = require_env(name, cfg.credentials, "api_key", env)
        self.read_mode = self.options.get("read_mode", "change_feed")
        if self.read_mode not in ("change_feed", "listing"):
            raise ConnectorError(name, "options.read_mode: one of change_feed, listing")
        self.full_from = pd.Timestamp(self.options.get("full_from", "2000-01-01T00:00:00Z"))
        self.concurrency = max(1, int(self.options.get("concurrency", 8)))
        self.batch_size = min(int(self.options.get("batch_size", BULK_LIMIT)), BULK_LIMIT)
        self.source = self.options.get("source", "custsync")
        self.read_points = bool(self.options.get("points", True))
        self.point_definition = self.options.get("point_definition")
        # custom contact attributes to read; unset = every non-standard top-level field
        attributes = self.options.get("attributes")
        self.attributes: list[str] | None = None if attributes is None else list(attributes)
        settings = self._settings()
        settings.pool_size = max(settings.pool_size, self.concurrency)
        self.http = HttpClient(
            name,
            cfg.base_url,
            # without Content-Type: application/json the API answers 500 on writes
            headers={"apikey": key, "Content-Type": "application/json"},
            secrets=[key],
            settings=settings,
        )

    # -- read -----------------------------------------------------------------

    def _feed(self, change_type: str, start: datetime, end: datetime) -> list[str]:
        """Ids changed in [start, end]; a window above the feed's 250,000 cap is halved."""
        try:
            body = self.http.get_json(
                "/api/v3/contacts/changes",
                params={
                    "changeType": change_type,
                    "fromDate": iso_z(start),
                    "toDate": iso_z(end),
                },
            )
        except ConnectorError as exc:
            too_many = exc.status == 400 and "toomany" in str(exc).lower().replace(" ", "")
            if not too_many or end - start < timedelta(seconds=2):
                raise
            mid = start + (end - start) / 2
            first = self._feed(change_type, start, mid)
            return list(dict.fromkeys(first + self._feed(change_type, mid, end)))
        if not isinstance(body, list):
            raise self.http.error(f"change feed ({change_type}) did not answer a list of ids")
        return [str(i.get("contactId") if isinstance(i, dict) else i) for i in body]

    def _fetch(self, ids: list[str]) -> list[dict[str, Any]]:
        """Contacts by id, several in flight; a contact deleted meanwhile (404) is skipped."""

        def one(cid: str) -> dict[str, Any] | None:
            resp = self.http.request("GET", f"/api/v3/contacts/{cid}", allow=(404,))
            if resp.status_code == 404:
                return None
            return resp.json()

        if not ids:
            return []
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            found = list(pool.map(one, ids))
        return [c for c in found if c is not None]

    def _point_movers(self, start: datetime, end: datetime, stats: Any) -> list[str]:
        """Contacts with a point transaction in [start, end]."""
        ids: list[str] = []
        offset = 0
        while True:
            body = self.http.get_json(
                "/api/v3/point-transactions",
                params={
                    "fromDate": iso_z(start),
                    "toDate": iso_z(end),
                    "offset": offset,
                    "count": POINTS_PAGE,
                },
            )
            stats.pages += 1
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise self.http.error("point transactions page has no items list")
            ids += [str(t["contactId"]) for t in items if t.get("contactId")]
            offset += len(items)
            if not items or offset >= int(body.get("totalCount", 0)):
                return list(dict.fromkeys(ids))

    def _attach_points(self, records: list[dict[str, Any]], listing: bool, stats: Any) -> None:
        """``pointAccount.balance`` on each contact that has a point account: its balance
        (of ``options.point_definition``, else all its accounts summed)."""
        accounts: list[dict[str, Any]] = []
        if listing:  # the modeled listing of every account, a page at a time
            offset = 0
            while True:
                body = self.http.get_json(
                    "/api/v3/point-accounts", params={"offset": offset, "count": POINTS_PAGE}
                )
                stats.pages += 1
                items = body.get("items") if isinstance(body, dict) else None
                if not isinstance(items, list):
                    raise self.http.error("point accounts page has no items list")
                accounts += items
                offset += len(items)
                if not items or offset >= int(body.get("totalCount", 0)):
                    break
        else:

            def of(cid: str) -> list[dict[str, Any]]:
                body = self.http.get_json("/api/v3/point-accounts", params={"contactId": cid})
                items = body.get("items") if isinstance(body, dict) else None
                if not isinstance(items, list):
                    raise self.http.error("point accounts answer has no items list")
                return items

            ids = [str(r.get("id")) for r in records]
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                for items in pool.map(of, ids):
                    accounts += items
            stats.pages += len(ids)
        if not accounts:
            return
        frame = pd.DataFrame.from_records(accounts)
        if self.point_definition is not None:
            frame = frame[frame["definitionId"].astype(str) == str(self.point_definition)]
        balance = pd.to_numeric(frame["balance"], errors="coerce")
        totals = balance.groupby(frame["contactId"].astype(str)).sum(min_count=1)
        for rec in records:
            total = totals.get(str(rec.get("id")))
            if total is not None and not pd.isna(total):
                rec["pointAccount"] = {"balance": float(total)}

    def read(self, since: datetime | None = None) -> ReadResult:
        start = overlap_start(since, self.overlap)
        # a minute ahead: our clock may trail the server's, and iso_z cuts to milliseconds;
        # anything later is caught by the next pull's overlap window
        end = datetime.now(UTC) + timedelta(minutes=1)
        deleted: list[str] = []
        with self.measure() as stats:
            if start is None and self.read_mode == "listing":
                records: list[dict[str, Any]] = []
                offset = 0
                while True:
                    body = self.http.get_json(
                        "/api/v3/contacts", params={"offset": offset, "count": LIST_PAGE}
                    )
                    stats.pages += 1
                    items = body.get("items") if isinstance(body, dict) else None
                    if not isinstance(items, list):
                        raise self.http.error("contact listing has no items list")
                    records.extend(items)
                    offset += len(items)
                    if offset >= int(body.get("totalCount", 0)):
                        break
                    if not items:
                        # an empty page before the announced total: fail rather than return a part
                        raise self.http.error(
                            f"empty page at offset {offset} of {body.get('totalCount')}",
                            transient=True,
                        )
            else:
                if start is None:
                    # Created and Updated, up to far ahead: a contact stamped with a date in
                    # the future (a till's clock, a typo) is still a contact
                    horizon = end + timedelta(days=365 * 50)
                    begin = self.full_from.to_pydatetime()
                    created = self._feed("Created", begin, horizon)
                    updated = self._feed("Updated", begin, horizon)
                    ids = list(dict.fromkeys(created + updated))
                    stats.pages += 2
                else:
                    created = self._feed("Created", start, end)
                    updated = self._feed("Updated", start, end)
                    deleted = self._feed("Deleted", start, end)
                    stats.pages += 3
                    if self.read_points:  # a balance moved: its contact is read again
                        updated += self._point_movers(start, end, stats)
                    gone = set(deleted)
                    ids = [i for i in dict.fromkeys(created + updated) if i not in gone]
                records = self._fetch(ids)
                stats.pages += len(ids)
            if self.read_points and records:
                listing = start is None and self.read_mode == "listing"
                self._attach_points(records, listing, stats)
        raw = records_frame(records)
        watermark = newest(column(raw, "lastModified"), floor=since) if len(raw) else None
        return ReadResult(records=raw, deleted_ids=deleted, watermark=watermark, stats=stats)

    # -- mapping --------------------------------------------------------------

    def to_canonical(self, raw: pd.DataFrame) -> pd.DataFrame:
        if raw.empty:
            return conform(pd.DataFrame())
        out = pd.DataFrame(index=raw.index)
        out["connector"] = self.name
        out["source_id"] = raw["id"]
        out["voyado_id"] = raw["id"]
        out["object_type"] = "contact"
        out["kind"] = "person"
        for canon, fld in _TO_CANONICAL.items():
            out[canon] = column(raw, fld)
        # points live on the point account; a contact payload of an older shape may carry them
        points = column(raw, "pointAccount.balance")
        out["loyalty_points"] = points.where(points.notna(), column(raw, "loyalty.points"))
        status = column(raw, "contactType").astype("string").str.strip().str.lower()
        # a contact custsync made for a CRM customer is no membership fact of Voyado's
        # until Voyado enrolls it (else its status would only reach the CRM a run later)
        ours = column(raw, "custsyncId").notna() & (status == "contact").fillna(False)
        out["loyalty_status"] = status.map(_STATUS_IN).mask(ours)
        out["email_consent"] = column(raw, "preferences.acceptsEmail").map(_CONSENT_IN)
        out["sms_consent"] = column(raw, "preferences.acceptsSms").map(_CONSENT_IN)
        # when each consent was set: its entry in the contact's consents list
        dates = _consent_dates(raw)
        for canon, pref in (("email_consent", "acceptsEmail"), ("sms_consent", "acceptsSms")):
            if pref in dates:
                out[f"{canon}_at"] = dates[pref].where(out[canon].notna())
        out["created_at"] = column(raw, "createdDate")
        out["updated_at"] = column(raw, "lastModified")
        return conform(out)

    def to_aspects(self, raw: pd.DataFrame) -> pd.DataFrame:
        """The contact's address (``street``, ``zipCode``, ``city``, ``countryCode``: mailing),
        e-mail and mobile phone, and its custom attributes (``options.attributes``, else every
        top-level field outside the standard contact model). Values as received."""
        if raw.empty:
            return empty_entries()
        sid = raw["id"].astype("string")
        seen = parse_times(column(raw, "lastModified"))
        address = {
            "type": "mailing",
            "street": column(raw, "street"),
            "postal_code": column(raw, "zipCode"),
            "city": column(raw, "city"),
            "country": column(raw, "countryCode"),
        }
        parts = [
            column_entries(self.name, sid, "addresses", address, local_id="mailing", seen_at=seen)
        ]
        details = [("email", "email", "email"), ("mobilePhone", "mobile", "mobile")]
        parts += detail_entries(self.name, sid, raw, details, seen_at=seen)
        for name in self._attribute_fields(raw):
            parts.append(
                column_entries(
                    self.name,
                    sid,
                    "customer_attributes",
                    {"name": name, "value": raw[name].astype("string")},
                    local_id=name,
                    seen_at=seen,
                )
            )
        return concat_entries(parts)

    def _attribute_fields(self, raw: pd.DataFrame) -> list[str]:
        if self.attributes is not None:
            return [a for a in self.attributes if a in raw.columns]
        out = []
        for col in raw.columns:
            if col in STANDARD_FIELDS or "." in col or col.startswith("__"):
                continue
            sample = raw[col].dropna()
            first = sample.iat[0] if len(sample) else None
            if isinstance(first, list | dict) or (
                isinstance(first, str) and first.startswith(("[{", "[]", '{"'))
            ):
                continue  # a nested structure (or its JSON text), not an attribute value
            out.append(col)
        return out

    def from_canonical(self, golden: pd.DataFrame) -> list[dict[str, Any]]:
        payloads: list[dict[str, Any]] = []
        cols = [c for c in (*_FROM_CANONICAL, "email_consent", "sms_consent") if c in golden]
        if "addresses" in golden.columns:
            cols.append("addresses")
        for row in golden[cols].to_dict("records"):
            body: dict[str, Any] = {}
            for canon, fld in _FROM_CANONICAL.items():
                if canon in row and not is_missing(row[canon]):
                    body[fld] = jsonable(row[canon])
            # the golden mailing address (else the first) replaces the flat one whole
            chosen = first_entry(row.get("addresses"), ("mailing",)) or first_entry(
                row.get("addresses")
            )
            if chosen:
                for fld in _ADDRESS_FIELDS.values():
                    body.pop(fld, None)
                for canon, fld in _ADDRESS_FIELDS.items():
                    if not is_missing(chosen[1].get(canon)):
                        body[fld] = jsonable(chosen[1][canon])
            # a consent is sent only when known: "Not set"/empty would overwrite it
            for canon, fld in (("email_consent", "acceptsEmail"), ("sms_consent", "acceptsSms")):
                value = _CONSENT_OUT.get(str(row.get(canon, "")).lower())
                if value:
                    set_path(body, f"preferences.{fld}", value)
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
        creates = [i for i, op in enumerate(ops) if results[i] is None and not op.target_id]
        updates = [i for i, op in enumerate(ops) if results[i] is None and op.target_id]
        for method, idx in (("POST", creates), ("PATCH", updates)):
            for chunk in batched(idx, self.batch_size):
                body = []
                for i in chunk:
                    rec = {k: v for k, v in ops[i].payload.items() if not is_missing(v)}
                    rec.pop("id", None)
                    if method == "PATCH":
                        rec["id"] = ops[i].target_id
                    else:  # a contact custsync creates is a copy of its golden record,
                        # not a loyalty member: enrolling one is Voyado's business
                        rec["custsyncId"] = ops[i].golden_id
                        rec.setdefault("contactType", "Contact")
                    body.append(rec)
                self._bulk(method, ops, results, chunk, body)
        return [r for r in results if r is not None]

    def _bulk(
        self,
        method: str,
        ops: list[WriteOp],
        results: list[WriteResult | None],
        chunk: Any,
        body: list[dict[str, Any]],
    ) -> None:
        try:
            answer = self.http.request(
                method, "/api/v3/contacts/bulk", json=body, params={"source": self.source}
            ).json()
            answer = self._await_batch(answer)
        except QuotaExceededError:
            raise
        except ConnectorError as exc:
            for i in chunk:
                results[i] = WriteResult(
                    ops[i].golden_id, ops[i].target_id, False, str(exc), exc.transient
                )
            return
        per = {int(r.get("index", -1)): r for r in answer.get("results") or []}
        for pos, i in enumerate(chunk):
            res = per.get(pos)
            op = ops[i]
            if res is None:
                results[i] = WriteResult(
                    op.golden_id, op.target_id, False, "no result for record", True
                )
            elif res.get("success"):
                results[i] = WriteResult(
                    op.golden_id, str(res.get("contactId") or op.target_id), True
                )
            elif res.get("error") == "ContactAlreadyExists" and method == "POST":
                # a replayed create: the contact holds our key already, update it instead
                results[i] = self._adopt(op, body[pos])
            else:
                error = str(res.get("error") or "rejected")
                # an update of a contact deleted there since it was read
                gone = method == "PATCH" and bool(op.target_id) and error == "ContactNotFound"
                results[i] = WriteResult(op.golden_id, op.target_id, False, error, gone=gone)

    def _await_batch(self, answer: dict[str, Any]) -> dict[str, Any]:
        """Poll a bulk batch until it is no longer running (the sandbox completes at once)."""
        waited = 0.0
        while answer.get("status") not in ("Completed", "Failed", None) and waited < 300:
            time.sleep(1.0)
            waited += 1.0
            answer = self.http.get_json(
                "/api/v3/contacts/bulk/status", params={"batchId": answer.get("batchId")}
            )
        return answer

    def _adopt(self, op: WriteOp, rec: dict[str, Any]) -> WriteResult:
        try:
            found = self.http.request(
                "GET", "/api/v3/contacts/id", params={"email": rec.get("email", "")}
            ).json()
            cid = (
                found if isinstance(found, str) else str(found.get("contactId") or found.get("id"))
            )
            self.http.request("PATCH", f"/api/v3/contacts/{cid}", json=rec)
        except QuotaExceededError:
            raise
        except ConnectorError as exc:
            return WriteResult(op.golden_id, op.target_id, False, str(exc), exc.transient)
        return WriteResult(op.golden_id, cid, True)

    def _delete(self, op: WriteOp) -> WriteResult:
        if not op.target_id:
            return WriteResult(op.golden_id, None, False, "delete needs a target_id")
        try:
            self.http.request("DELETE", f"/api/v3/contacts/{op.target_id}", allow=(404,))
        except QuotaExceededError:
            raise
        except ConnectorError as exc:
            return WriteResult(op.golden_id, op.target_id, False, str(exc), exc.transient)
        return WriteResult(op.golden_id, op.target_id, True)
