"""Hostile export files (issue 15): every row is stored or quarantined with file, line and reason.

Each case writes a real file, reads it with the file connector, maps, normalizes
and validates it as the lane does, and records the quarantine in a real SQLite
state DB. One bad byte, ragged row or stray quote costs its own row only; a NUL
or control character is quarantined, never cut; an impossible date is a
quarantined field with the value as received; an empty file or one without a
header is one error naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from custsync_pipeline.config import ConnectorConfig
from custsync_pipeline.connectors import ConnectorError, build_connector
from custsync_pipeline.domain.canonical import CANONICAL_COLUMNS
from custsync_pipeline.domain.normalize import normalize_customers
from custsync_pipeline.domain.received import ERROR_COLUMN, LINE_COLUMN
from custsync_pipeline.domain.validate import ValidationResult, validate_customers
from custsync_pipeline.store.db import StateDB
from custsync_pipeline.store.quarantine import load_quarantine, record_quarantine

HEADER = b"id,first,last,email,updated\n"
GOOD_1 = b"1,Anna,Berg,anna@example.se,2024-01-01T10:00:00Z\n"
GOOD_3 = b"3,Cecil,Lund,cecil@example.se,2024-01-03T10:00:00Z\n"


def connector(path: Path, fmt: str | None = None):  # noqa: ANN201
    options = {
        "path": str(path),
        "id_field": "id",
        "updated_field": "updated",
        "mapping": {"first": "first_name", "last": "last_name", "email": "email"},
        "static": {"kind": "person"},
    }
    if fmt:
        options["format"] = fmt
    cfg = ConnectorConfig.model_validate(
        yaml.safe_load(yaml.safe_dump({"type": "file", "role": "source", "options": options}))
    )
    return build_connector("export", cfg, {})


def lane(
    path: Path, tmp_path: Path, fmt: str | None = None
) -> tuple[pd.DataFrame, ValidationResult, pd.DataFrame]:
    """What ``<c>/customers`` does with a file: raw, validation result, quarantine rows stored."""
    conn = connector(path, fmt)
    raw = conn.read().records
    canon = normalize_customers(conn.to_canonical(raw))
    checked = validate_customers(canon, "export", raw=raw, connector_type="file")
    engine = StateDB(f"sqlite:///{tmp_path / 'state.sqlite'}").engine
    record_quarantine(engine, "export", checked.rejected, checked.valid)
    stored = load_quarantine(engine, "export")
    engine.dispose()
    # every row accounted for: valid + rejected records = rows in the file
    assert len(checked.valid) + checked.rows_rejected == len(raw)
    return raw, checked, stored


def write(tmp_path: Path, data: bytes, name: str = "export.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def row_failures(stored: pd.DataFrame) -> pd.DataFrame:
    return stored[stored["severity"] == "row"].set_index("source_id")


def test_an_undecodable_byte_costs_its_row_only(tmp_path):
    path = write(tmp_path, HEADER + GOOD_1 + b"2,B\xffrt,Ek,bert@example.se,2024-01-02\n" + GOOD_3)
    raw, checked, stored = lane(path, tmp_path)
    assert sorted(checked.valid["source_id"]) == ["1", "3"]
    bad = row_failures(stored).loc["2"]
    assert bad["check"] == "undecodable" and bad["field"] == "row"
    assert f"{path} line 3" in bad["reason"] and "0xff" in bad["reason"]
    # the payload is text a store can hold: the byte became U+FFFD, not a lone surrogate
    assert json.loads(bad["raw_payload"])["first"] == "B\ufffdrt"


def test_a_ragged_row_costs_its_row_only(tmp_path):
    path = write(
        tmp_path,
        HEADER + GOOD_1 + b"2,Bert,Ek,bert@example.se,2024-01-02,surplus\n" + GOOD_3 + b"4,Dora\n",
    )
    _, checked, stored = lane(path, tmp_path)
    assert sorted(checked.valid["source_id"]) == ["1", "3"]
    bad = row_failures(stored)
    assert set(bad.index) == {"2", "4"}
    assert (bad["check"] == "ragged_row").all()
    assert "line 3: 6 fields, the header has 5" in bad.loc["2", "reason"]
    assert "line 5: 2 fields, the header has 5" in bad.loc["4", "reason"]


def test_an_unterminated_quote_costs_its_row_only(tmp_path):
    path = write(tmp_path, HEADER + GOOD_1 + b'2,"Bert,Ek,bert@example.se,2024-01-02\n' + GOOD_3)
    _, checked, stored = lane(path, tmp_path)
    assert sorted(checked.valid["source_id"]) == ["1", "3"]
    bad = row_failures(stored)
    assert list(bad.index) == ["2"]  # one reason, not the name checks its spoilt fields fail
    assert bad.loc["2", "check"] == "unterminated_quote"
    assert "line 3: opens a quote that is never closed" in bad.loc["2", "reason"]


def test_a_misplaced_quote_costs_its_row_only_and_multiline_fields_keep_line_numbers(tmp_path):
    path = write(
        tmp_path,
        HEADER
        + b'1,"Anna\nMaria",Berg,anna@example.se,2024-01-01\n'  # a quoted newline: lines 2-3
        + b'2,"Bert"x,Ek,bert@example.se,2024-01-02\n'  # line 4
        + GOOD_3,
    )
    raw, checked, stored = lane(path, tmp_path)
    assert list(raw[LINE_COLUMN]) == [2, 4, 5]
    assert sorted(checked.valid["source_id"]) == ["1", "3"]
    assert checked.valid.set_index("source_id").loc["1", "first_name"] == "Anna Maria"
    bad = row_failures(stored)
    assert bad.loc["2", "check"] == "malformed_quote" and "line 4" in bad.loc["2", "reason"]


def test_nul_and_control_characters_are_quarantined_never_cut(tmp_path):
    path = write(
        tmp_path,
        HEADER
        + b"1,Nul\x00Name,Berg,anna@example.se,2024-01-01\n"
        + b"2,Bert,Ek,bert\x00@example.se,2024-01-02\n"
        + b"3,Ce\x07cil,Lund,cecil@example.se,2024-01-03\n",
    )
    raw, checked, stored = lane(path, tmp_path)
    assert list(raw["first"]) == ["Nul\x00Name", "Bert", "Ce\x07cil"]  # as received, whole
    assert list(raw["email"])[1] == "bert\x00@example.se"
    valid = checked.valid.set_index("source_id")
    assert sorted(valid.index) == ["1", "2", "3"]  # field failures: the records stay
    assert valid["first_name"].isna().tolist() == [True, False, True]
    assert pd.isna(valid.loc["2", "email"]) and pd.isna(valid.loc["2", "email_raw"])
    fields = set(map(tuple, stored[["source_id", "field", "check"]].to_numpy()))
    assert ("1", "first_name", "printable") in fields
    assert ("3", "first_name", "printable") in fields
    assert ("2", "email", "email_syntax") in fields and ("2", "email_raw", "printable") in fields
    # each reason says where the row is
    first = stored[(stored["source_id"] == "1") & (stored["field"] == "first_name")]
    assert first["reason"].iloc[0].endswith(f"({path} line 2)")
    # nothing of the e-mail is cut to "bert", and nothing personal shows in a reason
    assert not stored["reason"].str.contains("bert@|Name|cecil", regex=True).any()
    # no NUL in what the state DB keeps of a valid row (its canonical columns)
    texts = checked.valid[list(CANONICAL_COLUMNS)].select_dtypes(include=["string", "object"])
    assert (
        not texts.apply(lambda s: s.astype("string").str.contains("\x00").fillna(False)).any().any()
    )


@pytest.mark.parametrize("value", ["1066-10-14", "9999-12-31", "2024-02-30", "-0001-01-01"])
def test_an_impossible_date_is_a_quarantined_field_with_the_value_as_received(tmp_path, value):
    path = write(tmp_path, HEADER + GOOD_1 + f"2,Bert,Ek,bert@example.se,{value}\n".encode())
    _, checked, stored = lane(path, tmp_path)
    valid = checked.valid.set_index("source_id")
    assert sorted(valid.index) == ["1", "2"]
    assert pd.isna(valid.loc["2", "updated_at"]) and valid["updated_at"].notna().sum() == 1
    row = stored[(stored["source_id"] == "2") & (stored["field"] == "updated_at")]
    assert list(row["check"]) == ["timestamp"] and list(row["severity"]) == ["field"]
    assert repr(value) in row["reason"].iloc[0]
    assert row["reason"].iloc[0].endswith(f"({path} line 3)")


def test_jsonl_broken_lines_and_non_objects_cost_their_line_only(tmp_path):
    lines = [
        json.dumps({"id": "1", "first": "Anna", "last": "Berg", "email": "anna@example.se"}),
        '{"id": "2", "first": "Bert"',  # cut off
        "[1, 2]",
        json.dumps({"id": "3", "first": "Ce\udc80cil", "last": "Lund"}),  # a lone surrogate
        json.dumps({"id": "4", "first": "Nul\u0000l", "last": "Dahl"}),
    ]
    path = write(tmp_path, ("\n".join(lines) + "\n").encode(), "export.jsonl")
    raw, checked, stored = lane(path, tmp_path)
    assert list(raw[LINE_COLUMN]) == [1, 2, 3, 4, 5]
    assert sorted(checked.valid["source_id"]) == ["1", "4"]
    rows = stored[stored["severity"] == "row"]
    checks = dict(
        zip(rows["reason"].str.extract(r"line (\d)", expand=False), rows["check"], strict=True)
    )
    assert checks == {"2": "not_json", "3": "not_object", "4": "undecodable"}
    nul = stored[(stored["source_id"] == "4")]
    assert list(nul["check"]) == ["printable"] and list(nul["field"]) == ["first_name"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"\n  \n", "is empty"),
        (b"\xef\xbb\xbf", "is empty"),  # a BOM and nothing else
        (b"1,Anna,Berg,anna@example.se,2024-01-01\n", "no header row naming the id column"),
        (b'"id,first\n', "no header row"),
    ],
)
def test_an_empty_or_headerless_file_is_one_error_naming_the_file(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(ConnectorError, match=message) as err:
        connector(path).read()
    assert str(path) in str(err.value)
    assert "Anna" not in str(err.value)  # a data line is not echoed


def test_header_only_file_is_zero_rows_not_an_error(tmp_path):
    result = connector(write(tmp_path, HEADER)).read()
    assert result.records.empty


def test_the_cases_the_old_reader_handled_stay_handled(tmp_path):
    """A 10 MB field, formula injection, a right-to-left override and SQL quotes."""
    big = "x" * 10_000_000
    path = write(
        tmp_path,
        HEADER
        + f"1,{big},Berg,anna@example.se,2024-01-01\n".encode()
        + b'2,=HYPERLINK("http://x"),Ek,bert@example.se,2024-01-02\n'
        + "3,Ce\u202ecil,Lund,cecil@example.se,2024-01-03\n".encode()
        + b"4,Robert'); DROP TABLE x;--,O'Brien,dora@example.se,2024-01-04\n",
    )
    raw, checked, stored = lane(path, tmp_path)
    assert len(raw) == 4 and raw[ERROR_COLUMN].isna().all()
    assert sorted(checked.valid["source_id"]) == ["1", "2", "3", "4"]
    fields = set(map(tuple, stored[["source_id", "field", "check"]].to_numpy()))
    assert {("1", "first_name", "max_length"), ("2", "first_name", "no_formula")} <= fields
    assert ("3", "first_name", "printable") in fields
    assert checked.valid.set_index("source_id").loc["4", "last_name"] == "O'Brien"


CLEAN_CSV = [
    'id,name,zip\n1,"van der Berg, Anna",007\n2,,41152\n3,"Sara ""S"" Ek",\n',
    "id;name\r\n1;Åsa Öberg\r\n2;Null\r\n",  # another delimiter, CRLF, "Null" is a value
    'id,note\n1,b"c\n2,tab\there\n',  # a quote inside an unquoted field, a tab
    "id,name,name\n1,a,b\n",  # a repeated column name
    "id,name\n1,x\x00y\n",  # a NUL is kept as received (validation quarantines it)
]
HOSTILE_CSV = [
    'id,name\n1,"b"c\n',  # the strict reader refuses it (Arrow would read "bc")
    "id,name\n1,a\n\n2,b\n",  # a blank line
    'id,name\n1,"two\nlines"\n',  # a row spanning lines
    "id,name\n1,a,extra\n",  # ragged
    "\nid,name\n1,a\n",  # the header is not the first line
    "id,name\n1,caf\udce9\n",  # a byte that did not decode
]


@pytest.mark.parametrize("text", CLEAN_CSV)
def test_a_clean_csv_reads_the_same_through_arrow(text):
    from custsync_pipeline.connectors.file_rows import _arrow_csv, read_csv_text

    delimiter = ";" if ";" in text.splitlines()[0] else ","
    fast = _arrow_csv(text, delimiter, "f.csv")
    assert fast is not None, "a clean file takes the fast path"
    careful = read_csv_text(text, delimiter=delimiter, source="f.csv", arrow=False)
    pd.testing.assert_frame_equal(fast, careful)


@pytest.mark.parametrize("text", HOSTILE_CSV)
def test_a_file_arrow_would_read_differently_takes_the_careful_path(text):
    from custsync_pipeline.connectors.file_rows import _arrow_csv, read_csv_text

    assert _arrow_csv(text, ",", "f.csv") is None
    # and the careful path still names each bad row (or reads it as the csv module does)
    assert read_csv_text(text, source="f.csv").equals(
        read_csv_text(text, source="f.csv", arrow=False)
    )
