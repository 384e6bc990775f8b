"""The one HTTP layer every connector uses.

Here live: the connector error types; credentials read from env vars (a
missing variable is named, its value never shown); a ``requests`` session per
connector with connect/read timeouts; ``urllib3`` ``Retry`` with exponential
backoff and jitter on 429, 5xx and timeouts that honours ``Retry-After`` and
counts its retries; a client-side token bucket at the API's documented rate;
fail-fast quota errors; and scrubbing so no secret reaches a log line, an
exception or Dagster metadata.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import takewhile
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

RETRY_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})
# query-string keys whose values are masked wherever a URL is shown
_SENSITIVE_KEYS = re.compile(
    r"(token|key|secret|password|passwd|signature|sig|auth|code|session|credential)", re.I
)


class ConnectorError(RuntimeError):
    """A connector could not do what was asked; the message is safe to show (no secrets).

    ``transient`` says whether a later attempt may succeed (429/5xx/timeouts
    after the retries ran out, connection refused); ``status`` is the HTTP
    status when there was a response.
    """

    def __init__(
        self,
        connector: str,
        message: str,
        *,
        status: int | None = None,
        transient: bool = False,
    ) -> None:
        self.connector = connector
        self.status = status
        self.transient = transient
        super().__init__(f"[{connector}] {message}")


# statuses a target answers a credential it does not accept with: no verdict on the payload
AUTH_STATUSES = (401, 403)
# how a connector's error line words a refused request ("[voyado] POST <url> -> HTTP 401: …",
# ``HttpClient.request``; "[salesforce] token endpoint <url> -> HTTP 401: …", the OAuth2
# token fetch): the status right after the arrow, then the (scrubbed) reason
AUTH_ERROR = re.compile(r"-> HTTP (" + "|".join(map(str, AUTH_STATUSES)) + r")(?::|$)")
# an OAuth2 token endpoint refusing the client answers 400 (invalid_client, invalid_grant:
# RFC 6749 5.2) as often as 401: any 4xx of the token fetch is the credential
TOKEN_ERROR = re.compile(r"token endpoint \S+ -> HTTP (4\d\d)(?::|$)")


def auth_failure_status(error: str | None) -> int | None:
    """The HTTP status of a write the target refused for custsync's credential (401/403, or
    any 4xx of the OAuth2 token fetch), read from the connector's error line; None for any
    other outcome (a 400/404/422 of the write itself is a verdict on the payload)."""
    if not isinstance(error, str):
        return None
    match = TOKEN_ERROR.search(error) or AUTH_ERROR.search(error)
    return int(match.group(1)) if match else None


class CredentialError(ConnectorError):
    """A credential's env var is not set (the message names the variable, never a value)."""


class QuotaExceededError(ConnectorError):
    """A quota that retrying will not fix (Salesforce 403 REQUEST_LIMIT_EXCEEDED)."""


class ConnectorUnavailableError(ConnectorError):
    """The API could not be reached at all (connection refused, DNS, TLS)."""


# --------------------------------------------------------------------------- secrets


def require_env(
    connector: str, credentials: Mapping[str, str], key: str, env: Mapping[str, str]
) -> str:
    """The secret for credential ``key``: read from the env var the config names.

    Raises ``CredentialError`` naming the config key and the VARIABLE when it
    is not configured or not set; the value is never part of any message.
    """
    var = credentials.get(key)
    if not var:
        raise CredentialError(
            connector,
            f"credentials.{key} is not configured: name the environment variable that holds it",
        )
    value = env.get(var)
    if not value:
        raise CredentialError(
            connector, f"environment variable {var} (credentials.{key}) is not set or empty"
        )
    return value


