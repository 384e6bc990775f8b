"""Every connector entry of the sync config checked when the config loads, not at run time.

``connector_config_errors(cfg)`` builds each enabled connector once, offline — the
same constructor a run uses, so its own option checks apply (``check_options``, the
REST connector's paging/auth/write sections, ``options.http``) — with a placeholder
for every credential, and closes it again. No request is sent. It also requires a
``base_url`` for every connector that talks HTTP. Each error names the key
(``connectors.<name>.options``) and, for a misspelt one, the closest valid key.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from types import UnionType
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from custsync_pipeline.config import SyncConfig

# connector types that read files, not an API: no base_url
NO_BASE_URL = frozenset({"file"})


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The valid key ``word`` was most likely meant to be (``record_path`` -> ``records_path``)."""
    options = sorted(set(choices))
    folded = {c.lower().replace("_", ""): c for c in options}
    if word.lower().replace("_", "") in folded:
        return folded[word.lower().replace("_", "")]
    near = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return near[0] if near else None


def with_hint(message: str, known: Iterable[str], unknown: Iterable[str]) -> str:
    """``message`` plus "did you mean" for each unknown key that is close to a known one."""
    unknown, known = list(unknown), list(known)
    pairs = [(u, c) for u in unknown if (c := closest(u, known))]
    if len(unknown) == 1 and pairs:
        return f"{message} (did you mean {pairs[0][1]!r}?)"
    hints = [f"{u!r} -> {c!r}" for u, c in pairs]
    return message + (f" (did you mean {', '.join(hints)}?)" if hints else "")


def _unwrap(tp: Any) -> Any:
    """``X | None`` -> ``X`` (the first type that is not None)."""
    if get_origin(tp) in (Union, UnionType):
        return next((a for a in get_args(tp) if a is not type(None)), tp)
    return tp


def model_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys valid beside the last element of ``loc`` in ``model`` (for "did you mean")."""
    tp: Any = model
    for part in loc[:-1]:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return []
            tp = field.annotation
        elif origin in (dict, Mapping) and len(get_args(tp)) == 2:
            tp = get_args(tp)[1]
        elif origin in (list, tuple, Sequence) and get_args(tp):
            tp = get_args(tp)[0]
        else:
            return []
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def validation_lines(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per pydantic error: the key, the message, the closest key for a misspelt one."""
    lines = []
    for e in exc.errors():
        loc = [str(p) for p in e["loc"]]
        key = ".".join(filter(None, [prefix, *loc])) or "(top level)"
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden" and loc:
            msg = with_hint("unknown key", model_keys(model, e["loc"]), [loc[-1]])
        if key == "(top level)" and re.match(r"^[\w.\[\]]+: ", msg):
            lines.append(msg)  # the message names its key already
        else:
            lines.append(f"{key}: {msg}")
    return lines


_UNKNOWN = re.compile(r"unknown (?:option|key)\(s\) (.+?); known: (.+)$", re.S)


def _explain(message: str) -> str:
    """A connector's "unknown option(s) …; known: …" error, shortened and with the closest key."""
    found = _UNKNOWN.search(message)
    if not found:
        return message
    unknown = re.findall(r"[\w.]+", found.group(1).replace("options.", ""))
    known = re.findall(r"[\w.]+", found.group(2))
    head = message[: found.start()] + f"unknown {', '.join(unknown)}"
    return with_hint(head, known, unknown)


def _keyed(key: str, message: str) -> str:
    """``connectors.<name>.options.http: …`` when the message names its key, else ``….options: …``."""
    if re.match(r"^(options|credentials)[\w.]*(: | is )", message):
        return f"{key}.{message}"
    return f"{key}.options: {message}"


def connector_config_errors(cfg: SyncConfig) -> list[str]:
    """One line per mistake in the enabled connectors of ``cfg`` (empty: all can be built)."""
    from custsync_pipeline.connectors import build_connector, known_types
    from custsync_pipeline.connectors.http import ConnectorError

    errors: list[str] = []
    types = known_types()
    for name, conn in cfg.connectors.items():
        key = f"connectors.{name}"
        if conn.type not in types:
            hint = closest(conn.type, types)
            errors.append(
                f"{key}.type: {conn.type!r} is not a connector type"
                + (f" (did you mean {hint!r}?)" if hint else "")
                + f"; known: {', '.join(types)}"
            )
            continue
        if not conn.enabled:
            continue
        if conn.type not in NO_BASE_URL and not conn.base_url.strip():
            errors.append(f"{key}.base_url: required for a {conn.type} connector (the API root)")
            continue
        if conn.type == "rest":  # its options are a pydantic model: every key, with hints
            from custsync_pipeline.connectors.rest import RestOptions

            try:
                RestOptions.model_validate(conn.options)
            except ValidationError as exc:
                errors.extend(validation_lines(exc, RestOptions, f"{key}.options"))
                continue
        env = {v: "placeholder" for v in conn.credentials.values()}  # built offline, never sent
        try:
            connector = build_connector(name, conn, env)
        except ConnectorError as exc:
            errors.append(_keyed(key, _explain(str(exc).removeprefix(f"[{name}] "))))
            continue
        except (ValueError, TypeError, KeyError) as exc:
            errors.append(_keyed(key, _explain(str(exc))))
            continue
        close = getattr(connector, "close", None)
        if close is not None:
            close()
    return errors
