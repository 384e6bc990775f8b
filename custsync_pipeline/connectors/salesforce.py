"""Salesforce REST connector: Contact, Account and Lead.

Reads with SOQL (``/query``, paged by ``nextRecordsUrl``), incrementally by
``LastModifiedDate`` with an overlap window, and deletes from
``/sobjects/<Object>/deleted/``. Writes creates as composite upserts on the
external-id field (``options.external_id_field``, value = golden id) and
updates of known records as composite updates by Id, 200 records a call, one
result per record in request order. The daily API quota (403
``REQUEST_LIMIT_EXCEEDED``) fails fast: retrying today will not help.

A converted Lead (``ConvertedContactId`` set) carries the Contact's id as its
``salesforce_id``: identity links it to that Contact, so a conversion never leaves two
golden records. Contacts read and write the loyalty fields ``Loyalty_Tier__c``,
``Loyalty_Points__c`` and ``Membership_Status__c``.

Aspects (``to_aspects``): Contact ``Mailing*`` / ``Other*`` and Account ``Billing*`` /
``Shipping*`` addresses, and Contacts under an Account (``AccountId``) as that Account's
contact persons; ``from_canonical`` writes a golden record's address entries back into
the same blocks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import requests

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
)
from custsync_pipeline.connectors.entries import (
    column_entries,
    concat_entries,
    detail_entries,
    entry_list,
    first_entry,
    present,
)
from custsync_pipeline.connectors.http import (
    ConnectorError,
    HttpClient,
    QuotaExceededError,
    require_env,
)
from custsync_pipeline.domain.aspects import empty_entries
from custsync_pipeline.domain.canonical import conform

log = logging.getLogger(__name__)

BATCH_LIMIT = 200  # composite sobjects: at most 200 records a call

DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "Contact": (
        "Id",
        "FirstName",
        "LastName",
        "Email",
        "Phone",
        "MobilePhone",
        "MailingStreet",
        "MailingCity",
        "MailingPostalCode",
        "MailingCountry",
        "OtherStreet",
        "OtherCity",
        "OtherPostalCode",
        "OtherCountry",
        "AccountId",
        "Title",
        "Voyado_Id__c",
        "Customer_Number__c",
        "Custsync_Id__c",
        "Loyalty_Tier__c",
        "Loyalty_Points__c",
        "Membership_Status__c",
        "HasOptedOutOfEmail",
        "CreatedDate",
        "LastModifiedDate",
    ),
    "Account": (
        "Id",
        "Name",
        "Phone",
        "Website",
        "BillingStreet",
        "BillingCity",
        "BillingPostalCode",
        "BillingCountry",
        "ShippingStreet",
        "ShippingCity",
        "ShippingPostalCode",
        "ShippingCountry",
        "Voyado_Id__c",
        "Customer_Number__c",
        "Custsync_Id__c",
        "CreatedDate",
        "LastModifiedDate",
    ),
    "Lead": (
        "Id",
        "FirstName",
        "LastName",
        "Company",
        "Email",
        "Phone",
        "Street",
        "City",
        "PostalCode",
        "Country",
        "Custsync_Id__c",
        "IsConverted",
        "ConvertedContactId",
        "CreatedDate",
        "LastModifiedDate",
    ),
}

# what a Lead's required Company holds when nobody knows it (Salesforce web-to-lead)
LEAD_COMPANY_UNKNOWN = frozenset({"[not provided]", "not provided", "n/a", "unknown", "-"})

# canonical column -> field, per object (cross-references land in the column
# of the system they point at: Voyado_Id__c -> voyado_id, ...)
_TO_CANONICAL: dict[str, dict[str, str]] = {
    "Contact": {
        "first_name": "FirstName",
        "last_name": "LastName",
        "email": "Email",
        "street": "MailingStreet",
        "city": "MailingCity",
        "postal_code": "MailingPostalCode",
        "country": "MailingCountry",
        "voyado_id": "Voyado_Id__c",
        "customer_number": "Customer_Number__c",
        "custsync_id": "Custsync_Id__c",
        "loyalty_tier": "Loyalty_Tier__c",
        "loyalty_points": "Loyalty_Points__c",
        "loyalty_status": "Membership_Status__c",
    },
    "Account": {
        "company_name": "Name",
        "street": "BillingStreet",
        "city": "BillingCity",
        "postal_code": "BillingPostalCode",
        "country": "BillingCountry",
        "voyado_id": "Voyado_Id__c",
        "customer_number": "Customer_Number__c",
        "custsync_id": "Custsync_Id__c",
    },
    "Lead": {
        "first_name": "FirstName",
        "last_name": "LastName",
        "company_name": "Company",
        "email": "Email",
        "street": "Street",
        "city": "City",
        "postal_code": "PostalCode",
        "country": "Country",
        "custsync_id": "Custsync_Id__c",
    },
}

# golden field -> field of the written object
_FROM_CANONICAL: dict[str, dict[str, str]] = {
    "Contact": {
        "first_name": "FirstName",
        "last_name": "LastName",
        "email": "Email",
        "phone": "Phone",
        "street": "MailingStreet",
        "city": "MailingCity",
        "postal_code": "MailingPostalCode",
        "country": "MailingCountry",
        "customer_number": "Customer_Number__c",
        "loyalty_tier": "Loyalty_Tier__c",
        "loyalty_points": "Loyalty_Points__c",
        "loyalty_status": "Membership_Status__c",
        "email_consent": "HasOptedOutOfEmail",  # yes -> false, no -> true (_OPTED_OUT)
    },
    "Account": {
        "company_name": "Name",
        "phone": "Phone",
        "street": "BillingStreet",
        "city": "BillingCity",
        "postal_code": "BillingPostalCode",
        "country": "BillingCountry",
        "customer_number": "Customer_Number__c",
    },
    "Lead": {
        "first_name": "FirstName",
        "last_name": "LastName",
        "company_name": "Company",
        "email": "Email",
        "phone": "Phone",
        "street": "Street",
        "city": "City",
        "postal_code": "PostalCode",
        "country": "Country",
    },
}


# a golden e-mail consent as the Contact's opt-out flag; unset (or any other value) is not sent
_OPTED_OUT = {"yes": False, "no": True}

# the address blocks of each object: (address type, field prefix); a block is Street, City,
# PostalCode, Country after the prefix
_ADDRESS_BLOCKS: dict[str, tuple[tuple[str, str], ...]] = {
    "Contact": (("mailing", "Mailing"), ("other", "Other")),
    "Account": (("billing", "Billing"), ("shipping", "Shipping")),
    "Lead": (("mailing", ""),),
}
_ADDRESS_PARTS = (("street", "Street"), ("city", "City"), ("postal_code", "PostalCode"),
                  ("country", "Country"))  # fmt: skip
_CONTACT_DETAILS = (("Email", "email"), ("Phone", "phone"), ("MobilePhone", "mobile"),
                    ("Website", "website"))  # fmt: skip


def _address_block(entry: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}{fld}": jsonable(entry[col])
        for col, fld in _ADDRESS_PARTS
        if not is_missing(entry.get(col))
    }


def _place(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """An address entry's parts as a place: case and spacing folded."""
    return tuple("".join(str(entry.get(col) or "").split()).casefold() for col, _ in _ADDRESS_PARTS)


