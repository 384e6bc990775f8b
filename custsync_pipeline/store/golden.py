"""Aspect tables of the state DB: the entries each source record gives, the merged entries
of every golden record with their provenance, and which connector gave each golden field.

``source_entries`` is replaced per connector with its source records; the
golden tables are rewritten only for golden ids whose record changed.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from custsync_pipeline.domain.aspects import (
    ENTRY_COLUMNS,
    KEY_COLUMNS,
    LOCAL_COLUMNS,
    VALUE_COLUMNS,
    conform_entries,
)
from custsync_pipeline.domain.canonical import CONSENT_TIMES
from custsync_pipeline.domain.golden import (
    CREATED,
    ENTRY_SOURCE_COLUMNS,
    GOLDEN_ENTRY_COLUMNS,
    distinct_text,
    first_version,
    strings_hash,
)
from custsync_pipeline.store.bulk import (
    bump_stamp,
    chunks,
    delete_in,
    hashes_digest,
    insert_frame,
    one_of,
    read_frame,
    read_keyed,
    save_digest,
    stored_digest,
)
from custsync_pipeline.store.core import (
    SOURCE_STAMP,
    _read_frame,
    golden_events,
    golden_records,
    load_golden_records,
    queue_changed,
    source_record_ids,
    source_records,
)
from custsync_pipeline.store.db import metadata


def _value_columns() -> list[sa.Column]:
    return [sa.Column(c, sa.Float() if c == "size" else sa.Text()) for c in VALUE_COLUMNS]


source_entries = sa.Table(
    "source_entries",
    metadata,
    *[sa.Column(c, sa.Text, primary_key=c in KEY_COLUMNS[:4]) for c in KEY_COLUMNS],
    *[sa.Column(c, sa.Text) for c in LOCAL_COLUMNS],
    *_value_columns(),
    sa.Column("seen_at", sa.DateTime(timezone=True)),
    # an incremental pull finds the entries a record gave another record (a contact person
    # of an Account) by these ids; partial: most entries hold none, and cost nothing here
    *[
        sa.Index(
            f"ix_source_entries_{c}",
            "connector",
            c,
            sqlite_where=sa.text(f"{c} IS NOT NULL"),
            postgresql_where=sa.text(f"{c} IS NOT NULL"),
        )
        for c in LOCAL_COLUMNS
    ],
    comment="multi-valued aspect entries of each stored source record",
)

golden_entries = sa.Table(
    "golden_entries",
    metadata,
    sa.Column("golden_id", sa.Text, primary_key=True),
    sa.Column("aspect", sa.Text, primary_key=True),
    sa.Column("entry_key", sa.Text, primary_key=True),
    sa.Column("parent_key", sa.Text),
    *_value_columns(),
    sa.Column("providers", sa.Text),  # every connector that holds the entry, comma-separated
    sa.Column("connector", sa.Text),  # the one whose values won
    comment="merged multi-valued aspect entries of each golden record",
)

golden_entry_sources = sa.Table(
    "golden_entry_sources",
    metadata,
    sa.Column("golden_id", sa.Text, primary_key=True),
    sa.Column("aspect", sa.Text, primary_key=True),
    sa.Column("entry_key", sa.Text, primary_key=True),
    sa.Column("connector", sa.Text, primary_key=True),
    sa.Column("source_id", sa.Text),
    sa.Column("seen_at", sa.DateTime(timezone=True)),
    comment="which connector holds each golden entry and when it last saw it",
)

# one row per golden record and source record that gave it fields (not one per field:
# a record's fields mostly come from one or two sources, a third of the rows)
golden_field_origins = sa.Table(
    "golden_field_origins",
    metadata,
    sa.Column("golden_id", sa.Text, primary_key=True),
    sa.Column("connector", sa.Text, primary_key=True),
    sa.Column("source_id", sa.Text, primary_key=True),
    sa.Column("fields", sa.Text, nullable=False),  # the fields it gave, comma-separated
    comment="which connector and record gave each golden field its value",
)
# the table of one row per field it replaced: dropped when the state DB is brought up to date
RETIRED_TABLES = ("golden_field_sources",)


def _row_hashes(rows: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per entry, of its values as text: the same whether the entry was
    just built or read back from the state DB."""
    return strings_hash(rows, ENTRY_COLUMNS, missing="\x00")


