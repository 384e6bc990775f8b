"""The commands that read or review state refuse a state DB that is not there (a real SQLite
file in tmp_path, a real PostgreSQL database with no custsync tables, a closed port, bad
URLs) with one line and exit 2, creating nothing; steward decisions must name stored
source records, and a masked id from ``custsync conflicts`` is named by its conflict id."""

from __future__ import annotations

import socket
import sqlite3

import pandas as pd
import pytest
import sqlalchemy as sa

from custsync_pipeline.cli import main
from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB, make_engine
from custsync_pipeline.store.identity import list_decisions, load_identity_conflicts
from custsync_pipeline_tests.test_identity_cli import ROWS, gid_of, resolve

GID = "Gdeadbeef0000"
# every command `custsync --help` lists that reads or reviews state, with its arguments
READERS = {
    "quarantine": ["quarantine"],
    "conflicts": ["conflicts"],
    "explain": ["explain", GID],
    "identity-map": ["identity-map", "export", "--out", "OUT"],
    "history": ["history", GID],
    "status": ["status", GID],
    "steward list": ["steward", "list"],
    "steward must-link": ["steward", "must-link", "crm:003A", "loyalty:V1"],
    "steward cannot-link": ["steward", "cannot-link", "crm:003A", "loyalty:V1"],
    "steward remove": ["steward", "remove", "crm:003A", "loyalty:V1"],
    "forget": ["forget", GID, "--yes", "--wait", "0"],
}


def _argv(name: str, url: str, tmp_path) -> list[str]:
    args = [str(tmp_path / "map.csv") if a == "OUT" else a for a in READERS[name]]
    if name == "forget":
        args += ["--storage", str(tmp_path / "storage")]
    return [*args, "--db", url]


def _refused(capsys, code: int) -> str:
    """The one stderr line of a refusal (exit 2, no traceback, nothing on stdout)."""
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("name", list(READERS))
def test_a_missing_sqlite_state_db_is_refused_and_not_created(name, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'state.sqlite'}"
    line = _refused(capsys, main(_argv(name, url, tmp_path)))
    assert line.startswith(f"custsync {name.split()[0]}: no state DB at {url} (from --db)")
    assert "does not exist" in line and "custsync run" in line
    assert not (tmp_path / "no").exists()  # neither the file nor its folder
    assert not (tmp_path / "map.csv").exists()


def test_a_mistyped_file_name_beside_the_real_state_db_is_refused(tmp_path, capsys):
    real = tmp_path / ".custsync" / "state.sqlite"
    StateDB(f"sqlite:///{real}").create_all().engine.dispose()
    before = sorted(p.name for p in real.parent.iterdir())
    url = f"sqlite:///{real.parent / 'state.sqlit'}"
    line = _refused(capsys, main(["conflicts", "--db", url]))
    assert f"no state DB at {url}" in line and "state.sqlit does not exist" in line
    assert sorted(p.name for p in real.parent.iterdir()) == before
    # the real one still answers
    assert main(["conflicts", "--db", f"sqlite:///{real}"]) == 0


def test_a_sqlite_file_without_custsync_state_is_refused_untouched(tmp_path, capsys):
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 200)
    for name in READERS:
        line = _refused(capsys, main(_argv(name, f"sqlite:///{other}", tmp_path)))
        assert "holds no custsync state (no source_records table)" in line
        assert "custsync run" in line
        line = _refused(capsys, main(_argv(name, f"sqlite:///{text}", tmp_path)))
        assert f"cannot read the state DB sqlite:///{text}" in line
    with sqlite3.connect(other) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    conn.close()
    assert tables == ["notes"]
    assert text.read_text() == "not a database\n" * 200


def test_a_postgresql_database_without_custsync_tables_is_refused_untouched(
    pg_url, tmp_path, capsys
):
    for name in READERS:
        line = _refused(capsys, main(_argv(name, pg_url, tmp_path)))
        assert "holds no custsync state (no source_records table)" in line, line
        assert "custsync run" in line
    engine = make_engine(pg_url)
    try:
        assert sa.inspect(engine).get_table_names() == []  # not one table made
    finally:
        engine.dispose()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        # the port is picked in the test: a test id must be the same in every xdist worker
        ("postgresql://custsync:hunter2@127.0.0.1:{closed}/state", "cannot connect to"),
        ("postgres://custsync:hunter2@127.0.0.1:notaport/state", "cannot parse the state DB URL"),
        ("custsync:hunter2 at the db server", "cannot parse the state DB URL"),
        ("mysql://custsync:hunter2@127.0.0.1/state", "unsupported state DB URL"),
    ],
)
@pytest.mark.parametrize("name", ["conflicts", "status", "steward must-link", "forget"])
def test_unreachable_or_bad_urls_are_one_line_without_the_password(
    name, url, says, tmp_path, capsys
):
    url = url.replace("{closed}", str(_closed_port()))
    line = _refused(capsys, main(_argv(name, url, tmp_path)))
    assert says in line
    assert "hunter2" not in line
    if "://" in url:
        assert url.replace("hunter2", "***") in line