def _quota_check(resp: requests.Response) -> str | None:
    if resp.status_code != 403:
        return None
    try:
        body = resp.json()
    except ValueError:
        return None
    errors = body if isinstance(body, list) else [body]
    for err in errors:
        if isinstance(err, dict) and err.get("errorCode") == "REQUEST_LIMIT_EXCEEDED":
            usage = resp.headers.get("Sforce-Limit-Info", "")
            return (
                "daily API quota exhausted (403 REQUEST_LIMIT_EXCEEDED"
                + (f", {usage}" if usage else "")
                + "): retrying today will not help; wait for the quota to reset "
                "or raise the org's limit"
            )
    return None


def _limit_hook(client: HttpClient, resp: requests.Response) -> None:
    info = resp.headers.get("Sforce-Limit-Info")
    if info:
        log.debug("[%s] %s", client.connector, info)


class SalesforceConnector(HttpConnectorBase):
    """Salesforce REST API (``options``: api_version, objects, fields, external_id_field, write_object)."""

    DEFAULT_RATE_PER_S = 25.0  # the org quota is daily; keep bursts polite
    OPTIONS = frozenset(
        {
            "api_version",
            "batch_size",
            "external_id_field",
            "fields",
            "objects",
            "page_size",
            "read_deletes",
            "write_object",
        }
    )

    def __init__(self, name: str, cfg: ConnectorConfig, env: Mapping[str, str]) -> None:
        super().__init__(name, cfg, env)
        token = require_env(name, cfg.credentials, "access_token", env)
        version = str(self.options.get("api_version", "60.0"))
        self.api = f"/services/data/v{version}"
        self.objects: list[str] = list(self.options.get("objects") or ["Contact"])
        unknown = sorted(set(self.objects) - set(DEFAULT_FIELDS))
        if unknown:
            raise ConnectorError(
                name, f"options.objects: unsupported {unknown}; known: {sorted(DEFAULT_FIELDS)}"
            )
        custom_fields = self.options.get("fields") or {}
        self.fields: dict[str, list[str]] = {
            obj: list(custom_fields.get(obj) or DEFAULT_FIELDS[obj]) for obj in self.objects
        }
        self.external_id_field: str = self.options.get("external_id_field", "Custsync_Id__c")
        self.write_object: str = self.options.get("write_object", self.objects[0])
        # a Contact not opted out reads as no consent at all (HasOptedOutOfEmail=false is no
        # fact to merge), but it holds what a golden "yes" writes: compared as "yes"
        self.empty_reads_as: dict[str, str] = (
            {"email_consent": "yes"} if self.carries("email_consent") else {}
        )
        self.batch_size = min(int(self.options.get("batch_size", BATCH_LIMIT)), BATCH_LIMIT)
        self.page_size = int(self.options.get("page_size", 2000))
        self.read_deletes = bool(self.options.get("read_deletes", True))
        self.http = HttpClient(
            name,
            cfg.base_url,
            headers={"Authorization": f"Bearer {token}"},
            secrets=[token],
            settings=self._settings(),
            fatal_check=_quota_check,
            response_hooks=[_limit_hook],
        )

    # -- read -----------------------------------------------------------------

    def soql(self, obj: str, start: datetime | None) -> str:
        query = f"SELECT {', '.join(self.fields[obj])} FROM {obj}"
        if start is not None:
            # SOQL datetime literals are unquoted ISO 8601
            query += f" WHERE LastModifiedDate > {iso_z(start, millis=False)}"
        return query + " ORDER BY LastModifiedDate, Id"

    def read(self, since: datetime | None = None) -> ReadResult:
        start = overlap_start(since, self.overlap)
        frames: list[pd.DataFrame] = []
        deleted: list[str] = []
        with self.measure() as stats:
            for obj in self.objects:
                records: list[dict[str, Any]] = []
                page = self.http.get_json(
                    f"{self.api}/query",
                    params={"q": self.soql(obj, start)},
                    headers={"Sforce-Query-Options": f"batchSize={self.page_size}"},
                )
                while True:
                    stats.pages += 1
                    if not isinstance(page, dict) or not isinstance(page.get("records"), list):
                        raise self.http.error(f"query page for {obj} has no records list")
                    records.extend(page["records"])
                    if page.get("done", True):
                        break
                    if not page.get("nextRecordsUrl") or not page["records"]:
                        raise self.http.error(
                            f"query page for {obj} says not done but gives no next page",
                            transient=True,
                        )
                    page = self.http.get_json(page["nextRecordsUrl"])
                frame = records_frame(records)
                if not frame.empty:
                    frame = frame.drop(columns=["attributes.url"], errors="ignore")
                    frame["attributes.type"] = obj
                frames.append(frame)
                if start is not None and self.read_deletes:
                    deleted += self._deleted(obj, start)
        frames = [f for f in frames if not f.empty]
        raw = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        watermark = newest(column(raw, "LastModifiedDate"), floor=since) if not raw.empty else None
        return ReadResult(records=raw, deleted_ids=deleted, watermark=watermark, stats=stats)

    def _deleted(self, obj: str, start: datetime) -> list[str]:
        # Salesforce covers deletes by whole minutes: end at the next full minute so a
        # delete made in the current second is not cut off
        end = (datetime.now(UTC) + timedelta(minutes=1)).replace(second=0, microsecond=0)
        # the endpoint wants a window of at least one minute, within the last 30 days
        start = max(start, end - timedelta(days=29))
        if end - start < timedelta(minutes=1):
            start = end - timedelta(minutes=1)
        body = self.http.get_json(
            f"{self.api}/sobjects/{obj}/deleted/",
            params={"start": iso_z(start, millis=False), "end": iso_z(end, millis=False)},
        )
        return [str(r["id"]) for r in body.get("deletedRecords", []) if r.get("id")]

    # -- mapping --------------------------------------------------------------

    def to_canonical(self, raw: pd.DataFrame) -> pd.DataFrame:
        if raw.empty:
            return conform(pd.DataFrame())
        obj_type = column(raw, "attributes.type").fillna(self.objects[0]).astype(str)
        out = pd.DataFrame(index=raw.index)
        out["connector"] = self.name
        out["source_id"] = raw["Id"]
        out["salesforce_id"] = raw["Id"]
        out["object_type"] = obj_type
        out["kind"] = obj_type.map({"Account": "company"}).fillna("person")
        for obj, mapping in _TO_CANONICAL.items():
            mask = obj_type == obj
            if not mask.any():
                continue
            for canon, fld in mapping.items():
                if fld in raw.columns:
                    if canon not in out.columns:
                        out[canon] = pd.Series(pd.NA, index=raw.index, dtype="object")
                    out.loc[mask, canon] = raw.loc[mask, fld]
        if "company_name" in out.columns:
            # a Lead must name a Company, so web-to-lead forms write "[not provided]"
            unknown = out["company_name"].astype("string").str.strip().str.lower()
            out["company_name"] = out["company_name"].mask(unknown.isin(LEAD_COMPANY_UNKNOWN))
        phone = column(raw, "Phone")
        out["phone"] = phone.where(phone.notna() & (phone != ""), column(raw, "MobilePhone"))
        opted_out = column(raw, "HasOptedOutOfEmail")
        # HasOptedOutOfEmail=false says nothing about consent given: only an opt-out is a fact
        out["email_consent"] = opted_out.map({True: "no"}).astype("object")
        out["created_at"] = column(raw, "CreatedDate")
        out["updated_at"] = column(raw, "LastModifiedDate")
        # a converted Lead follows its ConvertedContactId: it shares the Contact's
        # salesforce id (one golden record, whatever its e-mail says), and counts as of
        # its capture, so the Contact's newer values win
        converted = (obj_type == "Lead") & present(column(raw, "ConvertedContactId"))
        if converted.any():
            out.loc[converted, "salesforce_id"] = raw.loc[converted, "ConvertedContactId"]
            out.loc[converted, "updated_at"] = column(raw, "CreatedDate")[converted]
        return conform(out)

    def to_aspects(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Addresses (Contact ``Mailing*`` / ``Other*``, Account ``Billing*`` / ``Shipping*``,
        Lead's), the record's e-mail, phones and website, and every Contact with an
        ``AccountId`` as a contact person of that Account (its e-mail and phones as the
        contact person's contact details). Values as received."""
        if raw.empty:
            return empty_entries()
        obj = column(raw, "attributes.type").fillna(self.objects[0]).astype(str)
        sid = raw["Id"].astype("string")
        seen = parse_times(column(raw, "LastModifiedDate"))
        parts = []
        for name, blocks in _ADDRESS_BLOCKS.items():
            mask = obj == name
            if not mask.any():
                continue
            for kind, prefix in blocks:
                values: dict[str, Any] = {"type": kind}
                for col, fld in _ADDRESS_PARTS:
                    values[col] = column(raw, f"{prefix}{fld}")
                parts.append(
                    column_entries(
                        self.name, sid, "addresses", values, local_id=kind, seen_at=seen, mask=mask
                    )
                )
        details = [(fld, kind, kind) for fld, kind in _CONTACT_DETAILS]
        parts += detail_entries(self.name, sid, raw, details, seen_at=seen)
        account = column(raw, "AccountId").astype("string")
        staff = (obj == "Contact") & present(account)
        if staff.any():
            person = {
                "first_name": column(raw, "FirstName"),
                "last_name": column(raw, "LastName"),
                "role": column(raw, "Title"),
                "email": column(raw, "Email"),
                "phone": column(raw, "Phone"),
                "person_id": sid,
            }
            parts.append(
                column_entries(
                    self.name,
                    account,
                    "contact_persons",
                    person,
                    local_id=sid,
                    seen_at=seen,
                    mask=staff,
                )
            )
            parts += detail_entries(
                self.name, account, raw, details[:3], seen_at=seen, parent_local_id=sid, mask=staff
            )
        return concat_entries(parts)

    def from_canonical(self, golden: pd.DataFrame) -> list[dict[str, Any]]:
        mapping = _FROM_CANONICAL[self.write_object]
        cols = [c for c in mapping if c in golden.columns]
        renamed = golden[cols].rename(columns=mapping)
        if "HasOptedOutOfEmail" in renamed.columns:
            consent = renamed["HasOptedOutOfEmail"].astype("string").str.lower()
            renamed["HasOptedOutOfEmail"] = consent.map(_OPTED_OUT).astype(object)
        # never send an empty value: in Salesforce a null clears the stored field
        payloads = [
            {k: jsonable(v) for k, v in row.items() if not is_missing(v)}
            for row in renamed.to_dict("records")
        ]
        if not cols:  # a frame without columns gives no records: one empty body per row
            payloads = [{} for _ in range(len(golden))]
        if "addresses" in golden.columns:
            for body, entries in zip(payloads, golden["addresses"].tolist(), strict=True):
                self._addresses(body, entries)
        return payloads

    def _addresses(self, body: dict[str, Any], entries: Any) -> None:
        """The golden record's address entries into the written object's address blocks:
        Contact: the first mailing address (else the first) -> ``Mailing*``, the next other
        place (an ``other`` one first) -> ``Other*``; Account: billing -> ``Billing*`` (else a
        visiting or mailing one), shipping -> ``Shipping*``; Lead: the first mailing one."""
        chosen: list[tuple[str, dict[str, Any]]] = []
        if self.write_object == "Contact":
            first = first_entry(entries, ("mailing",)) or first_entry(entries)
            if first:
                chosen.append(("Mailing", first[1]))
                # the same place under another type (Exact's visiting and postal address
                # of one office) is no second address: Other* never repeats Mailing*
                place = _place(first[1])
                skip = [i for i, e in enumerate(entry_list(entries)) if _place(e) == place]
                nxt = first_entry(entries, ("other",), skip=skip) or first_entry(entries, skip=skip)
                if nxt:
                    chosen.append(("Other", nxt[1]))
        elif self.write_object == "Account":
            billing = first_entry(entries, ("billing",)) or first_entry(
                entries, ("visiting", "mailing")
            )
            shipping = first_entry(entries, ("shipping",))
            chosen += [(p, e[1]) for p, e in (("Billing", billing), ("Shipping", shipping)) if e]
        else:
            first = first_entry(entries, ("mailing",)) or first_entry(entries)
            if first:
                chosen.append(("", first[1]))
        for prefix, entry in chosen:
            # an entry replaces the flat golden address whole: no street of one, city of another
            for _, fld in _ADDRESS_PARTS:
                body.pop(f"{prefix}{fld}", None)
            body.update(_address_block(entry, prefix))

    def carries(self, field: str) -> bool:
        """Whether the written object takes golden ``field`` and it is read back (the
        options' ``fields`` of the object)."""
        target = _FROM_CANONICAL[self.write_object].get(field)
        read = {f.lower() for f in self.fields.get(self.write_object, ())}  # SOQL: any case
        return target is not None and target.lower() in read

    def written_rows(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Payloads custsync sent, as records to read back: of the written object (a
        payload names no type, and records of no type read as the first of ``objects``)."""
        out = raw.copy()
        out["attributes.type"] = self.write_object
        return out

    def cleared_key(self, field: str) -> str | None:
        """The field of the written object that clears a golden field's value (a JSON null
        clears a Salesforce field); None when the object has no such field."""
        return _FROM_CANONICAL[self.write_object].get(field)

    # -- write ----------------------------------------------------------------

    def write(self, ops: list[WriteOp]) -> list[WriteResult]:
        results: list[WriteResult | None] = [None] * len(ops)
        creates = [i for i, op in enumerate(ops) if op.op == "upsert" and not op.target_id]
        updates = [i for i, op in enumerate(ops) if op.op == "upsert" and op.target_id]
        deletes = [i for i, op in enumerate(ops) if op.op == "delete"]
        for i, op in enumerate(ops):
            if op.op not in ("upsert", "delete"):
                results[i] = WriteResult(op.golden_id, op.target_id, False, f"unknown op {op.op!r}")
            elif op.op == "delete" and not op.target_id:
                results[i] = WriteResult(op.golden_id, None, False, "delete needs a target_id")
        deletes = [i for i in deletes if ops[i].target_id]
        obj = self.write_object
        for chunk in batched(creates, self.batch_size):
            records = []
            for i in chunk:
                rec = self._clean(ops[i].payload)
                rec[self.external_id_field] = ops[i].golden_id
                records.append({"attributes": {"type": obj}, **rec})
            self._send(
                ops,
                results,
                chunk,
                "PATCH",
                f"{self.api}/composite/sobjects/{obj}/{self.external_id_field}",
                {"allOrNone": False, "records": records},
            )
        for chunk in batched(updates, self.batch_size):
            records = [
                {"attributes": {"type": obj}, "Id": ops[i].target_id, **self._clean(ops[i].payload)}
                for i in chunk
            ]
            self._send(
                ops,
                results,
                chunk,
                "PATCH",
                f"{self.api}/composite/sobjects",
                {"allOrNone": False, "records": records},
            )
        for chunk in batched(deletes, self.batch_size):
            ids = ",".join(str(ops[i].target_id) for i in chunk)
            self._send(
                ops,
                results,
                chunk,
                "DELETE",
                f"{self.api}/composite/sobjects",
                None,
                params={"ids": ids, "allOrNone": "false"},
                # deleting what is already gone is done: a replayed delete is harmless
                ok_codes=("ENTITY_IS_DELETED",),
            )
        return [r for r in results if r is not None]

    def _clean(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        # the body of an upsert/update must not carry Id or the external-id field itself;
        # a null is a value custsync withdraws (it clears the field), any other gap is left out
        drop = {"Id", "id", "attributes", self.external_id_field}
        return {
            k: v for k, v in payload.items() if k not in drop and (v is None or not is_missing(v))
        }

    def _send(
        self,
        ops: list[WriteOp],
        results: list[WriteResult | None],
        chunk: Any,
        method: str,
        path: str,
        body: Any,
        params: Mapping[str, str] | None = None,
        ok_codes: tuple[str, ...] = (),
    ) -> None:
        try:
            resp = self.http.request(method, path, json=body, params=params)
            per_record = resp.json()
        except QuotaExceededError:
            raise  # fail fast: the rest of today's batches would fail the same way
        except ConnectorError as exc:
            for i in chunk:
                results[i] = WriteResult(
                    ops[i].golden_id, ops[i].target_id, False, str(exc), exc.transient
                )
            return
        except ValueError:
            per_record = None
        if not isinstance(per_record, list) or len(per_record) != len(chunk):
            for i in chunk:
                results[i] = WriteResult(
                    ops[i].golden_id,
                    ops[i].target_id,
                    False,
                    "composite response does not hold one result per record",
                    True,
                )
            return
        for i, res in zip(chunk, per_record, strict=True):
            errors = res.get("errors") or []
            if res.get("success") or (
                errors and all(e.get("statusCode") in ok_codes for e in errors)
            ):
                results[i] = WriteResult(ops[i].golden_id, res.get("id") or ops[i].target_id, True)
            else:
                msg = (
                    "; ".join(
                        f"{e.get('statusCode', '')}: {e.get('message', '')}"
                        + (f" (fields: {', '.join(e['fields'])})" if e.get("fields") else "")
                        for e in errors
                    )
                    or "record failed without an error message"
                )
                transient = any(
                    e.get("statusCode") in ("UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE")
                    for e in errors
                )
                # an update of a record deleted there since it was read
                gone = (
                    method == "PATCH"
                    and bool(ops[i].target_id)
                    and any(e.get("statusCode") == "ENTITY_IS_DELETED" for e in errors)
                )
                results[i] = WriteResult(
                    ops[i].golden_id,
                    ops[i].target_id,
                    False,
                    self.http.scrub(msg),
                    transient,
                    gone,
                )
