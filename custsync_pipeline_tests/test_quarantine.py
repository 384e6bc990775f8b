"""The quarantine table on a real SQLite file and on the real PostgreSQL server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.domain.normalize import normalize_customers
from custsync_pipeline.domain.validate import validate_customers
from custsync_pipeline.store.db import StateDB
from custsync_pipeline.store.quarantine import (
    load_payload_columns,
    load_quarantine,
    open_counts,
    quarantine_summary,
    record_quarantine,
    save_payload_columns,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = pd.Timestamp("2026-06-01T00:00:00Z")


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path) -> Engine:  # noqa: ANN001
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    else:
        url = request.getfixturevalue("pg_url")  # a fresh database of its own
    db = StateDB(url).create_all()
    yield db.engine
    db.engine.dispose()


def _batch(emails: list[str | None], ids: list[str | None] | None = None):  # noqa: ANN202
    ids = ids or [f"c{i}" for i in range(len(emails))]
    raw = pd.DataFrame({"id": ids, "email": emails})
    frame = normalize_customers(
        conform(pd.DataFrame({"source_id": ids, "email": emails, "last_name": ["Berg"] * len(ids)}))
    )
    return validate_customers(frame, "voyado", raw, connector_type="file", now=NOW)  # no id format


def test_round_trip_and_fix_at_source(engine: Engine) -> None:
    first = _batch(["a@x.se", "broken@", "c@x.se", "also broken"])
    counts = record_quarantine(engine, "voyado", first.rejected, first.valid, now=T0)
    assert counts == {"inserted": 2, "updated": 0, "resolved": 0, "open": 2}
    rows = load_quarantine(engine, "voyado")
    assert sorted(rows["source_id"]) == ["c1", "c3"]
    assert set(rows["check"]) == {"email_syntax"} and set(rows["severity"]) == {"field"}
    assert {json.loads(p)["id"] for p in rows["raw_payload"]} == {"c1", "c3"}
    assert rows["reason"].str.len().gt(0).all()

    # c1 is fixed at the source, c3 still broken: c1 leaves, c3 keeps its first_seen_at
    later = T0 + timedelta(hours=1)
    second = _batch(["a@x.se", "b@x.se", "c@x.se", "also broken"])
    counts = record_quarantine(engine, "voyado", second.rejected, second.valid, now=later)
    assert counts == {"inserted": 0, "updated": 1, "resolved": 1, "open": 1}
    open_rows = load_quarantine(engine, "voyado")
    assert open_rows["source_id"].tolist() == ["c3"]
    assert open_rows["first_seen_at"].iloc[0] == pd.Timestamp(T0)
    assert open_rows["last_seen_at"].iloc[0] == pd.Timestamp(later)
    history = load_quarantine(engine, "voyado", status="resolved")
    assert history["source_id"].tolist() == ["c1"] and history["resolved_at"].iloc[
        0
    ] == pd.Timestamp(later)


def test_connectors_are_independent_and_partial_runs(engine: Engine) -> None:
    one = _batch(["bad1", "bad2"], ids=["a", "b"])
    record_quarantine(engine, "voyado", one.rejected, one.valid, now=T0)
    record_quarantine(engine, "exact", one.rejected.assign(connector="exact"), one.valid, now=T0)
    # an incremental batch that only saw record "a" (now fixed) leaves "b" open
    inc = _batch(["ok@x.se"], ids=["a"])
    counts = record_quarantine(engine, "voyado", inc.rejected, inc.valid, partial=True, now=T0)
    assert counts["resolved"] == 1
    assert load_quarantine(engine, "voyado")["source_id"].tolist() == ["b"]
    assert open_counts(engine) == {"exact": 2, "voyado": 1}
    summary = quarantine_summary(engine, "exact")
    assert summary[["field", "check", "rows", "records"]].values.tolist() == [
        ["email", "email_syntax", 2, 2]
    ]


def test_row_without_source_id_is_kept_and_resolved_by_payload(engine: Engine) -> None:
    bad = _batch(["a@x.se", "b@x.se"], ids=["a", None])
    record_quarantine(engine, "voyado", bad.rejected, bad.valid, now=T0)
    rows = load_quarantine(engine, "voyado")
    assert len(rows) == 1 and rows["source_id"].isna().all() and rows["severity"].iloc[0] == "row"
    # same broken payload again: same failure, not a second row
    record_quarantine(engine, "voyado", bad.rejected, bad.valid, now=T0)
    assert len(load_quarantine(engine, "voyado", status=None)) == 1
    # the record now arrives with an id: the id-less failure is resolved
    good = _batch(["a@x.se", "b@x.se"], ids=["a", "b"])
    record_quarantine(engine, "voyado", good.rejected, good.valid, now=T0)
    assert load_quarantine(engine, "voyado").empty


def test_hostile_text_stored_verbatim(engine: Engine) -> None:
    nasty = "Robert'); DROP TABLE quarantine;-- \u202e 😀 " + "x" * 5000
    rejected = pd.DataFrame(
        {
            "connector": ["voyado"],
            "source_id": [nasty],
            "field": ["first_name"],
            "check": ["max_length"],
            "severity": ["field"],
            "reason": ["first_name is longer than allowed"],
            "raw_payload": ['{"x": "' + nasty + '"}'],
        }
    )
    record_quarantine(engine, "voyado", rejected, [], now=T0)
    rows = load_quarantine(engine, "voyado")
    assert rows["source_id"].iloc[0] == nasty


def test_payload_columns(engine: Engine) -> None:
    assert load_payload_columns(engine, "voyado") is None
    save_payload_columns(engine, "voyado", ["b", "a", "a"])
    save_payload_columns(engine, "exact", ["ID"])
    assert load_payload_columns(engine, "voyado") == ["a", "b"]
    save_payload_columns(engine, "voyado", ["c"])
    assert load_payload_columns(engine, "voyado") == ["c"]
    assert load_payload_columns(engine, "exact") == ["ID"]
