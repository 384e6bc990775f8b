"""The generic REST connector: a system added in YAML only, without Python.

Everything comes from the connector's ``options`` (validated by the pydantic
models below, so a typo names the key): the list endpoint and where the
records sit in its answer; paging by page number, offset, cursor, next link
(body path or ``Link`` header) or OData (``d.__next`` / ``@odata.nextLink``);
auth by bearer token, API-key header, basic or OAuth2 client credentials
(secrets from the env vars named under ``credentials``); the updated-since
parameter; a field mapping vendor path -> canonical column used both ways;
the write endpoint, method and batch size; deletes; multi-valued aspects
(``aspects``: a nested list such as ``contact_persons``, or name -> value columns such as
``attributes.*``, mapped to aspect entries by ``to_aspects``). ``docs/connectors.md``
lists every key.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from requests.auth import HTTPBasicAuth

from custsync_pipeline.config import ConnectorConfig
from custsync_pipeline.connectors.base import ReadResult, WriteOp, WriteResult
from custsync_pipeline.connectors.common import (
    FieldMapping,
    HttpConnectorBase,
    batched,
    column,
    get_path,
    iso_z,
    newest,
    overlap_start,
    records_frame,
    set_path,
)
from custsync_pipeline.connectors.entries import (
    AspectMapping,
    parse_aspect_options,
    times_or_nat,
)
from custsync_pipeline.connectors.http import (
    ConnectorError,
    HttpClient,
    OAuth2ClientCredentials,
    QuotaExceededError,
    require_env,
)
from custsync_pipeline.domain.aspects import empty_entries


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PagingOptions(_Opts):
    type: Literal["none", "page", "offset", "cursor", "next_link", "odata"] = "none"
    page_size: int = Field(default=100, ge=1)
    size_param: str | None = Field(default="limit", description="query parameter of the page size")
    page_param: str = "page"
    first_page: int = 1
    offset_param: str = "offset"
    cursor_param: str = "cursor"
    cursor_path: str = Field(default="next_cursor", description="response path of the next cursor")
    next_path: str | None = Field(
        default=None, description="response path of the next page URL; unset = the Link header"
    )
    has_more_path: str | None = Field(default=None, description="response path of a has-more flag")
    stop_on_short_page: bool = False


class AuthOptions(_Opts):
    type: Literal["none", "bearer", "api_key", "basic", "oauth2_client_credentials"] = "none"
    header: str = Field(default="X-API-Key", description="header of an api_key")
    prefix: str = Field(default="", description="text before the api key, e.g. 'Token '")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="api_key with several headers: header name -> credential key",
    )
    token_url: str | None = None
    scope: str | None = None


class IncrementalOptions(_Opts):
    param: str | None = Field(default=None, description="query parameter of the updated-since time")
    format: Literal["iso", "iso_z", "epoch", "epoch_ms", "odata_filter"] = "iso_z"
    filter_field: str = Field(default="Modified", description="field compared in an OData $filter")


class WriteOptions(_Opts):
    path: str
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    batch_size: int = Field(default=100, ge=1)
    body: Literal["list", "object", "single"] = "list"
    body_key: str = "records"
    external_id_field: str | None = Field(
        default=None, description="payload field that receives the golden id on a create"
    )
    target_id_field: str = Field(default="id", description="payload field of the record's id")
    update_path: str | None = Field(default=None, description="e.g. /customers/{id}")
    update_method: Literal["POST", "PUT", "PATCH"] = "PATCH"
    results_path: str | None = Field(
        default=None, description="response path of per-record results"
    )
    result_id_field: str = "id"
    result_ok_field: str | None = None
    result_error_field: str = "error"


class DeleteOptions(_Opts):
    path: str | None = Field(default=None, description="e.g. /customers/{id}")
    method: Literal["DELETE", "POST"] = "DELETE"
    feed_path: str | None = Field(default=None, description="endpoint listing deleted ids")
    feed_since_param: str = "since"
    feed_ids_path: str = Field(default="", description="response path of the ids list")


class RestOptions(_Opts):
    path: str = Field(description="list endpoint, e.g. /api/v1/customers")
    records_path: str = Field(
        default="", description="response path of the records ('' = top level)"
    )
    id_field: str | list[str] = "id"
    updated_field: str | None = None
    created_field: str | None = None
    mapping: dict[str, str] = Field(default_factory=dict)
    static: dict[str, Any] = Field(default_factory=dict)
    read_only: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict, description="constant query parameters")
    headers: dict[str, str] = Field(default_factory=dict, description="constant non-secret headers")
    paging: PagingOptions = PagingOptions()
    auth: AuthOptions = AuthOptions()
    incremental: IncrementalOptions = IncrementalOptions()
    write: WriteOptions | None = None
    delete: DeleteOptions = DeleteOptions()
    overlap_minutes: float = 10.0
    http: dict[str, Any] = Field(default_factory=dict)
    max_pages: int | None = Field(default=None, ge=1, description="safety stop")
    sandbox_system: str | None = Field(
        default=None, description="the emulator this entry points at (demo and tests only)"
    )
    aspects: list[dict[str, Any]] = Field(
        default_factory=list,
        description="multi-valued aspects: nested lists or columns -> entries (see entries.py)",
    )


def _fmt_since(ts: datetime, fmt: str) -> str:
    if fmt == "iso":
        return ts.isoformat()
    if fmt == "epoch":
        return str(int(ts.timestamp()))
    if fmt == "epoch_ms":
        return str(int(ts.timestamp() * 1000))
    return iso_z(ts)


class RestConnector(HttpConnectorBase):
    """Any REST API described in YAML (``type: rest``); see ``docs/connectors.md``."""

    def __init__(self, name: str, cfg: ConnectorConfig, env: Mapping[str, str]) -> None:
        super().__init__(name, cfg, env)
        try:
            self.opts = RestOptions.model_validate(self.options)
        except ValidationError as exc:
            problems = "; ".join(
                f"options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ConnectorError(name, f"invalid rest connector options: {problems}") from None
        try:
            self.fields = FieldMapping(
                name,
                self.opts.mapping,
                id_fields=[self.opts.id_field]
                if isinstance(self.opts.id_field, str)
                else self.opts.id_field,
                updated_field=self.opts.updated_field,
                created_field=self.opts.created_field,
                static=self.opts.static,
                read_only=self.opts.read_only,
            )
            self.aspect_map = AspectMapping(name, parse_aspect_options(self.opts.aspects))
        except ValueError as exc:
            raise ConnectorError(name, str(exc)) from None
        headers = dict(self.opts.headers)
        secrets: list[str] = []
        auth = None
        kind = self.opts.auth.type
        if kind == "bearer":
            token = require_env(name, cfg.credentials, "token", env)
            headers["Authorization"] = f"Bearer {token}"
            secrets.append(token)
        elif kind == "api_key":
            pairs = self.opts.auth.headers or {self.opts.auth.header: "api_key"}
            for header, cred_key in pairs.items():
                key = require_env(name, cfg.credentials, cred_key, env)
                headers[header] = f"{self.opts.auth.prefix}{key}"
                secrets.append(key)
        elif kind == "basic":
            user = require_env(name, cfg.credentials, "username", env)
            password = require_env(name, cfg.credentials, "password", env)
            auth = HTTPBasicAuth(user, password)
            secrets += [password]
        elif kind == "oauth2_client_credentials":
            if not self.opts.auth.token_url:
                raise ConnectorError(name, "options.auth.token_url is required for oauth2")
            client_id = require_env(name, cfg.credentials, "client_id", env)
            client_secret = require_env(name, cfg.credentials, "client_secret", env)
            secrets += [client_id, client_secret]
            token_url = self.opts.auth.token_url
            if not token_url.startswith(("http://", "https://")):
                token_url = cfg.base_url.rstrip("/") + "/" + token_url.lstrip("/")
            auth = OAuth2ClientCredentials(
                name,
                token_url,
                client_id,
                client_secret,
                scope=self.opts.auth.scope,
                on_token=lambda t: self.http.add_secret(t),
            )
        self.overlap = pd.Timedelta(minutes=self.opts.overlap_minutes).to_pytimedelta()
        self.http = HttpClient(
            name,
            cfg.base_url,
            headers=headers,
            secrets=secrets,
            settings=self._settings(),
            auth=auth,
        )

    # -- read -----------------------------------------------------------------

    def _since_params(self, start: datetime | None) -> dict[str, Any]:
        inc = self.opts.incremental
        if start is None:
            return {}
        if inc.format == "odata_filter":
            stamp = start.strftime("%Y-%m-%dT%H:%M:%S")
            return {"$filter": f"{inc.filter_field} ge datetime'{stamp}'"}
        if not inc.param:
            return {}
        return {inc.param: _fmt_since(start, inc.format)}

    def _items(self, body: Any) -> list[dict[str, Any]]:
        if self.opts.paging.type == "odata" and not self.opts.records_path:
            items = get_path(body, "d.results")
            if items is None:
                items = body.get("value") if isinstance(body, dict) else None
        else:
            items = get_path(body, self.opts.records_path) if self.opts.records_path else body
        if not isinstance(items, list):
            raise self.http.error(
                f"no records list at {self.opts.records_path or '(top level)'} of the response"
            )
        return items

    def read(self, since: datetime | None = None) -> ReadResult:
        paging = self.opts.paging
        start = overlap_start(since, self.overlap)
        base = {**self.opts.params, **self._since_params(start)}
        size = {paging.size_param: paging.page_size} if paging.size_param else {}
        records: list[dict[str, Any]] = []
        url: str | None = self.opts.path
        page, offset, cursor = paging.first_page, 0, None
        with self.measure() as stats:
            while url is not None:
                params: dict[str, Any] | None = {**base, **size}
                if paging.type == "page":
                    params[paging.page_param] = page
                elif paging.type == "offset":
                    params[paging.offset_param] = offset
                elif paging.type == "cursor" and cursor:
                    params[paging.cursor_param] = cursor
                elif paging.type in ("next_link", "odata") and url != self.opts.path:
                    params = None  # the next link carries every parameter
                elif paging.type == "none":
                    params = base or None
                resp = self.http.request("GET", url, params=params)
                try:
                    body = resp.json()
                except ValueError:
                    body = self.http.get_json(url, params=params)  # refetch a malformed page
                stats.pages += 1
                items = self._items(body)
                records.extend(items)
                if self.opts.max_pages and stats.pages >= self.opts.max_pages:
                    break
                more = bool(items)
                if paging.has_more_path:
                    more = bool(get_path(body, paging.has_more_path))
                    if more and not items:
                        raise self.http.error(
                            f"empty page {stats.pages} that claims more", transient=True
                        )
                if paging.stop_on_short_page and len(items) < paging.page_size:
                    more = False
                if paging.type == "none":
                    url = None
                elif paging.type == "page":
                    page += 1
                    url = url if more else None
                elif paging.type == "offset":
                    offset += len(items)
                    url = url if more else None
                elif paging.type == "cursor":
                    cursor = get_path(body, paging.cursor_path)
                    url = url if (more and cursor) else None
                elif paging.type == "next_link":
                    nxt = (
                        get_path(body, paging.next_path)
                        if paging.next_path
                        else resp.links.get("next", {}).get("url")
                    )
                    url = nxt if (items and nxt) else None
                else:  # odata
                    nxt = get_path(body, "d.__next") or (
                        body.get("@odata.nextLink") if isinstance(body, dict) else None
                    )
                    url = nxt or None
            deleted = self._deleted(start) if start is not None else []
        raw = records_frame(records)
        watermark = (
            newest(column(raw, self.opts.updated_field), floor=since)
            if self.opts.updated_field and len(raw)
            else None
        )
        return ReadResult(records=raw, deleted_ids=deleted, watermark=watermark, stats=stats)

    def _deleted(self, start: datetime) -> list[str]:
        feed = self.opts.delete
        if not feed.feed_path:
            return []
        fmt = self.opts.incremental.format
        body = self.http.get_json(
            feed.feed_path,
            params={
                feed.feed_since_param: _fmt_since(start, "iso_z" if fmt == "odata_filter" else fmt)
            },
        )
        ids = get_path(body, feed.feed_ids_path) if feed.feed_ids_path else body
        if not isinstance(ids, list):
            raise self.http.error("deletes feed answered without an ids list")
        return [str(i.get("id") if isinstance(i, dict) else i) for i in ids]

    # -- mapping --------------------------------------------------------------

    def to_canonical(self, raw: pd.DataFrame) -> pd.DataFrame:
        return self.fields.to_canonical(raw)

    def to_aspects(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Entries of ``options.aspects``: nested lists, name -> value columns, flat columns
        (the lane adds what the canonical row implies for the aspects configured)."""
        if raw.empty:
            return empty_entries()
        return self.aspect_map.to_aspects(
            raw, self.fields.source_ids(raw), times_or_nat(raw, self.opts.updated_field)
        )

    def from_canonical(self, golden: pd.DataFrame) -> list[dict[str, Any]]:
        return self.fields.from_canonical(golden)

    # -- write ----------------------------------------------------------------

    def write(self, ops: list[WriteOp]) -> list[WriteResult]:
        results: list[WriteResult | None] = [None] * len(ops)
        w = self.opts.write
        for i, op in enumerate(ops):
            if op.op == "delete":
                results[i] = self._delete(op)
            elif op.op != "upsert":
                results[i] = WriteResult(op.golden_id, op.target_id, False, f"unknown op {op.op!r}")
            elif w is None:
                results[i] = WriteResult(
                    op.golden_id, op.target_id, False, "options.write is not configured"
                )
        upserts = [i for i, op in enumerate(ops) if results[i] is None]
        if w is not None and w.update_path:
            for i in [i for i in upserts if ops[i].target_id]:
                results[i] = self._update_one(ops[i])
            upserts = [i for i in upserts if results[i] is None]
        if w is None:
            return [r for r in results if r is not None]
        for chunk in batched(upserts, w.batch_size if w.body != "single" else 1):
            bodies = [self._record(ops[i]) for i in chunk]
            if w.body == "list":
                body: Any = bodies
            elif w.body == "object":
                body = {w.body_key: bodies}
            else:
                body = bodies[0]
            try:
                resp = self.http.request(w.method, w.path, json=body)
            except QuotaExceededError:
                raise
            except ConnectorError as exc:
                for i in chunk:
                    results[i] = WriteResult(
                        ops[i].golden_id, ops[i].target_id, False, str(exc), exc.transient
                    )
                continue
            self._results(ops, results, chunk, resp)
        return [r for r in results if r is not None]

    def _record(self, op: WriteOp) -> dict[str, Any]:
        w = self.opts.write
        assert w is not None
        rec = copy.deepcopy(dict(op.payload))  # set_path below must not touch the caller's op
        if op.target_id:
            rec[w.target_id_field] = op.target_id
        elif w.external_id_field:
            set_path(rec, w.external_id_field, op.golden_id)
        return rec

    def _results(
        self, ops: list[WriteOp], results: list[WriteResult | None], chunk: Any, resp: Any
    ) -> None:
        w = self.opts.write
        assert w is not None
        per: Any = None
        if w.results_path is not None or w.body == "single":
            try:
                body = resp.json()
            except ValueError:
                body = None
            # results_path "" = the answer itself is the list of per-record results
            per = (
                [body]
                if w.body == "single" and not w.results_path
                else get_path(body, w.results_path)
                if w.results_path
                else body
            )
        if not isinstance(per, list) or len(per) != len(chunk):
            for i in chunk:
                results[i] = WriteResult(ops[i].golden_id, ops[i].target_id, True)
            return
        for i, res in zip(chunk, per, strict=True):
            res = res if isinstance(res, dict) else {}
            err = res.get(w.result_error_field)
            ok = bool(res.get(w.result_ok_field)) if w.result_ok_field else not err
            tid = res.get(w.result_id_field) or ops[i].target_id
            results[i] = WriteResult(
                ops[i].golden_id,
                str(tid) if tid is not None else None,
                ok,
                None if ok else self.http.scrub(str(err or "record rejected")),
            )

    def _update_one(self, op: WriteOp) -> WriteResult:
        w = self.opts.write
        assert w is not None and w.update_path
        try:
            self.http.request(
                w.update_method, w.update_path.format(id=op.target_id), json=dict(op.payload)
            )
        except QuotaExceededError:
            raise
        except ConnectorError as exc:
            return WriteResult(op.golden_id, op.target_id, False, str(exc), exc.transient)
        return WriteResult(op.golden_id, op.target_id, True)

    def _delete(self, op: WriteOp) -> WriteResult:
        d = self.opts.delete
        if not d.path or not op.target_id:
            return WriteResult(
                op.golden_id,
                op.target_id,
                False,
                "delete needs options.delete.path and a target_id",
            )
        try:
            self.http.request(d.method, d.path.format(id=op.target_id), allow=(404,))
        except QuotaExceededError:
            raise
        except ConnectorError as exc:
            return WriteResult(op.golden_id, op.target_id, False, str(exc), exc.transient)
        return WriteResult(op.golden_id, op.target_id, True)
