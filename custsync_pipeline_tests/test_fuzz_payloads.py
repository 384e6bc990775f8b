"""Property-based fuzzing of the file and REST payload paths (issue 15) with hostile bytes,
shapes and sizes: never a crash, every row either valid or rejected with a reason, the
counts always add up, and what is kept can be written where the lane writes it (the
Parquet step output and a real SQLite state DB).

The REST case serves each generated answer from a small HTTP server over a real socket;
the file cases write real files. Each property is bounded to stay well under 20 s.
"""

from __future__ import annotations

import io
import json
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from custsync_pipeline.config import ConnectorConfig
from custsync_pipeline.connectors import ConnectorError, build_connector
from custsync_pipeline.connectors.file_rows import flag_unencodable
from custsync_pipeline.defs.io import _jsonify_nested
from custsync_pipeline.domain.normalize import normalize_customers
from custsync_pipeline.domain.received import ERROR_COLUMN, LINE_COLUMN
from custsync_pipeline.domain.validate import validate_customers
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline.store.quarantine import record_quarantine

FIELDS = ["id", "first", "last", "email", "updated"]
MAPPING = {"first": "first_name", "last": "last_name", "email": "email"}
FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# text a hostile export holds: controls, NUL, a lone surrogate, quotes, delimiters, newlines,
# bidi, astral
hostile_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("\x00\x01\x07\x1b\x7f\x85\u202e\u200b\ufeff\udc80\",;\n\r\t \\'=+-@")),
        st.characters(codec="utf-8"),
    ),
    max_size=30,
)
# hostile sizes: a value far over every length limit (and the csv module's default field limit)
huge = st.sampled_from(["é" * 20_000, "x" * 140_000 + "@example.se"])
dates = st.one_of(
    st.sampled_from(["1066-10-14", "9999-12-31", "2024-02-30", "-0001-01-01", "", "now"]),
    st.dates().map(str),
    hostile_text,
)


@pytest.fixture(scope="module")
def state_db(tmp_path_factory) -> Iterator[object]:
    engine = (
        StateDB(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'state.sqlite'}").create_all().engine
    )
    yield engine
    engine.dispose()


def lane(conn: object, raw: pd.DataFrame, engine: object) -> None:
    """The lane's steps on ``raw`` (the raw asset's ``flag_unencodable`` first), then the
    properties every input must keep."""
    raw = flag_unencodable(raw, "fuzz")
    canon = normalize_customers(conn.to_canonical(raw))
    checked = validate_customers(canon, "fuzz", raw=raw, connector_type=conn.cfg.type)
    # counts add up: every row valid or rejected as a record; every rejection has a reason
    assert len(checked.valid) + checked.rows_rejected == len(raw)
    assert checked.rejected["reason"].notna().all()
    assert (checked.rejected["reason"].str.len() > 0).all()
    if ERROR_COLUMN in raw.columns:  # an unreadable row is never valid
        unread = set(np.flatnonzero(raw[ERROR_COLUMN].notna().to_numpy()))
        assert not unread & set(checked.valid_positions.tolist())
    # what the lane writes, it can write: the raw and valid step outputs, the state DB
    for frame in (raw, checked.valid, checked.rejected):
        _jsonify_nested(frame).reset_index(drop=True).to_parquet(io.BytesIO(), index=False)
    record_quarantine(engine, "fuzz", checked.rejected, checked.valid)
    core.replace_source_records(engine, "fuzz", checked.valid)


def file_connector(path: Path) -> object:
    options = {
        "path": str(path),
        "id_field": "id",
        "updated_field": "updated",
        "mapping": MAPPING,
        "static": {"kind": "person"},
    }
    cfg = ConnectorConfig.model_validate({"type": "file", "role": "source", "options": options})
    return build_connector("fuzz", cfg, {})


# --------------------------------------------------------------------------- CSV


def csv_field(value: str, quote: bool) -> str:
    return '"' + value.replace('"', '""') + '"' if quote else value


csv_rows = st.lists(
    st.one_of(
        # a row of fields, sometimes quoted, sometimes ragged
        st.lists(
            st.tuples(st.one_of(hostile_text, dates, huge), st.booleans()), min_size=0, max_size=7
        ).map(lambda fs: ",".join(csv_field(v, q) for v, q in fs).encode("utf-8", "surrogatepass")),
        # raw bytes: invalid UTF-8, stray quotes, NULs
        st.binary(max_size=40),
    ),
    max_size=25,
)