def replace_source_entries(engine: Engine, connector: str, entries: pd.DataFrame) -> int:
    """Store one connector's entries (full snapshot semantics, like its source records);
    a snapshot with the same entries as the stored one writes nothing."""
    rows = conform_entries(entries)
    rows = rows[rows["entry_key"].notna()].drop_duplicates(list(KEY_COLUMNS[:4]))
    name = f"source_entries:{connector}"
    hashes = _row_hashes(rows)
    digest = hashes_digest(hashes)
    if digest == stored_digest(engine, name):
        return len(rows)
    # only the records whose entries changed are rewritten (and queued for the merge)
    c = source_entries.c
    stored = read_frame(
        engine,
        sa.select(*[c[k] for k in ENTRY_COLUMNS]).where(c.connector == connector),
        sparse=True,
    )
    new = _record_hashes(rows, hashes)
    if len(stored):
        stored = conform_entries(stored)
        old = _record_hashes(stored, _row_hashes(stored))
    else:
        old = new.iloc[:0]
    ids = new.index.union(old.index)
    differs = (new.reindex(ids) != old.reindex(ids)).fillna(True).to_numpy(dtype=bool)
    changed = ids[differs].astype(str).tolist()
    with engine.begin() as conn:
        delete_in(conn, source_entries, "source_id", changed, c.connector == connector)
        fresh = rows[rows["source_id"].astype(str).isin(changed).to_numpy()]
        insert_frame(conn, source_entries, fresh[list(ENTRY_COLUMNS)])
        save_digest(conn, name, digest)
        if changed:
            bump_stamp(conn, SOURCE_STAMP)
            queue_changed(conn, connector, changed)
    return len(rows)


def _record_hashes(rows: pd.DataFrame, hashes: np.ndarray) -> pd.Series:
    """source_id -> an order-free digest of its entries (``hashes``: their row hashes)."""
    codes, ids = pd.factorize(rows["source_id"].astype(str))
    sums = np.zeros(len(ids), dtype=np.uint64)
    np.add.at(sums, codes, hashes)
    return pd.Series(sums, index=pd.Index(ids, dtype=object), dtype="UInt64")


# a pull of up to this many records reads only the stored entries that may be its own;
# a bigger one reads the connector's entries whole (one scan instead of many)
SCOPED_READ_MAX = 50_000


def _entries_in_scope(
    engine: Engine, connector: str, scope: set[str]
) -> tuple[pd.DataFrame, set[str]]:
    """The stored entries of ``connector`` that may have come from a record in ``scope``
    (their source id, parent or local id is one), and which ids among ``scope`` and their
    parent and local ids are records of the connector (stored, with entries, or pulled)."""
    c = source_entries.c
    columns = [c[k] for k in ENTRY_COLUMNS]
    mine = c.connector == connector
    if len(scope) > SCOPED_READ_MAX:
        stored = read_frame(engine, sa.select(*columns).where(mine), sparse=True)
        stored = conform_entries(stored) if len(stored) else stored
        known = scope | set(stored["source_id"].astype(str)) | source_record_ids(engine, connector)
        return stored, known
    # one statement per id column, each answered by its index (an OR of the three scans
    # every entry of the connector)
    parts = [
        part
        for col in ("source_id", *LOCAL_COLUMNS)
        for ids in one_of(engine.dialect.name, c[col], sorted(scope))
        if len(part := _read_frame(engine, sa.select(*columns).where(mine, ids)))
    ]
    stored = (
        pd.concat(parts, ignore_index=True).drop_duplicates(list(KEY_COLUMNS[:4]))
        if parts
        else pd.DataFrame()
    )
    if not len(stored):
        return stored, set(scope)
    stored = conform_entries(stored).reset_index(drop=True)
    # which of the ids these entries name are records of the connector
    named = sorted(
        set(stored["parent_local_id"].dropna().astype(str))
        | set(stored["local_id"].dropna().astype(str))
    )
    known = set(scope) | set(stored["source_id"].astype(str))
    r = source_records.c
    with engine.connect() as conn:
        for ids in one_of(conn.dialect.name, r.source_id, named):
            known.update(
                conn.execute(sa.select(r.source_id).where(r.connector == connector, ids)).scalars()
            )
        for ids in one_of(conn.dialect.name, c.source_id, named):
            known.update(conn.execute(sa.select(c.source_id).distinct().where(mine, ids)).scalars())
    return stored, known


