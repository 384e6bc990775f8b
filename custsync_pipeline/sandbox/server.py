"""The sandbox: one stdlib HTTP server per emulated system, plus the shared emulator machinery.

``Sandbox(seed=7, people=300, host="127.0.0.1", base_port=0).start()`` generates
the data (:mod:`.generator`), starts one ``ThreadingHTTPServer`` per system on
its own port and exposes ``.urls[system]``; ``.stop()`` (or ``with``) shuts them
down. ``base_port=0`` gives every system an ephemeral port (tests); otherwise
salesforce=base, voucherify=base+1, voyado=+2, exact=+3, icomm=+4, katana=+5, shop=+6
(the web shop / POS order feed, :mod:`.shop`).

Every port also serves the admin API under ``/_sandbox/`` (no auth):

- ``GET truth`` / ``GET defects``: rows of the generator's truth / defects for
  this system (records added by ``changes`` are in the truth too);
- ``GET records``: the current stored records in wire shape;
- ``GET stats``: requests served, faults injected;
- ``POST faults`` ``{"rate_429", "rate_5xx", "slow_rate", "slow_seconds",
  "retry_after", "malformed_pages", "fail_after", "seed", "forbid"}``: fault injection
  (seedable; ``forbid``: ids a Voucherify write answers 403 for);
- ``POST changes`` ``{"edit": N, "delete": M, "add": K, "seed", "object"}``: edits,
  deletes and inserts with fresh modification timestamps and change feeds
  (``object``: another object type, e.g. Salesforce ``Lead``); answers the ids touched;
- ``POST reset``: back to the generated state, no faults.

Fault injection applies to the vendor API paths only, never to ``/_sandbox/``.
"""

from __future__ import annotations

import copy
import json
import os
import random
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd

from .generator import SYSTEMS, SandboxData, generate

# systems without customer records of their own come after the generator's (shop: orders)
SERVED_SYSTEMS: tuple[str, ...] = (*SYSTEMS, "shop")
PORT_OFFSETS: dict[str, int] = {s: i for i, s in enumerate(SERVED_SYSTEMS)}

# env var -> sandbox default (docs/ARCHITECTURE.md)
CREDENTIALS: dict[str, str] = {
    "SALESFORCE_ACCESS_TOKEN": "sandbox-salesforce-token",
    "VOUCHERIFY_APP_ID": "sandbox-app-id",
    "VOUCHERIFY_APP_TOKEN": "sandbox-app-token",
    "VOYADO_API_KEY": "sandbox-voyado-key",
    "EXACT_ACCESS_TOKEN": "sandbox-exact-token",
    "ICOMM_API_KEY": "sandbox-icomm-key",
    "KATANA_API_KEY": "sandbox-katana-key",
    "KATANA_CLIENT_ID": "sandbox-katana-client",
    "KATANA_CLIENT_SECRET": "sandbox-katana-client-secret",
    "SHOP_API_KEY": "sandbox-shop-key",
}


