"""The review CLI against a real SQLite state DB: the quarantine and the identity conflicts,
with personal data masked."""

from __future__ import annotations

import pandas as pd
import pytest

from custsync_pipeline.cli import main
from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.domain.normalize import normalize_customers
from custsync_pipeline.domain.validate import validate_customers
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline.store.quarantine import record_quarantine
from custsync_pipeline_tests.test_identity_cli import ROWS, resolve

BAD = [
    dict(connector="shop", source_id="s1", email="anna@@x.se", last_name="Ek", country="SE"),
    dict(connector="shop", source_id="kim@x.se|SE01", email="kim@x.se", country="Narnia"),
    dict(connector="shop", source_id="s3", email="ok@x.se", last_name="Ok", country="SE"),
]


@pytest.fixture
def state(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    engine = StateDB(url).create_all().engine
    frame = conform(pd.DataFrame(ROWS))
    for connector, part in frame.groupby("connector"):
        core.replace_source_records(engine, connector, part)
    return url, engine


def _quarantine(engine) -> None:
    checked = validate_customers(normalize_customers(conform(pd.DataFrame(BAD))), "shop")
    record_quarantine(engine, "shop", checked.rejected, checked.valid)


def test_quarantine_lists_counts_and_reasons_without_personal_data(state, capsys) -> None:
    url, engine = state
    _quarantine(engine)
    assert main(["quarantine", "--db", url]) == 0
    out = capsys.readouterr().out
    assert "email_syntax" in out and "iso_country" in out
    assert "s1" in out and "k***@x.se|SE01" in out
    assert "anna@@x.se" not in out and "kim@x.se" not in out
    assert "s3" not in out  # a valid record is not in the quarantine

    assert main(["quarantine", "--db", url, "--source-id", "s1"]) == 0
    one = capsys.readouterr().out
    assert "email_syntax" in one and "iso_country" not in one


def test_conflicts_list_the_review_queue_by_kind_with_masked_keys(state, capsys) -> None:
    url, engine = state
    result = resolve(engine)
    assert len(result.conflicts) > 0  # the family email of ROWS is refused
    assert main(["conflicts", "--db", url]) == 0
    out = capsys.readouterr().out
    for kind, n in result.conflicts["kind"].value_counts().items():
        assert any(line.split() == [kind, str(n)] for line in out.splitlines()), kind
    assert "fam@x.se" not in out and "f***@x.se" in out
    assert main(["conflicts", "--db", url, "--kind", "no_such_kind"]) == 0
    assert "(none)" in capsys.readouterr().out