def upsert_source_entries(
    engine: Engine,
    connector: str,
    entries: pd.DataFrame,
    record_ids: Iterable[str],
    deleted_ids: Iterable[str] = (),
) -> int:
    """Store the entries of an incremental pull: the stored entries that came from a record
    of this pull (``record_ids``) or from a deleted one are replaced by ``entries``; the
    connector's other entries stay.

    An entry came from the record named by its ``parent_local_id`` or ``local_id`` when that
    is a record of the connector (a Salesforce Contact gives a contact person of its
    Account), else from its own ``source_id``: an Account pulled alone keeps its contact
    persons, a Contact pulled alone replaces only its own."""
    rows = conform_entries(entries)
    rows = rows[rows["entry_key"].notna()].drop_duplicates(list(KEY_COLUMNS[:4]))
    scope = {str(i) for i in record_ids} | {str(i) for i in deleted_ids}
    pk = list(KEY_COLUMNS[1:4])
    c = source_entries.c
    stored, known = _entries_in_scope(engine, connector, scope)
    if len(stored):
        parent, local = stored["parent_local_id"], stored["local_id"]
        origin = parent.where(
            parent.isin(known), local.where(local.isin(known), stored["source_id"])
        )
        before = stored[origin.isin(scope).to_numpy()]
        replaced = before[pk].astype(str)
        same = len(before) == len(rows)
        if same and hashes_digest(_row_hashes(before)) == hashes_digest(_row_hashes(rows)):
            return len(rows)  # the pull's records give the entries already stored
    else:
        replaced = rows[pk].iloc[:0].astype(str)
        if not len(rows):
            return 0
    parts = [p for p in (replaced, rows[pk].astype(str)) if len(p)]
    doomed = pd.concat(parts, ignore_index=True).drop_duplicates() if parts else replaced
    by_key = source_entries.delete().where(
        c.connector == connector,
        c.source_id == sa.bindparam("b_sid"),
        c.aspect == sa.bindparam("b_aspect"),
        c.entry_key == sa.bindparam("b_key"),
    )
    params = [
        {"b_sid": s, "b_aspect": a, "b_key": k}
        for s, a, k in doomed.astype(str).itertuples(index=False, name=None)
    ]
    with engine.begin() as conn:
        if params:
            conn.execute(by_key, params)
        insert_frame(conn, source_entries, rows[list(ENTRY_COLUMNS)])
        # the snapshot digest no longer describes what is stored
        save_digest(conn, f"source_entries:{connector}", "")
        bump_stamp(conn, SOURCE_STAMP)
        queue_changed(conn, connector, [*doomed["source_id"], *rows["source_id"]])
    return len(rows)


