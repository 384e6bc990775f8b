"""The connector contract every system module implements, and its small result types."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pandas as pd


@dataclass
class ReadStats:
    """What one read cost: shown as Dagster metadata on the extraction asset."""

    pages: int = 0
    requests: int = 0
    retries: int = 0
    elapsed_s: float = 0.0


@dataclass
class ReadResult:
    """One read of a connector: the records as received plus bookkeeping.

    ``records`` holds one row per source record in the vendor's own field names
    (nested objects flattened or kept as dicts); ``deleted_ids`` lists ids the
    API reported deleted; ``watermark`` is the newest change time seen (only
    advanced when every page succeeded and at least one record came back).
    """

    records: pd.DataFrame
    deleted_ids: list[str] = field(default_factory=list)
    watermark: datetime | None = None
    stats: ReadStats = field(default_factory=ReadStats)


@dataclass
class WriteOp:
    """One entity to write to a target.

    ``target_id`` is the record's id in the target when the golden record
    already has a member there (an update); ``None`` means create it, keyed by
    ``golden_id`` (an upsert on the target's external-id field, so a replay is
    harmless).
    """

    golden_id: str
    target_id: str | None
    payload: dict[str, Any]
    op: str = "upsert"  # "upsert" | "delete"


@dataclass
class WriteResult:
    """The per-record outcome of a write, in the order of the ops sent."""

    golden_id: str
    target_id: str | None
    ok: bool
    error: str | None = None
    transient: bool = False
    # an update answered "no such record": deleted there since custsync read it. Not a
    # failure to retry: the member is gone, and the golden record is never created there
    gone: bool = False


class Connector(Protocol):
    """What the pipeline needs from a system. One module per system implements it."""

    name: str

    def read(self, since: datetime | None = None) -> ReadResult:
        """Full snapshot (``since=None``) or changes since a watermark (with overlap)."""
        ...

    def to_canonical(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Vendor rows -> canonical columns (``domain.canonical``), values not yet normalized."""
        ...

    def from_canonical(self, golden: pd.DataFrame) -> list[dict[str, Any]]:
        """Golden rows -> payloads in the vendor's field names (one per row, same order).

        A column named after a multi-valued aspect the target subscribes to
        (``addresses``, ``customer_attributes`` …) holds that golden record's
        entries as a list of dicts (the aspect's ``domain.aspects.ASPECT_COLUMNS``
        plus ``entry_key``/``parent_key``), ordered by ``entry_key``.
        """
        ...

    # Optional: ``empty_reads_as: dict[str, str]``, golden field -> the value a record whose
    # field reads empty holds as a write target (Salesforce: a Contact not opted out of
    # e-mail, read as no consent, holds what a golden "yes" writes), for the delta compare.
    # Optional: ``written_rows(raw) -> pd.DataFrame``: payloads custsync sent, as the raw
    # records they read back as (Salesforce: of its ``write_object``, which a payload does
    # not name), for echo safety and withdrawn values.
    # Optional: ``to_aspects(raw) -> pd.DataFrame`` gives the records' multi-valued aspect
    # entries (``domain.aspects.ENTRY_COLUMNS``: connector, source_id, aspect, local_id,
    # parent_local_id and the aspect's columns, values as received). Without it the lane
    # derives addresses and contact details from the canonical row
    # (``domain.aspects.entries_from_canonical``).

    def write(self, ops: list[WriteOp]) -> list[WriteResult]:
        """Send ops in the API's batch size; one result per op, in order."""
        ...