def credential(name: str) -> str:
    """The credential the sandbox accepts: the env var's value if set, else the default."""
    return os.environ.get(name) or CREDENTIALS[name]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Faults:
    """Fault-injection knobs; rates are probabilities per vendor-API request."""

    rate_429: float = 0.0
    rate_5xx: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 0.0
    retry_after: float = 1.0  # seconds sent in Retry-After on a 429
    malformed_pages: int = 0  # the next N list responses are truncated JSON
    fail_after: int = -1  # >= 0: answer the next N requests, then 503 to every one (an outage)
    seed: int = 0
    # record ids (or a create's source_id) whose writes answer 403: records the API key may
    # not touch, beside others it may (Voucherify)
    forbid: list = field(default_factory=list)

    def update(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if key not in self.__dataclass_fields__:
                raise ValueError(f"unknown fault knob: {key}")
            setattr(self, key, type(getattr(self, key))(value))


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any  # http.client.HTTPMessage: case-insensitive .get
    body: bytes

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serialisable, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class BadRequest(Exception):
    """Raised inside handlers to answer with a vendor-shaped error."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class Emulator:
    """State and routing of one emulated system; subclasses implement ``route``."""

    system: str = ""
    #: the field holding a record's id in the wire shape
    id_field: str = "id"
    #: "https" when served over TLS (absolute next-page links use it)
    scheme: str = "http"

    def __init__(self, data: SandboxData, faults: Faults | None = None) -> None:
        self.data = data
        self.lock = threading.RLock()
        self.faults = faults or Faults()
        self._fault_rng = random.Random(self.faults.seed)
        self.stats: dict[str, int] = {}
        self._added = 0
        self.reset()

    # ----------------------------------------------------------------- state
    def reset(self) -> None:
        with self.lock:
            self.store: dict[str, dict] = {}
            for rec in self.data.records(self.system) if self.system in self.data.frames else []:
                self.store[self.key_of(rec)] = rec
            self.deleted: list[tuple[str, datetime]] = []  # (id, when)
            self.changes: list[
                tuple[str, str, datetime]
            ] = []  # (id, Created|Updated|Deleted, when)
            truth = self.data.truth
            self.truth_rows: list[dict] = truth[truth["system"] == self.system].to_dict("records")
            self._sort_cache: dict[str, tuple[tuple, list[dict]]] = {}
            self.stats = {"requests": 0, "429": 0, "5xx": 0, "slow": 0, "malformed": 0}
            self._fault_rng = random.Random(self.faults.seed)

    def sorted_rows(
        self, name: str, store: dict[str, dict], key, reverse: bool = False
    ) -> list[dict]:
        """``store``'s records sorted by ``key``, cached until the next write (list pages
        of a 100k-record store would otherwise sort it on every request). Hold the lock."""
        version = (len(self.changes), len(store), id(store))
        hit = self._sort_cache.get(name)
        if hit is not None and hit[0] == version:
            return hit[1]
        rows = sorted(store.values(), key=key, reverse=reverse)
        self._sort_cache[name] = (version, rows)
        return rows

    def key_of(self, rec: dict) -> str:
        return str(rec[self.id_field])

    def stores(self) -> dict[str, dict[str, dict]]:
        """Object type -> its store; systems with several objects override."""
        return {"": self.store}

    def records(self, object_type: str | None = None) -> list[dict]:
        """Stored records (copies) of the main object, or of ``object_type`` (e.g. ``Lead``)."""
        with self.lock:
            stores = self.stores()
            key = object_type or next(iter(stores))
            if key not in stores:
                raise KeyError(
                    f"{self.system} has no object type {object_type!r}; known: {sorted(stores)}"
                )
            return copy.deepcopy(list(stores[key].values()))

    # ----------------------------------------------------------------- hooks
    def authorized(self, req: Request) -> bool:
        return True

    def unauthorized(self) -> Response:
        return Response(401, {"message": "Unauthorized"})

    def error(self, status: int, code: str, message: str) -> Response:
        """A vendor-shaped error body (used by fault injection)."""
        return Response(status, {"message": message, "errorCode": code})

    def extra_headers(self) -> dict[str, str]:
        return {}

    def route(self, req: Request) -> Response:
        raise NotImplementedError

    # canonical person dict -> new wire record / edit of an existing one
    def new_record(self, person: dict, now: datetime) -> dict:
        raise NotImplementedError

    def edit_record(self, rec: dict, rng: random.Random, now: datetime) -> None:
        raise NotImplementedError

    def on_delete(self, key: str, rec: dict, now: datetime) -> None:
        """Record a deletion in this system's feeds."""
        self.deleted.append((key, now))
        self.changes.append((key, "Deleted", now))

    # ----------------------------------------------------------------- faults
    def inject(self, req: Request) -> Response | None:
        f = self.faults
        with self.lock:
            self.stats["requests"] += 1
            r1, r2, r3 = (self._fault_rng.random() for _ in range(3))
            malformed = f.malformed_pages > 0 and req.method == "GET"
            if malformed:
                f.malformed_pages -= 1
                self.stats["malformed"] += 1
            outage = f.fail_after == 0
            if f.fail_after > 0:
                f.fail_after -= 1
        if outage:
            self.stats["5xx"] += 1
            return self.error(503, "SERVER_UNAVAILABLE", "Service temporarily unavailable")
        if r3 < f.slow_rate and f.slow_seconds > 0:
            self.stats["slow"] += 1
            time.sleep(f.slow_seconds)
        if r1 < f.rate_429:
            self.stats["429"] += 1
            resp = self.error(429, "TOO_MANY_REQUESTS", "Too many requests, retry later")
            resp.headers["Retry-After"] = f"{f.retry_after:g}"
            return resp
        if r2 < f.rate_5xx:
            self.stats["5xx"] += 1
            return self.error(503, "SERVER_UNAVAILABLE", "Service temporarily unavailable")
        if malformed:
            return Response(200, b'{"records": [{"Id": "trunc', content_type="application/json")
        return None

    # ----------------------------------------------------------------- admin
    def set_faults(self, values: dict[str, Any]) -> None:
        with self.lock:
            self.faults.update(values)
            if "seed" in values:
                self._fault_rng = random.Random(self.faults.seed)

    # the changes knob on an object type other than the main one (Salesforce Account/Lead,
    # Exact Contacts): systems with several objects override these three
    def new_record_of(self, object_type: str, person: dict, now: datetime) -> dict:
        raise ValueError(f"{self.system}: the changes knob cannot add {object_type!r} records")

    def edit_record_of(
        self, object_type: str, rec: dict, rng: random.Random, now: datetime
    ) -> None:
        raise ValueError(f"{self.system}: the changes knob cannot edit {object_type!r} records")

    def on_delete_of(self, object_type: str, key: str, rec: dict, now: datetime) -> None:
        raise ValueError(f"{self.system}: the changes knob cannot delete {object_type!r} records")

    def truth_object_type(self, object_type: str | None) -> str:
        """The truth's ``object_type`` for records of store ``object_type`` (None = main)."""
        if object_type is None:
            return self.truth_rows[0]["object_type"] if self.truth_rows else ""
        return object_type

    def apply_changes(
        self,
        edit: int = 0,
        delete: int = 0,
        add: int = 0,
        seed: int | None = None,
        object_type: str | None = None,
    ) -> dict:
        """Edit ``edit``, delete ``delete`` and add ``add`` records of ``object_type``
        (None = the main object), with fresh change times and feed entries."""
        rng = random.Random(seed if seed is not None else self.data.seed * 1000 + len(self.changes))
        now = utcnow()
        out: dict[str, list[str]] = {"edited": [], "deleted": [], "added": []}
        stores = self.stores()
        main = next(iter(stores))
        if object_type is not None and object_type not in stores:
            raise ValueError(
                f"{self.system} has no object type {object_type!r}; known: {sorted(stores)}"
            )
        obj = None if object_type in (None, main) else object_type
        store = stores[obj or main]
        with self.lock:
            keys = sorted(store)
            chosen = rng.sample(keys, min(len(keys), edit + delete))
            for key in chosen[:edit]:
                if obj is None:
                    self.edit_record(store[key], rng, now)
                else:
                    self.edit_record_of(obj, store[key], rng, now)
                self.changes.append((key, "Updated", now))
                out["edited"].append(key)
            for key in chosen[edit:]:
                rec = store.pop(key)
                if obj is None:
                    self.on_delete(key, rec, now)
                else:
                    self.on_delete_of(obj, key, rec, now)
                out["deleted"].append(key)
            for _ in range(add):
                self._added += 1
                n = self._added
                person = _new_person(rng, n, self.system)
                rec = (
                    self.new_record(person, now)
                    if obj is None
                    else self.new_record_of(obj, person, now)
                )
                key = self.key_of(rec)
                store[key] = rec
                self.changes.append((key, "Created", now))
                self.truth_rows.append(
                    {
                        "system": self.system,
                        "object_type": self.truth_object_type(obj),
                        "source_id": key,
                        "person_id": person["person_id"],
                    }
                )
                out["added"].append(key)
        return out

    def admin(self, req: Request, action: str) -> Response:
        if req.method == "GET" and action == "truth":
            with self.lock:
                return Response(200, list(self.truth_rows))
        if req.method == "GET" and action == "defects":
            d = self.data.defects
            return Response(200, d[d["system"] == self.system].to_dict("records"))
        if req.method == "GET" and action == "records":
            try:
                return Response(200, self.records(req.arg("object")))
            except KeyError as exc:
                return Response(404, {"error": str(exc)})
        if req.method == "GET" and action == "stats":
            with self.lock:
                return Response(200, {**self.stats, "faults": asdict(self.faults)})
        if req.method == "POST" and action == "faults":
            try:
                self.set_faults(req.json() or {})
            except (ValueError, TypeError) as exc:
                return Response(400, {"error": str(exc)})
            return Response(200, asdict(self.faults))
        if req.method == "POST" and action == "changes":
            body = req.json() or {}
            unknown = set(body) - {"edit", "delete", "add", "seed", "object"}
            if unknown:
                return Response(400, {"error": f"unknown change keys: {sorted(unknown)}"})
            obj = body.pop("object", None)
            try:
                changed = self.apply_changes(
                    **{k: int(v) for k, v in body.items()}, object_type=obj
                )
            except ValueError as exc:
                return Response(400, {"error": str(exc)})
            return Response(200, changed)
        if req.method == "POST" and action == "reset":
            self.faults.update(asdict(Faults()))
            self.reset()
            return Response(200, {"reset": True, "records": len(self.store)})
        return Response(404, {"error": f"no admin endpoint {req.method} {action}"})