def scrub_url(url: str) -> str:
    """``url`` without user info and with sensitive query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = urlencode(
        [
            (k, "***" if _SENSITIVE_KEYS.search(k) or _PII_KEYS.search(k) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="'():$,*[]",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*(@|%40)([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_PII_KEYS = re.compile(r"(email|phone|mobile)", re.I)


def mask_emails(text: str) -> str:
    """``jane.doe@example.com`` -> ``j***@example.com``: errors and logs never carry one in clear."""
    return _EMAIL.sub(lambda m: f"{m.group(1)}***{m.group(2)}{m.group(3)}", text)


# A phone number as people and APIs write it: "+46 70-123 45 67", "0046701234567",
# "070/123 45 67", "(070) 1234567", "+46.70.123.45.67", "tel:+46701234567", or a bare run
# of 9-15 digits. A run glued to letters (an id like 003Hp3995078806IAA), a date
# (2026-01-22) and a short count (limit 1000000) are left alone.
_PHONE = re.compile(r"(?<!\w)(?:\+|00)?\d(?:[ ./()-]{0,2}\d){6,16}(?!\w)")
_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}")


def mask_phones(text: str) -> str:
    """``+46 70-123 45 67`` -> ``+46***67``: phone numbers in vendor messages are masked."""

    def one(m: re.Match[str]) -> str:
        raw = m.group(0)
        digits = sum(c.isdigit() for c in raw)
        plain = raw.isdigit() and not raw.startswith("0")
        if digits < 7 or (plain and digits < 9) or _DATE.fullmatch(raw):
            return raw
        return f"{raw[:3]}***{raw[-2:]}"

    return _PHONE.sub(one, text)


def mask_personal(text: str) -> str:
    """E-mail addresses and phone numbers masked (vendor error bodies quote the record)."""
    return mask_phones(mask_emails(text))


# a request body's type tags (Salesforce ``attributes``) are no personal data, and words
# of two letters are codes (SE, en): what an error quoting them says stays readable
_UNSENT_KEYS = frozenset({"attributes"})
_MIN_SENT = 3


def sent_values(body: Any) -> list[str]:
    """The text values of a request body (nested dicts and lists), longest first: what an
    API's error message may quote back (a name, a street, a birth date)."""
    out: set[str] = set()
    stack = [body]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(v for k, v in value.items() if k not in _UNSENT_KEYS)
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif isinstance(value, str) and len(value.strip()) >= _MIN_SENT:
            out.add(value.strip())
    return sorted(out, key=len, reverse=True)


# a connector's own error line: "[voyado] POST <url> -> HTTP 401 after 6 retries: " (the
# status, which tells a refused credential, is custsync's words, never masked)
_ERROR_HEAD = re.compile(r"^\[[^\]]+\] .*?-> HTTP \d{3}[^:]*: ")


def mask_sent(text: str | None, values: Iterable[str]) -> str | None:
    """``text`` with every value the request sent (``sent_values``) masked to its first
    letter: vendors quote the record in their errors, and those reach the run's output,
    the Dagster event log and ``custsync status``. E-mails and phones are masked too. The
    head of a connector's error line (connector, request, status) is not searched for
    sent values: a store code ``401`` must not hide the status ``HTTP 401``."""
    if not text:
        return text
    head = _ERROR_HEAD.match(text)
    start = head.end() if head else 0
    body = text[start:]
    for value in values:
        if value in body:
            body = body.replace(value, value[0] + "***")
    return mask_personal(text[:start]) + mask_personal(body)


def scrub_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every known secret value masked, and e-mail addresses masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return mask_personal(text)


# --------------------------------------------------------------------------- rate limit


class TokenBucket:
    """Client-side rate limit: ``rate`` requests per second with bursts up to ``burst``.

    Thread-safe; a caller that finds the bucket empty reserves its token and
    sleeps outside the lock, so concurrent callers queue fairly.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = float(rate)
        self.capacity = float(burst if burst is not None else max(1.0, rate))
        self._tokens = self.capacity
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self.acquired = 0  # tokens handed out (requests and retries)

    def acquire(self) -> float:
        """Take one token, sleeping as long as needed; returns the seconds slept."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            self.acquired += 1
            wait = max(0.0, -self._tokens / self.rate)
        if wait > 0:
            time.sleep(wait)
        return wait


# --------------------------------------------------------------------------- retries


