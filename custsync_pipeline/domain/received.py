"""Columns that travel beside a connector's rows to say what was received but not kept.

* A file connector keeps a row it could not decode or parse (undecodable bytes,
  a ragged row, an unterminated quote, a line that is not a JSON object) in its
  raw frame, with ``LINE_COLUMN`` (the line it starts on), ``ERROR_COLUMN`` (the
  reason, naming file and line) and ``CHECK_COLUMN`` (a short check name). Validation
  turns such a row into a row-severity quarantine entry; the other rows go on. Every
  row of a file carries ``FILE_COLUMN`` and ``LINE_COLUMN``, so any quarantine reason
  of it says where it is.
* A mapping that parses a vendor timestamp keeps the text it could not parse in
  ``received_column(col)`` (``updated_at_received`` …), so validation quarantines
  an impossible date with the value as received instead of storing a silent NULL.
"""

from __future__ import annotations

LINE_COLUMN = "_custsync.line"
FILE_COLUMN = "_custsync.file"  # the file a row was read from (with LINE_COLUMN: where it is)
ERROR_COLUMN = "_custsync.error"
CHECK_COLUMN = "_custsync.check"
TEXT_COLUMN = "_custsync.text"  # the line as received, when no field could be read from it
READ_COLUMNS: tuple[str, ...] = (
    LINE_COLUMN,
    FILE_COLUMN,
    ERROR_COLUMN,
    CHECK_COLUMN,
    TEXT_COLUMN,
)

# quarantine ``field`` of a row that could not be read at all
READ_FIELD = "row"

READ_CHECK_REASONS: dict[str, str] = {
    "undecodable": "holds bytes that are not valid in the file's encoding",
    "ragged_row": "has a different number of fields than the header",
    "unterminated_quote": "opens a quote that is never closed",
    "malformed_quote": "has a quote in the wrong place",
    "not_json": "is not valid JSON",
    "not_object": "is not a JSON object",
}


def received_column(column: str) -> str:
    """Name of the column holding the received text of a timestamp ``column`` that did not parse."""
    return f"{column}_received"