def test_the_message_says_where_the_url_came_from(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'gone.sqlite'}"
    monkeypatch.setenv("CUSTSYNC_STATE_DB_URL", url)
    line = _refused(capsys, main(["quarantine"]))
    assert f"no state DB at {url} (from $CUSTSYNC_STATE_DB_URL)" in line
    assert not (tmp_path / "gone.sqlite").exists()


# --- steward decisions name stored records ------------------------------------

ICOMM = [
    dict(connector="icomm", source_id="fam@x.se|SE", icomm_user_id="fam@x.se",
         store_code="SE", email="fam@x.se"),
]  # fmt: skip


@pytest.fixture
def state(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    engine = StateDB(url).create_all().engine
    frame = conform(pd.DataFrame(ROWS + ICOMM))
    for connector, part in frame.groupby("connector"):
        core.replace_source_records(engine, connector, part)
    result = resolve(engine)
    yield url, engine, result
    engine.dispose()


def _icomm_row(out: str) -> list[str]:
    """The ``custsync conflicts`` row naming the Icomm guest (masked)."""
    rows = [line.split() for line in out.splitlines() if "icomm:f***@x.se|SE" in line]
    assert rows, out
    return rows[0]


def test_a_masked_id_pasted_from_conflicts_is_refused(state, capsys):
    url, engine, _ = state
    assert main(["conflicts", "--db", url]) == 0
    row = _icomm_row(capsys.readouterr().out)
    masked = next(cell for cell in row if cell.startswith("icomm:"))
    other = next(cell for cell in row if cell.startswith("crm:"))
    assert main(["steward", "must-link", other, masked, "--db", url]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "B icomm:f***@x.se|SE is not a stored source record: it looks masked" in err
    assert "--conflict ID" in err and "nothing recorded" in err
    assert "A " + other not in err  # the stored side is not blamed
    assert "fam@x.se" not in err
    assert list_decisions(engine).empty


def test_decisions_on_records_that_are_not_stored_are_refused(state, capsys):
    url, engine, _ = state
    argv = ["steward", "must-link", "salesforce:nope", "voyado:nope2", "--db", url]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "A salesforce:nope is not a stored source record" in err
    assert "B voyado:nope2 is not a stored source record" in err
    assert (
        "no record of connector 'salesforce' is stored (connectors: crm, icomm, loyalty, shop)"
        in err
    )
    assert main(["steward", "cannot-link", "crm:003A", "crm:nope", "--db", url]) == 1
    err = capsys.readouterr().err
    assert "B crm:nope is not a stored source record" in err and "A crm:003A" not in err
    assert "no record of connector" not in err
    assert main(["steward", "must-link", "crm:003A", "crm:003A", "--db", url]) == 1
    assert "same record" in capsys.readouterr().err
    assert list_decisions(engine).empty


def test_conflicts_print_an_id_the_steward_settles_the_masked_row_with(state, capsys):
    url, engine, first = state
    g_icomm, g_crm = gid_of(first, "icomm", "fam@x.se|SE"), gid_of(first, "crm", "003B")
    assert g_icomm != g_crm
    assert main(["conflicts", "--db", url]) == 0
    out = capsys.readouterr().out
    stored = set(load_identity_conflicts(engine)["conflict_id"])
    row = _icomm_row(out)
    conflict_id = row[0]
    assert conflict_id in stored  # the id column is the stored conflict id
    a = next(cell for cell in row if cell.startswith(("crm:", "icomm:")))
    assert "fam@x.se" not in out

    assert main(["steward", "must-link", "--conflict", "zz-not-hex", "--db", url]) == 1
    assert "is not a conflict id" in capsys.readouterr().err
    assert main(["steward", "must-link", "--conflict", "0123456789abcdef", "--db", url]) == 1
    assert "no conflict '0123456789abcdef' in the review queue" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["steward", "must-link", "crm:003B", "--conflict", conflict_id, "--db", url])
    with pytest.raises(SystemExit):
        main(["steward", "must-link", "crm:003B", "--db", url])
    capsys.readouterr()

    # a unique start of the id does too
    argv = ["steward", "must-link", "--conflict", conflict_id[:8], "--db", url, "--by", "ann"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "must_link recorded for" in out and "icomm:f***@x.se|SE" in out and a in out
    assert "fam@x.se" not in out
    decided = list_decisions(engine)
    assert len(decided) == 1
    pair = {
        (decided.loc[0, "connector_a"], decided.loc[0, "source_id_a"]),
        (decided.loc[0, "connector_b"], decided.loc[0, "source_id_b"]),
    }
    assert ("icomm", "fam@x.se|SE") in pair and decided.loc[0, "decided_by"] == "ann"
    second = resolve(engine, "2026-01-02")
    together = {gid_of(second, c, s) for c, s in pair}
    assert len(together) == 1  # the decision applies from the next resolution