class RetryCounter:
    """A thread-safe count of the retries a session made (for ``ReadStats.retries``),
    and the last waits before them (seconds; newest last, at most ``MAX_WAITS``)."""

    MAX_WAITS = 1000

    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()
        self.waits: list[float] = []

    def add(self) -> None:
        with self._lock:
            self._n += 1

    def record_wait(self, seconds: float) -> None:
        with self._lock:
            self.waits.append(seconds)
            del self.waits[: -self.MAX_WAITS]

    @property
    def value(self) -> int:
        return self._n


class CountingRetry(Retry):
    """``urllib3`` ``Retry`` that counts every retry it grants and caps ``Retry-After``.

    The wait before retry n (1, 2, ...) of a request is ``Retry-After`` when the
    answer carries a positive one (capped at ``retry_after_cap``), else
    ``backoff_factor * 2**(n-1)`` plus up to ``backoff_jitter`` seconds of random
    jitter, at most ``backoff_max``. ``Retry-After: 0`` or a date in the past
    parse to 0: no hint, so the backoff applies.
    """

    counter: RetryCounter
    retry_after_cap: float = 60.0
    bucket: TokenBucket | None = None

    def new(self, **kw: Any) -> CountingRetry:
        fresh = super().new(**kw)
        fresh.counter = self.counter
        fresh.retry_after_cap = self.retry_after_cap
        fresh.bucket = self.bucket
        return fresh

    def get_backoff_time(self) -> float:
        # urllib3 2.x waits 0 s before the first retry and adds no jitter to it; a
        # server that just answered 503 deserves a pause, and clients that fail
        # together must not come back in lockstep
        errors = len(list(takewhile(lambda h: h.redirect_location is None, reversed(self.history))))
        if errors < 1:
            return 0.0
        wait = self.backoff_factor * (2 ** (errors - 1))
        if self.backoff_jitter:
            wait += random.random() * self.backoff_jitter
        return float(max(0.0, min(self.backoff_max, wait)))

    def sleep(self, response: Any = None) -> None:
        hint = (
            self.get_retry_after(response) if self.respect_retry_after_header and response else None
        )
        wait = hint if hint else self.get_backoff_time()
        self.counter.record_wait(wait)
        if wait > 0:
            time.sleep(wait)
        # a retry is a request too: it waits for its token like any other
        if self.bucket is not None:
            self.bucket.acquire()

    def get_retry_after(self, response: Any) -> float | None:
        try:
            seconds = super().get_retry_after(response)
        except Exception:  # an unparseable header is no hint, not a failure
            return None
        if seconds is None:
            return None
        return min(seconds, self.retry_after_cap)

    def increment(self, *args: Any, **kwargs: Any) -> CountingRetry:
        fresh = super().increment(*args, **kwargs)  # raises MaxRetryError when exhausted
        self.counter.add()
        return fresh


# --------------------------------------------------------------------------- client


@dataclass
class HttpSettings:
    """Tunable HTTP behaviour of one connector (all settable under ``options.http``)."""

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_retries: int = 6
    backoff_factor_s: float = 0.25
    backoff_max_s: float = 30.0
    backoff_jitter_s: float = 0.25
    retry_after_max_s: float = 60.0
    rate_per_s: float | None = None
    burst: float | None = None
    pool_size: int = 4

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], default_rate_per_s: float | None
    ) -> HttpSettings:
        """Read ``options["http"]`` (a mapping) over the defaults; unknown keys are an error."""
        raw = dict(options.get("http") or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"options.http: unknown key(s) {unknown}; known: {sorted(known)}")
        raw.setdefault("rate_per_s", default_rate_per_s)
        return cls(**raw)