_NEW_FIRST = ("Alva", "Vera", "Hugo", "Liam", "Noah", "Saga", "Elsa", "Otto", "Ebba", "Leo")
_NEW_LAST = ("Norberg", "Falk", "Lind", "Sund", "Borg", "Hed", "Vik", "Ås", "Krantz", "Moberg")


def _new_person(rng: random.Random, n: int, system: str) -> dict:
    """A fresh person for ``changes.add``: clean values, unique e-mail and phone."""
    first = rng.choice(_NEW_FIRST)
    last = rng.choice(_NEW_LAST)
    tag = f"{system[:2]}{n}"
    return {
        "person_id": f"N{system[:2].upper()}{n:06d}",
        "first_name": first,
        "last_name": last,
        "email": f"{first.lower()}.{tag}@newmail.com",
        "phone": f"+4673{rng.randrange(10**6, 10**7)}",
        "country": "SE",
        "language": "sv",
        "city": "Stockholm",
        "postal_code": "111 22",
        "street": "Nygatan 1",
        "store_code": "SE01",
    }


def _json_bytes(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")


def _make_handler(emulator: Emulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive for client sessions
        server_version = f"custsync-sandbox-{emulator.system}"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # silent: URLs carry e-mails in queries

        def _dispatch(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            req = Request(
                self.command,
                parts.path,
                parse_qs(parts.query, keep_blank_values=True),
                self.headers,
                body,
            )
            try:
                if parts.path.startswith("/_sandbox/"):
                    resp = emulator.admin(req, parts.path[len("/_sandbox/") :].strip("/"))
                else:
                    resp = emulator.inject(req)
                    if resp is None:
                        resp = (
                            emulator.unauthorized()
                            if not emulator.authorized(req)
                            else emulator.route(req)
                        )
                    resp.headers = {**emulator.extra_headers(), **resp.headers}
            except BadRequest as exc:
                resp = exc.response
                resp.headers = {**emulator.extra_headers(), **resp.headers}
            except json.JSONDecodeError:
                resp = emulator.error(400, "JSON_PARSER_ERROR", "Request body is not valid JSON")
            except Exception as exc:  # an emulator bug must answer, not hang the client
                resp = Response(
                    500,
                    {
                        "message": f"sandbox error: {type(exc).__name__}",
                        "errorCode": "UNKNOWN_EXCEPTION",
                    },
                )
            self._send(resp)

        def _send(self, resp: Response) -> None:
            payload = (
                b""
                if resp.body is None
                else resp.body
                if isinstance(resp.body, bytes)
                else _json_bytes(resp.body)
            )
            self.send_response(resp.status)
            if payload or resp.status not in (204, 304):
                self.send_header(
                    "Content-Type",
                    resp.content_type + ("; charset=utf-8" if "json" in resp.content_type else ""),
                )
            self.send_header("Content-Length", str(len(payload)))
            for key, value in resp.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if payload and self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    return Handler


def _emulator_classes() -> dict[str, type[Emulator]]:
    from . import salesforce, voucherify

    classes: dict[str, type[Emulator]] = {
        "salesforce": salesforce.SalesforceEmulator,
        "voucherify": voucherify.VoucherifyEmulator,
    }
    for system, mod_name, cls_name in (
        ("voyado", "voyado", "VoyadoEmulator"),
        ("exact", "exact", "ExactEmulator"),
        ("icomm", "icomm", "IcommEmulator"),
        ("katana", "katana", "KatanaEmulator"),
        ("shop", "shop", "ShopEmulator"),
    ):
        try:
            mod = __import__(f"{__package__}.{mod_name}", fromlist=[cls_name])
        except ModuleNotFoundError:
            continue
        classes[system] = getattr(mod, cls_name)
    return classes


class _Server(ThreadingHTTPServer):
    """Threaded server; with a TLS context the handshake runs in the request's thread."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, tls: ssl.SSLContext | None) -> None:
        self.tls = tls
        super().__init__(address, handler)

    def get_request(self):  # type: ignore[override]
        sock, addr = super().get_request()
        # headers and body go out as two writes: without TCP_NODELAY, Nagle holds the body
        # until the client's delayed ACK (~40 ms a request on keep-alive connections)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        pass  # a client hanging up mid-request is not worth a traceback


_CHANGE_KEYS = frozenset({"edit", "delete", "add", "seed", "object_type"})


def _changes_per_system(changes: dict[str, Any], systems: Iterable[str]) -> dict[str, dict]:
    """``changes`` for every system, or already per system; unknown keys are an error."""
    systems = list(systems)
    if set(changes) <= _CHANGE_KEYS:
        per = {s: dict(changes) for s in systems} if changes else {}
    else:
        unknown = sorted(set(changes) - set(SERVED_SYSTEMS))
        if unknown:
            raise ValueError(
                f"changes: unknown system(s) or key(s) {unknown}; keys: {sorted(_CHANGE_KEYS)}"
            )
        per = {s: dict(v) for s, v in changes.items() if s in systems}
    for system, spec in per.items():
        bad = sorted(set(spec) - _CHANGE_KEYS)
        if bad:
            raise ValueError(
                f"changes.{system}: unknown key(s) {bad}; keys: {sorted(_CHANGE_KEYS)}"
            )
    return per


class Sandbox:
    """Every emulated API on localhost; ``with Sandbox(...) as sb: sb.urls["salesforce"]``."""

    def __init__(
        self,
        seed: int = 7,
        people: int = 300,
        host: str = "127.0.0.1",
        base_port: int = 0,
        systems: Iterable[str] | None = None,
        faults: dict[str, Any] | None = None,
        options: dict[str, dict[str, Any]] | None = None,
        data: SandboxData | None = None,
        tls: bool | Iterable[str] = False,
        cert_dir: str | os.PathLike | None = None,
        changes: dict[str, Any] | None = None,
    ) -> None:
        """``faults``: fault knobs for every system from the start (see :class:`Faults`);
        ``changes``: ``{"edit": N, "delete": M, "add": K}`` applied to every system once
        its emulator is built (before the first request), or per system
        ``{"voyado": {"edit": 3}, "salesforce": {"add": 2, "object_type": "Lead"}}``.
        ``reset()`` returns to the generated state, without these changes."""
        self.seed = seed
        self.people = people
        self.host = host
        self.base_port = base_port
        available = _emulator_classes()
        wanted = (
            tuple(systems)
            if systems is not None
            else tuple(s for s in SERVED_SYSTEMS if s in available)
        )
        missing = [s for s in wanted if s not in available]
        if missing:
            raise ValueError(f"no emulator for: {', '.join(missing)}")
        self.systems = wanted
        self._classes = available
        self._faults = dict(faults or {})
        self._options = options or {}
        self._changes = _changes_per_system(changes or {}, self.systems)
        self.start_changes: dict[str, dict] = {}  # system -> ids touched at start
        self.data: SandboxData | None = data
        self.emulators: dict[str, Emulator] = {}
        self.urls: dict[str, str] = {}
        self._servers: dict[str, ThreadingHTTPServer] = {}
        self._threads: list[threading.Thread] = []
        # HTTPS for clients that insist on it (simple_salesforce builds https:// URLs)
        self.tls_systems = set(self.systems if tls is True else () if tls is False else tls)
        self._cert_dir = cert_dir
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.ca_file: str | None = None  # the self-signed certificate clients should trust

    def start(self) -> Sandbox:
        if self._servers:
            return self
        if self.data is None:
            self.data = generate(self.seed, self.people)
        ctx = None
        if self.tls_systems:
            from .tls import self_signed, server_context

            if self._cert_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="custsync-sandbox-tls-")
            cert, key = self_signed(Path(self._cert_dir or self._tmp.name))
            ctx = server_context(cert, key)
            self.ca_file = str(cert)
        try:
            for system in self.systems:
                faults = Faults()
                faults.update(
                    {
                        **self._faults,
                        "seed": self._faults.get("seed", self.seed) + PORT_OFFSETS[system],
                    }
                )
                emu = self._classes[system](self.data, faults, **self._options.get(system, {}))
                if self._changes.get(system):
                    spec = {"seed": self.seed + PORT_OFFSETS[system], **self._changes[system]}
                    self.start_changes[system] = emu.apply_changes(**spec)
                port = 0 if self.base_port == 0 else self.base_port + PORT_OFFSETS[system]
                tls_ctx = ctx if system in self.tls_systems else None
                server = _Server((self.host, port), _make_handler(emu), tls_ctx)
                thread = threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": 0.05},
                    name=f"sandbox-{system}",
                    daemon=True,
                )
                thread.start()
                self.emulators[system] = emu
                self._servers[system] = server
                self._threads.append(thread)
                scheme = "https" if tls_ctx else "http"
                emu.scheme = scheme
                self.urls[system] = f"{scheme}://{self.host}:{server.server_address[1]}"
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()
        self.urls.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def records(self, system: str, object_type: str | None = None) -> list[dict]:
        """The system's current stored records (wire shape, copies); ``object_type``
        picks another object (Salesforce ``Account`` / ``Lead``, Exact ``Contacts``)."""
        return self.emulators[system].records(object_type)

    def truth(self, system: str | None = None) -> pd.DataFrame:
        """Current truth (generated + added records) for one system or all."""
        rows = [r for s, e in self.emulators.items() if system in (None, s) for r in e.truth_rows]
        return pd.DataFrame(rows, columns=["system", "object_type", "source_id", "person_id"])

    def set_faults(self, system: str | None = None, **knobs: Any) -> None:
        for s, emu in self.emulators.items():
            if system in (None, s):
                emu.set_faults(knobs)

    def changes(
        self,
        system: str,
        edit: int = 0,
        delete: int = 0,
        add: int = 0,
        seed: int | None = None,
        object_type: str | None = None,
    ) -> dict:
        """Edit/delete/add records of ``system`` (``object_type``: e.g. Salesforce ``Lead``,
        Exact ``Contacts``; None = the main object); answers the ids touched."""
        return self.emulators[system].apply_changes(
            edit=edit, delete=delete, add=add, seed=seed, object_type=object_type
        )

    def reset(self) -> None:
        for emu in self.emulators.values():
            emu.faults.update(asdict(Faults()))
            emu.reset()
