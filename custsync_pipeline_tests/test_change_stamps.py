"""Only what changed is written, and a stamp says when anything did: the source records and
entries a lane stores, on a real SQLite file and a real PostgreSQL. The identity and golden
steps skip their work on an unchanged stamp (``test_multiprocess_pg.py`` runs that)."""

import pandas as pd
import sqlalchemy as sa

from custsync_pipeline.domain.aspects import entries_from_canonical, key_entries
from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.store import core
from custsync_pipeline.store import golden as golden_store
from custsync_pipeline.store.bulk import table_stamp


def _records() -> pd.DataFrame:
    return conform(
        pd.DataFrame(
            {
                "connector": ["crm"] * 3,
                "source_id": ["1", "2", "3"],
                "first_name": ["Anna", "Bo", "Cecilia"],
                "email": ["a@x.se", "b@x.se", None],
                "city": ["Lund", "Umeå", "Visby"],
                "updated_at": pd.to_datetime(["2024-01-01T10:00:00Z"] * 3),
            }
        )
    )


def _seen(engine) -> dict[str, object]:
    c = core.source_records.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(c.source_id, c.last_seen_at).where(c.connector == "crm"))
        return dict(rows.all())


def test_snapshot_writes_only_changed_rows_and_stamps_changes(engine) -> None:
    frame = _records()
    assert table_stamp(engine, core.SOURCE_STAMP) == ""
    core.replace_source_records(engine, "crm", frame)
    first = table_stamp(engine, core.SOURCE_STAMP)
    seen = _seen(engine)
    assert first and len(seen) == 3

    # the same snapshot again: nothing written, the stamp stays
    assert core.replace_source_records(engine, "crm", frame) == 3
    assert table_stamp(engine, core.SOURCE_STAMP) == first
    assert _seen(engine) == seen

    # one row changed: only it is rewritten, the stamp moves
    edited = frame.copy()
    edited.loc[edited["source_id"] == "2", "city"] = "Kiruna"
    core.replace_source_records(engine, "crm", edited)
    second = table_stamp(engine, core.SOURCE_STAMP)
    assert second != first
    now_seen = _seen(engine)
    assert now_seen["1"] == seen["1"] and now_seen["3"] == seen["3"]
    assert now_seen["2"] != seen["2"]
    back = core.load_source_records(engine, ["crm"]).set_index("source_id")
    assert back.loc["2", "city"] == "Kiruna"

    # a record gone from the snapshot is deleted, and that is a change too
    core.replace_source_records(engine, "crm", edited[edited["source_id"] != "3"])
    assert set(_seen(engine)) == {"1", "2"}
    third = table_stamp(engine, core.SOURCE_STAMP)
    assert third != second

    # an incremental pull that re-reads an unchanged row changes nothing ...
    assert core.upsert_source_records(engine, "crm", edited.iloc[:1]) == (1, 0)
    assert table_stamp(engine, core.SOURCE_STAMP) == third
    # ... a delete in its feed does
    assert core.upsert_source_records(engine, "crm", edited.iloc[:0], ["2"]) == (0, 1)
    assert set(_seen(engine)) == {"1"}
    assert table_stamp(engine, core.SOURCE_STAMP) != third


def test_entries_snapshot_rewritten_only_when_it_changed(engine) -> None:
    frame = _records()
    entries = key_entries(entries_from_canonical(frame, ["customer_contact_details"]))
    assert len(entries) >= 2
    golden_store.replace_source_entries(engine, "crm", entries)
    first = table_stamp(engine, core.SOURCE_STAMP)
    assert first

    golden_store.replace_source_entries(engine, "crm", entries.copy())
    assert table_stamp(engine, core.SOURCE_STAMP) == first

    fewer = entries.iloc[1:]
    golden_store.replace_source_entries(engine, "crm", fewer)
    assert table_stamp(engine, core.SOURCE_STAMP) != first
    assert len(golden_store.load_source_entries(engine, ["crm"])) == len(fewer)

    # an incremental pull giving the stored entries of its records again changes nothing
    stamp = table_stamp(engine, core.SOURCE_STAMP)
    ids = fewer["source_id"].astype(str)
    golden_store.upsert_source_entries(engine, "crm", fewer, ids)
    assert table_stamp(engine, core.SOURCE_STAMP) == stamp
    # and the full snapshot it came from is stored again after an incremental change
    golden_store.upsert_source_entries(engine, "crm", fewer.iloc[:0], ids)
    assert golden_store.load_source_entries(engine, ["crm"]).empty
    golden_store.replace_source_entries(engine, "crm", fewer)
    assert len(golden_store.load_source_entries(engine, ["crm"])) == len(fewer)