@FUZZ
@given(rows=csv_rows, crlf=st.booleans())
def test_fuzz_csv_files_every_row_stored_or_quarantined(rows, crlf, state_db):
    nl = b"\r\n" if crlf else b"\n"
    data = ",".join(FIELDS).encode() + nl + nl.join(rows) + nl
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "export.csv")
        path.write_bytes(data)
        conn = file_connector(path)
        raw = conn.read().records
    if raw.empty:
        return
    lines = raw[LINE_COLUMN].to_numpy()
    assert (np.diff(lines) > 0).all() and lines.min() >= 2  # in file order, after the header
    assert lines.max() <= data.count(b"\n") + data.count(b"\r") + 1
    lane(conn, raw, state_db)


simple_field = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters='",\r\n\x85\u2028\u2029'),
    max_size=12,
)


@FUZZ
@given(rows=st.lists(st.lists(simple_field, min_size=1, max_size=7), max_size=25))
def test_fuzz_csv_without_quotes_or_newlines_one_row_per_line(rows, state_db):
    """No quote and no newline inside a field: every non-blank line is exactly one row."""
    lines = [",".join(r) for r in rows]
    data = ("\n".join([",".join(FIELDS), *lines]) + "\n").encode("utf-8", "surrogatepass")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "export.csv")
        path.write_bytes(data)
        conn = file_connector(path)
        raw = conn.read().records
    expected = [i + 2 for i, line in enumerate(lines) if line.strip()]  # blank lines: no row
    assert (list(raw[LINE_COLUMN]) if len(raw) else []) == expected
    ragged = {i + 2 for i, r in enumerate(rows) if len(r) != len(FIELDS)} & set(expected)
    if len(raw):
        flagged = set(raw.loc[raw[ERROR_COLUMN].notna(), LINE_COLUMN])
        assert flagged == ragged
        lane(conn, raw, state_db)


# --------------------------------------------------------------------------- JSON lines

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    hostile_text,
    dates,
    huge,
)
json_value = st.recursive(
    json_scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "id"]), children, max_size=3),
    ),
    max_leaves=8,
)
json_record = st.dictionaries(
    st.one_of(st.sampled_from(FIELDS), hostile_text), json_value, max_size=7
)


@settings(FUZZ, max_examples=25)
@given(
    lines=st.lists(
        st.one_of(
            json_record.map(json.dumps),  # ensure_ascii: lone surrogates become \udxxx escapes
            json_value.map(json.dumps),
            hostile_text,
            st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
        ),
        max_size=20,
    )
)
def test_fuzz_jsonl_files_every_line_stored_or_quarantined(lines, state_db):
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "export.jsonl")
        path.write_bytes(data)
        conn = file_connector(path)
        try:
            raw = conn.read().records
        except ConnectorError as exc:  # only a file with no line at all
            assert "is empty" in str(exc) and not data.decode("utf-8", "replace").strip()
            return
    assert len(raw) == sum(
        1 for line in data.decode("utf-8", "replace").split("\n") if line.strip()
    )
    lane(conn, raw, state_db)


# --------------------------------------------------------------------------- REST over a socket


class _Answer:
    body: bytes = b'{"data": []}'


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(_Answer.body)))
        self.end_headers()
        self.wfile.write(_Answer.body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def rest_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@settings(FUZZ, max_examples=20)  # one HTTP round trip each
@given(records=st.lists(json_record, max_size=20))
@example(records=[{"id": "1", "first": "A\udc80", "last": "B\x00", "email": "x\ud800@y.se"}])
@example(records=[{}, {"id": None}, {"id": 2**70, "updated": "9999-12-31"}, {"id": [1]}])
def test_fuzz_rest_answers_every_record_stored_or_quarantined(records, rest_server, state_db):
    _Answer.body = json.dumps({"data": records}).encode()
    cfg = ConnectorConfig.model_validate(
        yaml.safe_load(
            yaml.safe_dump(
                {
                    "type": "rest",
                    "role": "source",
                    "base_url": rest_server,
                    "options": {
                        "path": "/customers",
                        "records_path": "data",
                        "id_field": "id",
                        "updated_field": "updated",
                        "mapping": MAPPING,
                        "static": {"kind": "person"},
                        "http": {"max_retries": 0, "rate_per_s": None},
                    },
                }
            )
        )
    )
    with build_connector("fuzz", cfg, {}) as conn:
        raw = conn.read().records
    assert len(raw) == len(records)
    if len(raw):
        lane(conn, raw, state_db)