@dataclass
class HttpCounters:
    """Requests and retries made through one client, since it was built."""

    requests: int = 0
    retry_counter: RetryCounter = field(default_factory=RetryCounter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_request(self) -> None:
        with self._lock:  # connectors fetch in parallel threads
            self.requests += 1

    @property
    def retries(self) -> int:
        return self.retry_counter.value


ErrorParser = Callable[[requests.Response], str]
ResponseHook = Callable[["HttpClient", requests.Response], None]


def default_error_message(resp: requests.Response) -> str:
    """The API's own error message when the body is JSON, else the start of the text;
    e-mail addresses and phone numbers in it are masked (vendors quote the record)."""
    return mask_personal(_error_text(resp))


def _error_text(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or "").strip()[:300]
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if isinstance(body, dict):
        for key in ("message", "Message", "error_description", "error", "detail", "title"):
            val = body.get(key)
            if isinstance(val, str) and val:
                code = (
                    body.get("errorCode")
                    or body.get("key")
                    or body.get("code")
                    or (body.get("Error") if isinstance(body.get("Error"), str) else None)
                )
                details = body.get("details")  # Voucherify: the specific reason
                if isinstance(details, str) and details and details != val:
                    val = f"{val} ({details})"
                return f"{code}: {val}" if code and not isinstance(code, int) else val
            if isinstance(val, dict) and "message" in val:
                msg = val["message"]
                return msg.get("value", str(msg)) if isinstance(msg, dict) else str(msg)
    return str(body)[:300]


class HttpClient:
    """A ``requests`` session for one connector: base URL, auth headers, retries, rate limit.

    ``request`` returns the response for 2xx (and any status in ``allow``);
    otherwise it raises ``ConnectorError`` with the API's message, scrubbed.
    After the retries run out on 429/5xx the error is ``transient``.
    """

    def __init__(
        self,
        connector: str,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        settings: HttpSettings | None = None,
        auth: requests.auth.AuthBase | None = None,
        error_parser: ErrorParser = default_error_message,
        fatal_check: Callable[[requests.Response], str | None] | None = None,
        response_hooks: Iterable[ResponseHook] = (),
    ) -> None:
        if not base_url:
            raise ConnectorError(connector, "base_url is not configured")
        self.connector = connector
        self.base_url = base_url.rstrip("/")
        self.settings = settings or HttpSettings()
        self._secrets = [s for s in secrets if s]
        self._error_parser = error_parser
        self._fatal_check = fatal_check
        self._hooks = list(response_hooks)
        self.counters = HttpCounters()
        self._pause_until = 0.0
        self.bucket = (
            TokenBucket(self.settings.rate_per_s, self.settings.burst)
            if self.settings.rate_per_s
            else None
        )
        retry = CountingRetry(
            total=self.settings.max_retries,
            connect=min(2, self.settings.max_retries),
            read=self.settings.max_retries,
            status=self.settings.max_retries,
            other=0,
            redirect=5,
            # every write we send is an upsert (by external id or by record id),
            # so replaying any method is harmless
            allowed_methods=None,
            status_forcelist=RETRY_STATUSES,
            backoff_factor=self.settings.backoff_factor_s,
            backoff_max=self.settings.backoff_max_s,
            backoff_jitter=self.settings.backoff_jitter_s,
            respect_retry_after_header=True,
            raise_on_status=False,
            raise_on_redirect=True,
        )
        retry.counter = self.counters.retry_counter
        retry.retry_after_cap = self.settings.retry_after_max_s
        retry.bucket = self.bucket
        adapter = HTTPAdapter(
            max_retries=retry,
            pool_connections=self.settings.pool_size,
            pool_maxsize=self.settings.pool_size,
        )
        self.session = requests.Session()
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": "custsync/0.1", "Accept": "application/json"})
        self.session.headers.update(dict(headers or {}))
        self.session.auth = auth
        # never pick up credentials from ~/.netrc or proxies from the environment
        self.session.trust_env = False

    # -- helpers ----------------------------------------------------------------

    def add_secret(self, value: str) -> None:
        """Register a value that must never appear in an error (e.g. a fetched token)."""
        if value:
            self._secrets.append(value)

    def scrub(self, text: str) -> str:
        return scrub_text(text, self._secrets)

    def error(self, message: str, **kw: Any) -> ConnectorError:
        return ConnectorError(self.connector, self.scrub(message), **kw)

    def url(self, path_or_url: str) -> str:
        """An absolute URL: a path joined to the base URL; a full URL (a next link) kept.

        A full URL on another host than ``base_url`` is refused: following it would
        hand our credentials to whoever the answer pointed at.
        """
        if path_or_url.startswith(("http://", "https://")):
            here, there = urlsplit(self.base_url), urlsplit(path_or_url)
            if (there.scheme, there.netloc.lower()) != (here.scheme, here.netloc.lower()):
                raise self.error(
                    f"refusing to follow {scrub_url(path_or_url)}: not on {scrub_url(self.base_url)}"
                )
            return path_or_url
        return urljoin(self.base_url + "/", path_or_url.lstrip("/"))

    def pause_for(self, seconds: float) -> None:
        """Hold the next requests back ``seconds`` (the server said its window is used up)."""
        self._pause_until = max(self._pause_until, time.monotonic() + seconds)

    def close(self) -> None:
        self.session.close()

    # -- the call ------------------------------------------------------------------

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        allow: Iterable[int] = (),
    ) -> requests.Response:
        url = self.url(path_or_url)
        pause = self._pause_until - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        if self.bucket is not None:
            self.bucket.acquire()
        self.counters.add_request()
        timeout = (self.settings.connect_timeout_s, self.settings.read_timeout_s)
        try:
            resp = self.session.request(
                method, url, params=params, json=json, data=data, headers=headers, timeout=timeout
            )
        except requests.exceptions.ConnectionError as exc:
            cause = _root_cause(exc)
            if "timed out" in cause.lower() or isinstance(exc, requests.exceptions.Timeout):
                raise self.error(
                    f"{method} {scrub_url(url)} timed out after "
                    f"{self.settings.max_retries} retries ({cause})",
                    transient=True,
                ) from None
            raise ConnectorUnavailableError(
                self.connector,
                self.scrub(
                    f"cannot reach {scrub_url(self.base_url)} ({method} {scrub_url(url)}): {cause}"
                ),
                transient=True,
            ) from None
        except requests.exceptions.Timeout as exc:
            raise self.error(
                f"{method} {scrub_url(url)} timed out after {self.settings.max_retries} retries "
                f"({_root_cause(exc)})",
                transient=True,
            ) from None
        except requests.exceptions.RequestException as exc:
            raise self.error(
                f"{method} {scrub_url(url)} failed: {type(exc).__name__}: {_root_cause(exc)}",
                transient=True,
            ) from None
        for hook in self._hooks:
            hook(self, resp)
        if 200 <= resp.status_code < 300 or resp.status_code in set(allow):
            return resp
        if self._fatal_check is not None:
            fatal = self._fatal_check(resp)
            if fatal:
                raise QuotaExceededError(
                    self.connector, self.scrub(fatal), status=resp.status_code, transient=False
                )
        message = self.scrub(mask_sent(self._error_parser(resp), sent_values(json)) or "")
        transient = resp.status_code in RETRY_STATUSES
        after = f" after {self.settings.max_retries} retries" if transient else ""
        raise ConnectorError(
            self.connector,
            f"{method} {scrub_url(resp.url or url)} -> HTTP {resp.status_code}{after}: {message}",
            status=resp.status_code,
            transient=transient,
        )

    def get_json(self, path_or_url: str, **kw: Any) -> Any:
        """GET and decode JSON; a body that does not parse (a truncated page) is fetched again.

        Re-fetching counts as a retry; after ``max_retries`` the error is transient.
        """
        for attempt in range(self.settings.max_retries + 1):
            resp = self.request("GET", path_or_url, **kw)
            try:
                return resp.json()
            except ValueError:
                if attempt < self.settings.max_retries:
                    self.counters.retry_counter.add()
                    log.warning(
                        "[%s] GET %s: malformed JSON page, fetching it again",
                        self.connector,
                        scrub_url(resp.url),
                    )
                    continue
                raise self.error(
                    f"GET {scrub_url(resp.url)}: response is not JSON "
                    f"(HTTP {resp.status_code}, {len(resp.content)} bytes) after "
                    f"{self.settings.max_retries} retries",
                    status=resp.status_code,
                    transient=True,
                ) from None
        raise AssertionError("unreachable")


