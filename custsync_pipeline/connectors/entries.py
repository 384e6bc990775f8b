"""Aspect entries from vendor records: the pieces every connector's ``to_aspects`` shares.

A connector's ``to_aspects(raw)`` gives one row per multi-valued aspect entry in the
shape of ``domain.aspects.ENTRY_COLUMNS`` (values as received; ``key_entries`` keys them
later). Vendor modules build their entries with :func:`column_entries` (a flat record's
columns: ``MailingStreet`` …) and :func:`explode_items` (a nested list: ``contact_persons``);
the generic REST and file connectors describe theirs in YAML (``options.aspects``), read by
:class:`AspectMapping`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from custsync_pipeline.connectors.common import column, parse_times
from custsync_pipeline.domain.aspects import (
    ASPECT_COLUMNS,
    ENTRY_ASPECTS,
    ENTRY_COLUMNS,
    conform_entries,
    empty_entries,
)

# aspect column names a mapping may fill besides the aspect's own columns
_LOCAL = ("local_id", "parent_local_id")


def present(values: pd.Series) -> pd.Series:
    """True where a value is there: not null and not blank text (vectorized)."""
    text = values.astype("string")
    return (values.notna() & text.str.strip().ne("").fillna(False)).astype(bool)


def column_entries(
    connector: str,
    source_id: pd.Series,
    aspect: str,
    values: Mapping[str, Any],
    *,
    local_id: Any,
    seen_at: Any = pd.NaT,
    parent_local_id: Any = None,
    mask: pd.Series | None = None,
) -> pd.DataFrame:
    """One entry per record (row of ``source_id``) that has any of ``values``' Series.

    ``values`` maps an aspect column to a Series aligned with ``source_id`` (a field of the
    record) or a constant (``type: "mailing"``); only the Series decide whether a record
    has the entry, so a constant type never makes an empty address.
    """
    frame = pd.DataFrame(index=source_id.index)
    frame["connector"] = connector
    frame["source_id"] = source_id.astype("string")
    frame["aspect"] = aspect
    fields = [c for c, v in values.items() if isinstance(v, pd.Series)]
    for col, value in values.items():
        frame[col] = value
    frame["local_id"] = local_id
    frame["parent_local_id"] = parent_local_id
    frame["seen_at"] = seen_at
    keep = pd.Series(False, index=frame.index)
    for col in fields:
        keep |= present(frame[col])
    if mask is not None:
        keep &= mask.reindex(frame.index, fill_value=False).astype(bool)
    keep &= present(frame["source_id"])
    return frame[keep]


def _as_list(value: object) -> object:
    """A nested list as received, or as the step IO manager stores it between steps (JSON
    text: Parquet holds no ragged lists of objects)."""
    if isinstance(value, str) and value.startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def explode_items(raw: pd.DataFrame, path: str) -> pd.DataFrame:
    """The objects of the list at ``path`` of every record, one row each, flattened to dotted
    columns; ``__row`` is the record's index label in ``raw``, ``__pos`` the item's position
    in its list. Records without a list (or with an empty one) give no rows."""
    values = column(raw, path).map(_as_list)
    lists = values[values.map(lambda v: isinstance(v, list) and len(v) > 0)]
    if lists.empty:
        return pd.DataFrame({"__row": pd.Series([], dtype="object"), "__pos": []})
    items = lists.explode()
    pos = items.groupby(level=0).cumcount()
    is_obj = items.map(lambda v: isinstance(v, Mapping)).astype(bool)
    items, pos = items[is_obj], pos[is_obj]
    if items.empty:
        return pd.DataFrame({"__row": pd.Series([], dtype="object"), "__pos": []})
    flat = pd.json_normalize(items.tolist(), sep=".")
    flat["__row"] = items.index.to_numpy()
    flat["__pos"] = pos.to_numpy()
    return flat


def detail_entries(
    connector: str,
    owner_ids: pd.Series,
    raw: pd.DataFrame,
    fields: Iterable[tuple[str, str, str]],
    *,
    seen_at: Any = pd.NaT,
    parent_local_id: Any = None,
    mask: pd.Series | None = None,
) -> list[pd.DataFrame]:
    """Contact-detail entries from the record's own columns: ``fields`` is
    ``(column, type, local_id)``; under a contact person (``parent_local_id``) they are
    ``contact_person_contact_details``, else ``customer_contact_details``."""
    aspect = (
        "customer_contact_details" if parent_local_id is None else "contact_person_contact_details"
    )
    return [
        column_entries(
            connector,
            owner_ids,
            aspect,
            {"type": kind, "value": column(raw, fld)},
            local_id=local,
            parent_local_id=parent_local_id,
            seen_at=seen_at,
            mask=mask,
        )
        for fld, kind, local in fields
    ]


def concat_entries(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Entry frames -> one frame with ``ENTRY_COLUMNS``, typed (empty frames dropped)."""
    parts = [f for f in frames if f is not None and not f.empty]
    if not parts:
        return empty_entries()
    # column by column, typed once after: a lane gives a dozen small parts, and typing
    # each (22 columns) cost more than the lane's own mapping. A column every part holds
    # in one dtype is stacked as it is; a mixed or partial one goes as objects (a part
    # without it fills None) and ``conform_entries`` types it
    data: dict[str, pd.Series] = {}
    for col in ENTRY_COLUMNS:
        held = [p[col] for p in parts if col in p.columns]
        if not held:
            continue
        if len(held) == len(parts) and all(h.dtype == held[0].dtype for h in held):
            data[col] = pd.concat(held, ignore_index=True)
            continue
        data[col] = pd.Series(
            np.concatenate(
                [
                    p[col].to_numpy(dtype=object)
                    if col in p.columns
                    else np.full(len(p), None, dtype=object)
                    for p in parts
                ]
            ),
            dtype=object,
        )
    return conform_entries(pd.DataFrame(data))


