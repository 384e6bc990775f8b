"""The store side of incremental pulls on SQLite and PostgreSQL: source records upserted and
deleted ids removed; aspect entries replaced only for the records a pull returned — a
Salesforce Account pulled alone keeps the contact persons its Contacts give it, a Contact
pulled alone replaces only its own contact-person entry, a deleted Contact's entry leaves;
whether the pull's stored entries are found by its ids (a small pull) or in the whole set.
"""

from __future__ import annotations

import pandas as pd
import pytest

from custsync_pipeline.store import core
from custsync_pipeline.store import golden as golden_store
from custsync_pipeline.store.golden import (
    load_source_entries,
    replace_source_entries,
    upsert_source_entries,
)

C = "salesforce"


@pytest.fixture(autouse=True, params=["scoped", "whole"])
def entries_read(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of finding a pull's stored entries: only those it may own (a small pull),
    and the connector's whole set (a big one)."""
    if request.param == "whole":
        monkeypatch.setattr(golden_store, "SCOPED_READ_MAX", 0)
    return request.param


def _records(ids: list[str], name: str = "Ann") -> pd.DataFrame:
    now = pd.Timestamp("2026-11-01", tz="UTC")
    return pd.DataFrame({"connector": C, "source_id": ids, "first_name": name, "updated_at": now})


def _entry(source_id: str, aspect: str, key: str, local=None, parent=None, **values):
    return {
        "connector": C,
        "source_id": source_id,
        "aspect": aspect,
        "entry_key": key,
        "parent_key": None,
        "local_id": local,
        "parent_local_id": parent,
        **values,
    }


def _keys(engine) -> set[tuple[str, str]]:
    stored = load_source_entries(engine, [C])
    return set(zip(stored["source_id"], stored["entry_key"], strict=True))


def test_an_incremental_pull_replaces_the_entries_of_its_records_only(engine) -> None:
    # Account A1 with a billing address; Contacts C1 (with an e-mail detail) and C2 (none
    # of its own) are contact persons of A1
    core.replace_source_records(engine, C, _records(["A1", "C1", "C2"]))
    replace_source_entries(
        engine,
        C,
        pd.DataFrame(
            [
                _entry("A1", "addresses", "addr-1", local="billing", city="Lund"),
                _entry("A1", "contact_persons", "cp-c1", local="C1", last_name="Berg"),
                _entry("A1", "contact_person_contact_details", "cpd-c1", parent="C1"),
                _entry("A1", "contact_persons", "cp-c2", local="C2", last_name="Holm"),
                _entry("C1", "customer_contact_details", "em-c1", local="email"),
            ]
        ),
    )

    # the Account alone, with a new address: its contact persons stay
    stored, removed = core.upsert_source_records(engine, C, _records(["A1"], "Acme"))
    assert (stored, removed) == (1, 0)
    upsert_source_entries(
        engine,
        C,
        pd.DataFrame([_entry("A1", "addresses", "addr-2", local="billing", city="Malmö")]),
        ["A1"],
    )
    assert _keys(engine) == {
        ("A1", "addr-2"),
        ("A1", "cp-c1"),
        ("A1", "cpd-c1"),
        ("A1", "cp-c2"),
        ("C1", "em-c1"),
    }

    # Contact C1 alone, renamed: its own contact person of A1 is replaced, C2's stays
    upsert_source_entries(
        engine,
        C,
        pd.DataFrame(
            [
                _entry("A1", "contact_persons", "cp-c1b", local="C1", last_name="Berg-Ek"),
                _entry("C1", "customer_contact_details", "em-c1", local="email"),
            ]
        ),
        ["C1"],
    )
    assert _keys(engine) == {
        ("A1", "addr-2"),
        ("A1", "cp-c1b"),
        ("A1", "cp-c2"),
        ("C1", "em-c1"),
    }

    # C2 deleted: its record and its contact person leave, the rest stays
    stored, removed = core.upsert_source_records(engine, C, _records([]), ["C2", "X9"])
    assert (stored, removed) == (0, 1)
    upsert_source_entries(engine, C, pd.DataFrame(), [], ["C2", "X9"])
    assert _keys(engine) == {("A1", "addr-2"), ("A1", "cp-c1b"), ("C1", "em-c1")}
    records = core.load_source_records(engine, [C]).set_index("source_id")
    assert sorted(records.index) == ["A1", "C1"]
    assert records.loc["A1", "first_name"] == "Acme"


def test_an_incremental_pull_keeps_entries_of_the_stored_records_they_name(engine) -> None:
    """An entry of an incremental pull may belong to a stored record the pull did not
    return (a Contact pulled alone is a contact person of its stored Account): it is kept;
    one naming a record that is not stored, or that this pull deletes, is not."""
    from custsync_pipeline.defs.extract.pulls import INCREMENTAL, Pull, entry_source_ids
    from custsync_pipeline.domain.canonical import conform

    stored = conform(pd.DataFrame({"connector": "crm", "source_id": ["acc1", "acc2", "acc3"]}))
    core.replace_source_records(engine, "crm", stored)
    valid = pd.DataFrame({"source_id": ["c9"]})
    entries = pd.DataFrame({"source_id": ["acc1", "ghost", "acc2", "c9", None]})
    pull = Pull(mode=INCREMENTAL, deleted_ids=["acc2"])
    assert entry_source_ids(engine, "crm", pull, valid, entries).tolist() == ["acc1", "c9"]
    # a snapshot's entries belong to its own records only
    assert entry_source_ids(engine, "crm", Pull(), valid, entries).tolist() == ["c9"]


def test_the_ids_an_entry_names_are_indexed_also_in_an_older_state_db(engine, entries_read) -> None:
    """A small pull finds its stored entries by source id, parent and local id, each by an
    index (one OR of the three read every entry of the connector); a state DB made before
    the partial indexes existed gets them when it is brought up to date."""
    import sqlalchemy as sa

    from custsync_pipeline.store import db

    url = engine.url.render_as_string(hide_password=False)
    with engine.begin() as conn:
        for name in ("ix_source_entries_local_id", "ix_source_entries_parent_local_id"):
            conn.execute(sa.text(f"DROP INDEX {name}"))
    db._up_to_date.clear()
    db.StateDB(url).create_all()
    indexes = {i["name"]: i for i in sa.inspect(engine).get_indexes("source_entries")}
    for col in ("local_id", "parent_local_id"):
        assert indexes[f"ix_source_entries_{col}"]["column_names"] == ["connector", col]
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            plan = conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT * FROM source_entries "
                "WHERE connector = 'crm' AND parent_local_id IN ('a', 'b')"
            ).all()
        assert "ix_source_entries_parent_local_id" in " ".join(str(r) for r in plan)
    # the scoped read still finds an entry by the record it names
    core.replace_source_records(engine, C, _records(["A1", "C1"]))
    replace_source_entries(
        engine,
        C,
        pd.DataFrame(
            [
                _entry("A1", "addresses", "billing", city="Lund"),
                _entry("C1", "contact_persons", "C1", local="C1", parent="A1", first_name="Bo"),
            ]
        ),
    )
    statements: list[tuple[str, object]] = []

    def seen(_conn, _cursor, statement, parameters, _context, _many) -> None:
        if "FROM source_entries" in statement:
            statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        stored, known = golden_store._entries_in_scope(engine, C, {"A1"})
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert set(stored["entry_key"]) == {"billing", "C1"}
    assert {"A1", "C1"} <= known
    # every read of the entries is answered by an index on the ids it looks for (SQLite's
    # planner: PostgreSQL's picks by cost, and a table this small it would scan anyway)
    if entries_read == "whole":  # a big pull reads the connector's entries in one scan
        return
    assert statements and not any(" OR " in s for s, _ in statements)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            for statement, parameters in statements:
                plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
                text = " ".join(str(r) for r in plan)
                assert "USING" in text and ("source_id=?" in text or "local_id=?" in text), text