def _root_cause(exc: BaseException) -> str:
    """A short reason for a transport failure, without the URL urllib3 embeds in it."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    last = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        last = cur
        reason = getattr(cur, "reason", None)
        cur = reason if isinstance(reason, BaseException) else (cur.__cause__ or cur.__context__)
        if cur is None and exc.args and isinstance(exc.args[0], BaseException):
            cur = exc.args[0] if id(exc.args[0]) not in seen else None
    text = str(last)
    # urllib3 messages look like "<HTTPConnection object at 0x..>: Failed to establish ... "
    text = re.sub(r"<[^>]*object at 0x[0-9a-f]+>:?\s*", "", text)
    text = re.sub(r"https?://\S+", lambda m: scrub_url(m.group(0)), text)
    return text[:200] or type(last).__name__


def rate_limit_reset_hook(
    remaining_header: str,
    reset_header: str,
    *,
    reset_is_epoch_ms: bool = True,
    max_wait_s: float = 60.0,
) -> ResponseHook:
    """A response hook that pauses the client when the server says its window is used up.

    Exact Online sends ``X-RateLimit-Minutely-Remaining`` and
    ``X-RateLimit-Minutely-Reset`` (epoch milliseconds).
    """

    def hook(client: HttpClient, resp: requests.Response) -> None:
        remaining = resp.headers.get(remaining_header)
        reset = resp.headers.get(reset_header)
        if remaining is None or reset is None:
            return
        try:
            if int(remaining) > 0:
                return
            reset_at = float(reset) / (1000.0 if reset_is_epoch_ms else 1.0)
        except ValueError:
            return
        wait = reset_at - time.time()
        if wait > 0:
            client.pause_for(min(wait, max_wait_s))

    return hook


class OAuth2ClientCredentials(requests.auth.AuthBase):
    """OAuth2 client-credentials auth: fetches a bearer token from ``token_url`` and renews it.

    The token is cached until shortly before ``expires_in``; it is registered
    with the client as a secret so it can never appear in an error. A 401
    answer drops the cached token so the next request fetches a fresh one.
    """

    def __init__(
        self,
        connector: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        timeout_s: float = 30.0,
        on_token: Callable[[str], None] | None = None,
    ) -> None:
        self.connector = connector
        self.token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self.scope = scope
        self.timeout_s = timeout_s
        self._on_token = on_token
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.trust_env = False

    def token(self) -> str:
        with self._lock:
            if self._token and time.monotonic() < self._expires_at:
                return self._token
            data = {"grant_type": "client_credentials"}
            if self.scope:
                data["scope"] = self.scope
            try:
                resp = self._session.post(
                    self.token_url,
                    data=data,
                    auth=(self._client_id, self._client_secret),
                    timeout=self.timeout_s,
                )
            except requests.RequestException as exc:
                raise ConnectorUnavailableError(
                    self.connector,
                    f"token endpoint {scrub_url(self.token_url)} unreachable: {_root_cause(exc)}",
                    transient=True,
                ) from None
            if resp.status_code != 200:
                msg = scrub_text(
                    default_error_message(resp), [self._client_id, self._client_secret]
                )
                raise ConnectorError(
                    self.connector,
                    f"token endpoint {scrub_url(self.token_url)} -> HTTP {resp.status_code}: {msg}",
                    status=resp.status_code,
                    transient=resp.status_code in RETRY_STATUSES,
                )
            body = resp.json()
            token = body.get("access_token")
            if not token:
                raise ConnectorError(self.connector, "token endpoint answered without access_token")
            self._token = str(token)
            # renew a minute early so a token never expires mid-request
            self._expires_at = time.monotonic() + max(0.0, float(body.get("expires_in", 3600)) - 60)
            if self._on_token:
                self._on_token(self._token)
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        request.register_hook("response", self._on_response)
        return request

    def _on_response(self, resp: requests.Response, **_: Any) -> requests.Response:
        if resp.status_code == 401:
            self.invalidate()
        return resp