def load_source_entries(
    engine: Engine,
    connectors: Iterable[str] | None = None,
    arrow_text: bool = False,
    keys: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The stored aspect entries (of ``connectors``; of the records ``keys`` names, when
    given); ``arrow_text``: text as Arrow-backed strings (millions of entries in a
    fraction of the memory; see ``bulk.read_frame``)."""
    stmt = sa.select(source_entries)
    if connectors is not None:
        stmt = stmt.where(source_entries.c.connector.in_(list(connectors)))
    if keys is not None:
        return conform_entries(read_keyed(engine, stmt, source_entries, keys, arrow_text))
    return conform_entries(read_frame(engine, stmt, arrow_text=arrow_text, sparse=True))


def load_golden_entries(engine: Engine, golden_ids: Iterable[str] | None = None) -> pd.DataFrame:
    stmt = sa.select(golden_entries)
    if golden_ids is None:
        frame = read_frame(engine, stmt, sparse=True)
    else:
        ids = sorted(set(golden_ids))
        parts = [
            stmt.where(p) for p in one_of(engine.dialect.name, golden_entries.c.golden_id, ids)
        ]
        frame = _read_frame(engine, parts or [stmt.where(sa.false())])
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype="string") for c in GOLDEN_ENTRY_COLUMNS})
    for c in GOLDEN_ENTRY_COLUMNS:
        if c != "size":
            frame[c] = frame[c].astype("string")
    frame["size"] = pd.to_numeric(frame["size"], errors="coerce")
    return frame[list(GOLDEN_ENTRY_COLUMNS)]


def entry_counts(engine: Engine) -> tuple[dict[str, int], dict[str, int]]:
    """Golden entries per aspect, and those held by several connectors, counted in SQL."""
    c = golden_entries.c
    several = sa.func.sum(sa.case((c.providers.like("%,%"), 1), else_=0))
    stmt = sa.select(c.aspect, sa.func.count(), several).group_by(c.aspect)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return {a: int(n) for a, n, _ in rows}, {a: int(m or 0) for a, _, m in rows}


def nameless_count(engine: Engine) -> tuple[int, int]:
    """(golden records with no first name, last name or company name, all golden records),
    counted in SQL (``domain.quality.nameless_golden`` on a frame)."""
    g = golden_records.c
    none = sa.and_(g.first_name.is_(None), g.last_name.is_(None), g.company_name.is_(None))
    stmt = sa.select(sa.func.sum(sa.case((none, 1), else_=0)), sa.func.count())
    with engine.connect() as conn:
        nameless, total = conn.execute(stmt).one()
    return int(nameless or 0), int(total)


def entries_without_provenance_count(engine: Engine) -> int:
    """Golden entries no connector is recorded as holding, counted in SQL
    (``domain.quality.entries_without_provenance`` on frames)."""
    e, s = golden_entries.c, golden_entry_sources.c
    held = (
        sa.select(s.golden_id)
        .where(s.golden_id == e.golden_id, s.aspect == e.aspect, s.entry_key == e.entry_key)
        .correlate(golden_entries)
        .exists()
    )
    stmt = sa.select(sa.func.count()).select_from(golden_entries).where(~held)
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar() or 0)


def load_entry_sources(engine: Engine) -> pd.DataFrame:
    return _read_frame(engine, sa.select(golden_entry_sources))


def save_golden_aspects(
    engine: Engine,
    golden_ids: list[str],
    entries: pd.DataFrame,
    entry_sources: pd.DataFrame,
    field_sources: pd.DataFrame,
) -> None:
    """Rewrite the entries, entry sources and field sources of ``golden_ids`` (the changed
    and retired ones) in one transaction."""
    ids = set(golden_ids)
    tables = (
        (golden_entries, entries, GOLDEN_ENTRY_COLUMNS),
        (golden_entry_sources, entry_sources, ENTRY_SOURCE_COLUMNS),
        (golden_field_origins, field_origins(field_sources), ORIGIN_COLUMNS),
    )
    with engine.begin() as conn:
        for table, frame, cols in tables:
            delete_in(conn, table, "golden_id", sorted(ids))
            if frame is not None and not frame.empty:
                rows = frame[frame["golden_id"].isin(ids)]
                insert_frame(conn, table, rows[list(cols)])


ORIGIN_COLUMNS = ("golden_id", "connector", "source_id", "fields")


def field_origins(field_sources: pd.DataFrame | None) -> pd.DataFrame | None:
    """(golden_id, field, connector, source_id) rows -> one row per golden id and source
    with the fields it gave, sorted and comma-separated.

    Each source's fields as a bit set over the sorted field names, or-ed per source over
    integer codes (no sort of millions of strings); the few distinct sets are then
    spelled out once each."""
    if field_sources is None or field_sources.empty:
        return None
    cols = ["golden_id", "connector", "source_id"]
    # a missing source id (none is expected) must not drop the row from the key
    text = (
        field_sources[[*cols, "field"]].astype("string").fillna({"connector": "", "source_id": ""})
    )
    names = np.array(sorted(text["field"].dropna().unique()), dtype=object)
    key = np.zeros(len(text), dtype=np.int64)
    span = 1
    for col in cols:
        codes, distinct = distinct_text(text[col])
        if span * (len(distinct) + 1) >= 2**62 or len(names) > 62:
            return _field_origins_sorted(text)  # codes that do not fit one integer
        key = key * (len(distinct) + 1) + (codes + 1)
        span *= len(distinct) + 1
    rank = pd.Index(names).get_indexer(text["field"])
    bits = np.where(rank >= 0, np.left_shift(1, np.maximum(rank, 0)), 0).astype(np.int64)
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    masks = np.bitwise_or.reduceat(bits[order], starts)
    codes, distinct = pd.factorize(masks)
    spelled = np.array(
        [",".join(names[[(m >> i) & 1 == 1 for i in range(len(names))]]) for m in distinct],
        dtype=object,
    )
    out = text.iloc[order[starts]][cols].reset_index(drop=True)
    out["fields"] = pd.array(spelled[codes], dtype="string")
    return out


def _field_origins_sorted(text: pd.DataFrame) -> pd.DataFrame:
    cols = ["golden_id", "connector", "source_id", "field"]
    rows = pa.Table.from_pandas(text.sort_values(cols), preserve_index=False)
    grouped = rows.group_by(cols[:3], use_threads=False).aggregate([("field", "list")])
    fields = pc.binary_join(grouped.column("field_list"), ",")
    return grouped.drop_columns(["field_list"]).append_column("fields", fields).to_pandas()


def _fields_of(origins: pd.DataFrame) -> pd.DataFrame:
    """Stored origins -> one row per field: golden_id, field, connector, source_id."""
    cols = ["golden_id", "field", "connector", "source_id"]
    if origins.empty:
        return pd.DataFrame({c: pd.Series(dtype="string") for c in cols})
    out = origins.assign(field=origins["fields"].str.split(",")).explode("field")
    return out[cols].sort_values("field").reset_index(drop=True)


def consent_sources(engine: Engine, golden_ids: Iterable[str] | None) -> pd.DataFrame:
    """golden_id, field, connector, source_id of the record each stored consent of
    ``golden_ids`` (every golden id when None) came from."""
    t = golden_field_origins
    stmt = sa.select(t).where(t.c.fields.like("%consent%"))
    if golden_ids is None:
        frame = _read_frame(engine, stmt)
    else:
        ids = sorted({str(g) for g in golden_ids})
        frame = _read_frame(
            engine,
            [stmt.where(t.c.golden_id.in_(p)) for p in chunks(ids)] or [stmt.where(sa.false())],
        )
    out = _fields_of(frame)
    return out[out["field"].isin(list(CONSENT_TIMES))].reset_index(drop=True)


def golden_history(engine: Engine, golden_id: str) -> pd.DataFrame:
    """Every change event of one golden id in the order written (a golden id retired and
    created again starts at version 1 anew: its events follow the first life's); its
    creation as the values it was created with, one row per field and entry
    (``domain.golden.first_version``)."""
    stmt = (
        sa.select(golden_events)
        .where(golden_events.c.golden_id == golden_id)
        .order_by(golden_events.c.id)
    )
    events = _read_frame(engine, stmt)
    if not (events["field"] == CREATED).any():
        return events
    current = load_golden_records(engine, [golden_id])
    origins = _fields_of(
        _read_frame(
            engine,
            sa.select(golden_field_origins).where(golden_field_origins.c.golden_id == golden_id),
        )
    )
    return first_version(events, current, load_golden_entries(engine, [golden_id]), origins)


def golden_sources(engine: Engine, golden_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Which connector gave each field of ``golden_id``, and its entries with every holder."""
    fields = _fields_of(
        _read_frame(
            engine,
            sa.select(golden_field_origins).where(golden_field_origins.c.golden_id == golden_id),
        )
    )
    entries = _read_frame(
        engine,
        sa.select(
            golden_entries.c.aspect,
            golden_entries.c.entry_key,
            golden_entries.c.parent_key,
            *[golden_entries.c[c] for c in VALUE_COLUMNS],
            golden_entries.c.providers,
            golden_entry_sources.c.connector,
            golden_entry_sources.c.source_id,
            golden_entry_sources.c.seen_at,
        )
        .join(
            golden_entry_sources,
            sa.and_(
                golden_entries.c.golden_id == golden_entry_sources.c.golden_id,
                golden_entries.c.aspect == golden_entry_sources.c.aspect,
                golden_entries.c.entry_key == golden_entry_sources.c.entry_key,
            ),
        )
        .where(golden_entries.c.golden_id == golden_id)
        .order_by(golden_entries.c.aspect, golden_entries.c.entry_key),
    )
    return fields, entries
