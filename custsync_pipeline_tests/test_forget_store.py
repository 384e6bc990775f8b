"""Erasure in the state DB (``store.forget``) on a real SQLite file and the real PostgreSQL
server: one person's rows leave every table, everyone else's stay."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline.store.forget import find_person, forget_person
from custsync_pipeline.store.quarantine import record_quarantine
from custsync_pipeline_tests.test_identity_cli import ROWS, gid_of, resolve


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path) -> Engine:  # noqa: ANN001
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    else:
        url = request.getfixturevalue("pg_url")  # a fresh database of its own
    db = StateDB(url).create_all()
    frame = conform(pd.DataFrame(ROWS))
    for connector, part in frame.groupby("connector"):
        core.replace_source_records(db.engine, connector, part)
    yield db.engine
    db.engine.dispose()


def _count(engine: Engine, table: str, where: str, **params: object) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {where}"), params).scalar()


def test_forget_removes_one_person_from_every_table_and_keeps_the_others(engine) -> None:
    result = resolve(engine)
    johanna = gid_of(result, "crm", "003A")
    erik = gid_of(result, "crm", "003B")
    rejected = pd.DataFrame(
        {
            "connector": "shop",
            "source_id": [None],
            "field": "source_id",
            "check": "not_null",
            "severity": "row",
            "reason": "source_id is required but missing",
            "raw_payload": ['{"mail": "johanna@gmail.com"}'],
        }
    )
    record_quarantine(engine, "shop", rejected)

    person = find_person(engine, johanna)
    assert person.golden_ids == {johanna}
    assert {("crm", "003A"), ("loyalty", "V1")} <= person.records
    removed = forget_person(engine, person)
    assert removed["source_records"] >= 2 and removed["identity_map"] >= 2
    assert removed["quarantine"] == 1 and removed["golden_ids"] >= 1

    assert _count(engine, "identity_map", "golden_id = :g", g=johanna) == 0
    assert _count(engine, "golden_ids", "golden_id = :g", g=johanna) == 0
    assert _count(engine, "source_records", "source_id IN ('003A', 'V1')") == 0
    assert _count(engine, "quarantine", "raw_payload LIKE '%johanna%'") == 0
    # the others stay: Erik's records, his golden id
    assert _count(engine, "identity_map", "golden_id = :g", g=erik) >= 1
    assert _count(engine, "source_records", "source_id IN ('003B', '003C')") == 2
    # asked again: nothing left to remove
    assert forget_person(engine, find_person(engine, johanna)) == {}


def test_forget_of_a_merged_away_id_erases_the_whole_person(engine) -> None:
    from custsync_pipeline.store.identity import set_decision

    first = resolve(engine)
    g_erik, g_lisa = gid_of(first, "crm", "003B"), gid_of(first, "crm", "003C")
    assert g_erik != g_lisa
    set_decision(engine, "must_link", ("crm", "003B"), ("crm", "003C"))
    second = resolve(engine, "2026-01-02")
    survivor = gid_of(second, "crm", "003B")
    absorbed = ({g_erik, g_lisa} - {survivor}).pop()

    person = find_person(engine, absorbed)  # the id the erasure request names
    assert person.golden_ids == {survivor, absorbed}
    assert person.records == {("crm", "003B"), ("crm", "003C")}
    removed = forget_person(engine, person)
    assert removed["steward_decisions"] == 1
    for gid in (survivor, absorbed):
        assert _count(engine, "golden_ids", "golden_id = :g OR merged_into = :g", g=gid) == 0
    assert _count(engine, "source_records", "source_id IN ('003B', '003C')") == 0
    assert _count(engine, "source_records", "source_id = '003A'") == 1
