"""Erasure: remove one person from every table of the state DB (``custsync forget``).

A person is a golden id: the live one it resolves to, every id merged into it,
and the source records the identity map gives them. Tables are found by
reflection, so a table added later is covered as soon as it carries one of the
columns below: a golden id column (``golden_id``, ``golden_id_a``/``_b``,
``merged_into``) or a (connector, source id) pair (``connector``/``source_id``,
``connector_a``/``source_id_a``, ``connector_b``/``source_id_b``); a ``raw_payload``
text (the quarantine's, of a row rejected before it had an id) that holds one of their
e-mail addresses, phone numbers or source ids goes too. One transaction: either the person is gone from every table or
from none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from custsync_pipeline.store.bulk import table_digests

GOLDEN_ID_COLUMNS = ("golden_id", "golden_id_a", "golden_id_b", "merged_into")
SOURCE_PAIRS = (
    ("connector", "source_id"),
    ("connector_a", "source_id_a"),
    ("connector_b", "source_id_b"),
)
# payload texts (the quarantine's raw_payload) are searched for the person's contacts and ids
PAYLOAD_COLUMN = "raw_payload"
CONTACT_COLUMNS = ("email", "email_raw", "phone", "phone_raw")
_CHUNK = 400  # records per statement: far under every bind-parameter limit


@dataclass
class Person:
    """What the state DB knows of one person: golden ids and member records."""

    golden_ids: set[str] = field(default_factory=set)
    records: set[tuple[str, str]] = field(default_factory=set)
    # e-mail addresses and phone numbers as their records hold them (for payload texts)
    contacts: set[str] = field(default_factory=set)

    @property
    def id_parts(self) -> list[tuple[str, ...]]:
        """Each source id as the values a raw payload holds it in (``u123|SE01`` -> both parts)."""
        return sorted({tuple(p for p in sid.split("|") if p) for _, sid in self.records})


def _tables(engine: Engine) -> dict[str, sa.Table]:
    meta = sa.MetaData()
    meta.reflect(engine)
    return dict(meta.tables)


def find_person(engine: Engine, golden_id: str) -> Person:
    """The live golden id of ``golden_id`` (a merged-away id resolves to its survivor), the ids
    merged into it and its member records (none when the state DB never knew the id)."""
    tables = _tables(engine)
    person = Person(golden_ids={golden_id})
    with engine.connect() as conn:
        if "golden_ids" in tables:
            ids = tables["golden_ids"]
            live, seen = golden_id, set()
            while live not in seen:  # follow merged_into to the survivor (a cycle stops it)
                seen.add(live)
                nxt = conn.execute(
                    sa.select(ids.c.merged_into).where(ids.c.golden_id == live)
                ).scalar_one_or_none()
                if not nxt:
                    break
                live = nxt
            frontier = {live}
            person.golden_ids = {live}
            while frontier:  # every id absorbed into it, transitively
                rows = conn.execute(
                    sa.select(ids.c.golden_id).where(ids.c.merged_into.in_(sorted(frontier)))
                ).scalars()
                frontier = set(rows) - person.golden_ids
                person.golden_ids |= frontier
        if "identity_map" in tables and person.golden_ids:
            imap = tables["identity_map"]
            rows = conn.execute(
                sa.select(imap.c.connector, imap.c.source_id).where(
                    imap.c.golden_id.in_(sorted(person.golden_ids))
                )
            ).all()
            person.records = {(str(c), str(s)) for c, s in rows}
        if "source_records" in tables and person.records:
            src = tables["source_records"]
            cols = [c for c in CONTACT_COLUMNS if c in src.c]
            for start in range(0, len(person.records), _CHUNK):
                chunk = sorted(person.records)[start : start + _CHUNK]
                match = sa.or_(
                    *(sa.and_(src.c.connector == c, src.c.source_id == i) for c, i in chunk)
                )
                for row in conn.execute(sa.select(*(src.c[c] for c in cols)).where(match)):
                    person.contacts |= {str(v) for v in row if v and len(str(v).strip()) >= 6}
    return person


def forget_person(engine: Engine, person: Person) -> dict[str, int]:
    """Delete the person's rows from every table; rows removed per table (only tables with some)."""
    removed: dict[str, int] = {}
    if not person.golden_ids and not person.records:
        return removed
    gids = sorted(person.golden_ids)
    records = sorted(person.records)
    with engine.begin() as conn:
        for name, table in _tables(engine).items():
            cols = table.c
            count = 0
            for col in GOLDEN_ID_COLUMNS:
                if col in cols and gids:
                    count += conn.execute(table.delete().where(cols[col].in_(gids))).rowcount or 0
            for conn_col, id_col in SOURCE_PAIRS:
                if conn_col not in cols or id_col not in cols:
                    continue
                for start in range(0, len(records), _CHUNK):
                    chunk = records[start : start + _CHUNK]
                    match = sa.or_(
                        *(sa.and_(cols[conn_col] == c, cols[id_col] == s) for c, s in chunk)
                    )
                    count += conn.execute(table.delete().where(match)).rowcount or 0
            if PAYLOAD_COLUMN in cols:  # a rejected row without an id still names them inside
                for text in sorted(_payload_needles(person)):
                    like = (
                        "%"
                        + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                        + "%"
                    )
                    count += (
                        conn.execute(
                            table.delete().where(cols[PAYLOAD_COLUMN].like(like, escape="\\"))
                        ).rowcount
                        or 0
                    )
            if count:
                removed[name] = count
        # every stored digest and stamp described tables that just lost rows: the next run
        # recomputes and rewrites whatever it derives
        table_digests.create(conn, checkfirst=True)
        conn.execute(table_digests.delete())
    return removed


def _payload_needles(person: Person) -> set[str]:
    """Texts that name the person inside a stored payload: contacts and specific source ids
    (six characters or more: a short id such as "12" would match strangers)."""
    ids = {sid for _, sid in person.records if len(sid) >= 6}
    return person.contacts | ids