def entry_list(value: Any) -> list[dict[str, Any]]:
    """The entries an aspect column of a golden row holds (a list, tuple or array of dicts),
    or ``[]`` when it holds none (missing, or the target does not subscribe)."""
    if isinstance(value, Mapping) or isinstance(value, str | bytes) or value is None:
        return []
    if isinstance(value, list | tuple) or hasattr(value, "tolist"):
        items = value.tolist() if hasattr(value, "tolist") else list(value)
        return [dict(e) for e in items if isinstance(e, Mapping)]
    return []


def first_entry(
    entries: Any, types: Sequence[str] = (), *, skip: Iterable[int] = ()
) -> tuple[int, dict[str, Any]] | None:
    """(position, entry) of the first entry in a golden record's aspect list whose ``type`` is
    in ``types`` (any type when empty), skipping positions in ``skip``; None when none is.

    ``entries`` is what ``from_canonical`` finds in an aspect column (see :func:`entry_list`)."""
    skipped = set(skip)
    for i, entry in enumerate(entry_list(entries)):
        if i in skipped:
            continue
        if not types or str(entry.get("type") or "").strip().lower() in types:
            return i, dict(entry)
    return None


# ----------------------------------------------------------------------------- YAML mapping


class AspectOption(BaseModel):
    """One entry of ``options.aspects`` of the generic REST and file connectors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    aspect: str = Field(description="the multi-valued aspect the entries belong to")
    path: str | None = Field(
        default=None, description="dotted path of a list of objects in the record"
    )
    prefix: str | None = Field(
        default=None,
        description="columns starting with this are name -> value pairs (attributes.)",
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="item field (path) or record column (no path) -> aspect column",
    )
    static: dict[str, Any] = Field(default_factory=dict, description="aspect column -> constant")
    exclude: list[str] = Field(default_factory=list, description="prefix: names left out")

    @model_validator(mode="after")
    def _check(self) -> AspectOption:
        if self.aspect not in ENTRY_ASPECTS:
            raise ValueError(f"aspect {self.aspect!r} is not one of {', '.join(ENTRY_ASPECTS)}")
        allowed = set(ASPECT_COLUMNS[self.aspect]) | set(_LOCAL)
        unknown = sorted((set(self.fields.values()) | set(self.static)) - allowed)
        if unknown:
            raise ValueError(f"{self.aspect} has no column(s) {unknown}; known: {sorted(allowed)}")
        if self.path and self.prefix:
            raise ValueError(
                "give path (a nested list) or prefix (name -> value columns), not both"
            )
        if self.prefix is not None:
            if set(ASPECT_COLUMNS[self.aspect]) != {"name", "value"}:
                raise ValueError(f"prefix needs a name -> value aspect, not {self.aspect}")
        elif not [c for c in self.fields.values() if c not in _LOCAL]:
            raise ValueError("fields: map at least one field to a column of the aspect")
        return self


def parse_aspect_options(specs: Any) -> list[AspectOption]:
    """``options.aspects`` validated; a ``ValueError`` names the entry and the problem."""
    if specs is None:
        return []
    if not isinstance(specs, list):
        raise ValueError("options.aspects: a list of {aspect, path | prefix, fields, static}")
    out = []
    for i, spec in enumerate(specs):
        try:
            out.append(AspectOption.model_validate(spec))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"options.aspects[{i}]: {problems}") from None
    return out


class AspectMapping:
    """``options.aspects`` of a YAML-described connector: records -> aspect entries.

    Three kinds of entry, one per ``options.aspects`` item:

    - ``path``: a nested list of objects (``contact_persons: [{id, name, role, …}]``), one
      entry per object; ``fields`` maps an object's (dotted) field to an aspect column,
      ``local_id`` defaults to the field mapped to ``person_id``, else the object's position
      in the list (nested aspects point at it with ``parent_local_id``);
    - ``prefix``: flattened object keys or prefixed columns (``attributes.segment``,
      ``attr_color``) as name -> value pairs, one entry per non-empty column;
    - neither: the record's own (flattened) columns (``address2_street``), one entry per
      record that has any of them; ``local_id`` defaults to the static ``type`` or the
      aspect's name.
    """

    def __init__(self, connector: str, specs: Sequence[AspectOption]) -> None:
        self.connector = connector
        self.specs = list(specs)

    @property
    def aspects(self) -> frozenset[str]:
        return frozenset(s.aspect for s in self.specs)

    def to_aspects(
        self, raw: pd.DataFrame, source_id: pd.Series, seen_at: pd.Series | Any
    ) -> pd.DataFrame:
        if raw.empty or not self.specs:
            return empty_entries()
        seen = seen_at if isinstance(seen_at, pd.Series) else pd.Series(seen_at, index=raw.index)
        parts = []
        for spec in self.specs:
            if spec.path:
                parts.append(self._nested(raw, spec, source_id, seen))
            elif spec.prefix is not None:
                parts.append(self._pairs(raw, spec, source_id, seen))
            else:
                parts.append(self._columns(raw, spec, source_id, seen))
        return concat_entries(parts)

    def _nested(
        self, raw: pd.DataFrame, spec: AspectOption, source_id: pd.Series, seen: pd.Series
    ) -> pd.DataFrame:
        items = explode_items(raw, spec.path or "")
        if items.empty:
            return empty_entries()
        rows = items["__row"]
        position = items["__pos"].astype(str).astype("string")
        values: dict[str, Any] = dict(spec.static)
        for fld, col in spec.fields.items():
            if col not in _LOCAL:
                values[col] = column(items, fld)
        # a contact person's own id is its id within the record too
        local = next((f for f, c in spec.fields.items() if c == "local_id"), None) or next(
            (f for f, c in spec.fields.items() if c == "person_id"), None
        )
        parent = next((f for f, c in spec.fields.items() if c == "parent_local_id"), None)
        return column_entries(
            self.connector,
            pd.Series(source_id.loc[rows].to_numpy(), index=items.index),
            spec.aspect,
            values,
            # an object without its own id is known by its position in the list (the same
            # for a nested aspect read from the same list)
            local_id=column(items, local).astype("string").fillna(position) if local else position,
            parent_local_id=column(items, parent).astype("string").fillna(position)
            if parent
            else None,
            seen_at=seen.loc[rows].to_numpy(),
        )

    def _pairs(
        self, raw: pd.DataFrame, spec: AspectOption, source_id: pd.Series, seen: pd.Series
    ) -> pd.DataFrame:
        prefix = spec.prefix or ""
        cols = [
            c
            for c in raw.columns
            if c.startswith(prefix)
            and len(c) > len(prefix)
            and c[len(prefix) :] not in spec.exclude
        ]
        parts = []
        for col in cols:  # one pass per attribute name, each vectorized over the records
            name = col[len(prefix) :]
            parts.append(
                column_entries(
                    self.connector,
                    source_id,
                    spec.aspect,
                    {**spec.static, "name": name, "value": raw[col].astype("string")},
                    local_id=name,
                    seen_at=seen,
                )
            )
        return concat_entries(parts)

    def _columns(
        self, raw: pd.DataFrame, spec: AspectOption, source_id: pd.Series, seen: pd.Series
    ) -> pd.DataFrame:
        values: dict[str, Any] = dict(spec.static)
        for fld, col in spec.fields.items():
            if col not in _LOCAL:
                values[col] = column(raw, fld)
        local = next((f for f, c in spec.fields.items() if c == "local_id"), None)
        parent = next((f for f, c in spec.fields.items() if c == "parent_local_id"), None)
        return column_entries(
            self.connector,
            source_id,
            spec.aspect,
            values,
            local_id=column(raw, local).astype("string")
            if local
            else str(spec.static.get("type") or spec.aspect),
            parent_local_id=column(raw, parent).astype("string") if parent else None,
            seen_at=seen,
        )


def times_or_nat(raw: pd.DataFrame, field: str | None) -> pd.Series:
    """The records' change times (``seen_at`` of their entries); NaT without a field."""
    if not field:
        return pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    return parse_times(column(raw, field))
