"""The identity CLI against a real SQLite state DB: explain, export, steward decisions."""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from custsync_pipeline.cli import main
from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.domain.identity import resolve_identities
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline.store.identity import load_identity_state, save_identity_result
from custsync_pipeline_tests.test_identity import RULES

ROWS = [
    dict(connector="crm", source_id="003A", salesforce_id="003A", email="johanna@gmail.com",
         phone="+46701234512", first_name="Johanna", last_name="Berg"),
    dict(connector="loyalty", source_id="V1", voyado_id="V1", email="johanna@gmail.com",
         first_name="Johanna", last_name="Berg"),
    dict(connector="shop", source_id="=HYPERLINK(1)", web_user_id="w9", phone="+46701234512"),
    dict(connector="crm", source_id="003B", salesforce_id="003B", email="fam@x.se", first_name="Erik"),
    dict(connector="crm", source_id="003C", salesforce_id="003C", email="fam@x.se", first_name="Lisa"),
]  # fmt: skip


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    state = StateDB(url).create_all()
    frame = conform(pd.DataFrame(ROWS))
    for connector, part in frame.groupby("connector"):
        core.replace_source_records(state.engine, connector, part)
    return url, state.engine


def resolve(engine, now="2026-01-01"):
    records = core.load_source_records(engine)
    prior, gids, decisions = load_identity_state(engine)
    result = resolve_identities(
        records, RULES, prior, gids, decisions, now=pd.Timestamp(now, tz="UTC")
    )
    save_identity_result(engine, result)
    return result


def gid_of(result, connector, source_id):
    m = result.identity_map
    return m.loc[(m.connector == connector) & (m.source_id == source_id), "golden_id"].item()


def test_explain_lists_members_and_links_with_masked_keys(db, capsys):
    url, engine = db
    result = resolve(engine)
    g = gid_of(result, "crm", "003A")
    assert main(["explain", g, "--db", url]) == 0
    out = capsys.readouterr().out
    assert f"golden id {g}" in out
    for member in ("crm:003A", "loyalty:V1", "shop:=HYPERLINK(1)"):
        assert member in out
    assert "rule email key j***@gmail.com" in out
    assert "rule phone key +46*****12" in out
    assert "name Johanna B." in out
    # nothing in clear: not the email, not the phone, not the last name
    for secret in ("johanna@gmail.com", "+46701234512", "Berg"):
        assert secret not in out


def test_explain_of_a_merged_away_id_shows_the_survivor(db, capsys):
    url, engine = db
    first = resolve(engine)
    g_erik, g_lisa = gid_of(first, "crm", "003B"), gid_of(first, "crm", "003C")
    assert g_erik != g_lisa
    assert (
        main(["steward", "must-link", "crm:003B", "crm:003C", "--db", url, "--note", "checked"])
        == 0
    )
    second = resolve(engine, "2026-01-02")
    survivor = gid_of(second, "crm", "003B")
    absorbed = ({g_erik, g_lisa} - {survivor}).pop()
    capsys.readouterr()
    assert main(["explain", absorbed, "--db", url]) == 0
    out = capsys.readouterr().out
    assert f"{absorbed} was merged into {survivor}" in out
    assert "crm:003B" in out and "crm:003C" in out
    assert "rule steward" in out


def test_explain_of_an_unknown_id_fails(db, capsys):
    url, engine = db
    resolve(engine)
    assert main(["explain", "Gdeadbeef0000", "--db", url]) == 1
    assert "unknown" in capsys.readouterr().out


def test_export_writes_the_identity_map_as_csv(db, tmp_path, capsys):
    url, engine = db
    result = resolve(engine)
    out = tmp_path / "export" / "map.csv"
    assert main(["identity-map", "export", "--out", str(out), "--db", url]) == 0
    assert "wrote 5 identity map rows" in capsys.readouterr().out
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["connector", "source_id", "golden_id", "rule", "updated_at"]
    got = {(r["connector"], r["source_id"]): r["golden_id"] for r in rows}
    want = {
        (c, s): g for c, s, g in result.identity_map[["connector", "source_id", "golden_id"]].values
    }
    # a source id that a spreadsheet would run as a formula is neutralized
    assert got.pop(("shop", "'=HYPERLINK(1)")) == want.pop(("shop", "=HYPERLINK(1)"))
    assert got == want
    assert rows[0]["updated_at"] == "2026-01-01T00:00:00+00:00"


def test_steward_commands_set_list_and_remove_and_cannot_link_wins(db, capsys):
    url, engine = db
    first = resolve(engine)
    assert gid_of(first, "crm", "003A") == gid_of(first, "loyalty", "V1")
    assert (
        main(["steward", "cannot-link", "crm:003A", "loyalty:V1", "--db", url, "--by", "ann"]) == 0
    )
    capsys.readouterr()
    assert main(["steward", "list", "--db", url]) == 0
    listed = capsys.readouterr().out
    assert (
        "cannot_link" in listed
        and "crm:003A" in listed
        and "loyalty:V1" in listed
        and "by ann" in listed
    )
    second = resolve(engine, "2026-01-02")
    assert gid_of(second, "crm", "003A") != gid_of(second, "loyalty", "V1")
    assert main(["steward", "remove", "loyalty:V1", "crm:003A", "--db", url]) == 0
    assert main(["steward", "remove", "loyalty:V1", "crm:003A", "--db", url]) == 1
    assert main(["steward", "remove", "--id", "1", "--db", url]) == 1
    third = resolve(engine, "2026-01-03")
    assert gid_of(third, "crm", "003A") == gid_of(third, "loyalty", "V1")


def test_a_bad_record_reference_is_refused(db, capsys):
    url, _ = db
    with pytest.raises(SystemExit):
        main(["steward", "must-link", "crm-003A", "loyalty:V1", "--db", url])
    assert "connector:source_id" in capsys.readouterr().err


def test_explain_masks_a_source_id_that_holds_an_email(db, capsys):
    # an Icomm source id is UserId|StoreCode, and a guest's UserId is their email
    url, engine = db
    icomm = conform(
        pd.DataFrame(
            [
                dict(connector="icomm", source_id="johanna@gmail.com|SE", icomm_user_id="johanna@gmail.com",
                     store_code="SE", email="johanna@gmail.com", first_name="Johanna"),
                dict(connector="icomm", source_id="fam@x.se|SE", icomm_user_id="fam@x.se",
                     store_code="SE", email="fam@x.se"),
            ]
        )
    )  # fmt: skip
    core.replace_source_records(engine, "icomm", icomm)
    result = resolve(engine)
    g = gid_of(result, "crm", "003A")
    assert gid_of(result, "icomm", "johanna@gmail.com|SE") == g
    assert main(["explain", g, "--db", url]) == 0
    out = capsys.readouterr().out
    assert "icomm:j***@gmail.com|SE" in out
    assert "johanna@gmail.com" not in out
    # a conflict row naming the family guest is masked too
    assert main(["explain", gid_of(result, "crm", "003B"), "--db", url]) == 0
    out = capsys.readouterr().out
    assert "icomm:f***@x.se|SE" in out and "fam@x.se|SE" not in out


def test_explain_shows_the_split_history(db, capsys):
    url, engine = db
    first = resolve(engine)
    g = gid_of(first, "crm", "003A")
    assert gid_of(first, "loyalty", "V1") == g
    # the loyalty record changes its email: it splits off Johanna's golden record
    moved = conform(pd.DataFrame([dict(ROWS[1], email="new@x.se")]))
    core.replace_source_records(engine, "loyalty", moved)
    second = resolve(engine, "2026-01-02")
    new = gid_of(second, "loyalty", "V1")
    assert new != g and gid_of(second, "crm", "003A") == g
    capsys.readouterr()
    assert main(["explain", new, "--db", url]) == 0
    assert f"split off {g} at 2026-01-02 00:00:00Z" in capsys.readouterr().out
    assert main(["explain", g, "--db", url]) == 0
    assert f"{new} split off this id at 2026-01-02" in capsys.readouterr().out


def test_steward_list_masks_an_email_id_and_remove_takes_its_number(db, capsys):
    # an Icomm guest's source id is its e-mail: listed masked, removed by number
    url, engine = db
    guest = "anna.berg@example.se|SE"
    core.replace_source_records(
        engine,
        "icomm",
        conform(pd.DataFrame({"connector": ["icomm"], "source_id": [guest],
                              "email": ["anna.berg@example.se"]})),
    )  # fmt: skip
    assert main(["steward", "cannot-link", f"icomm:{guest}", "crm:003A", "--db", url]) == 0
    capsys.readouterr()
    assert main(["steward", "list", "--db", url]) == 0
    listed = capsys.readouterr().out
    assert "anna.berg" not in listed and "icomm:a***@" in listed and "crm:003A" in listed
    number = listed.split()[0]
    assert number.startswith("#")
    assert main(["steward", "remove", "--id", number[1:], "--db", url]) == 0
    assert main(["steward", "list", "--db", url]) == 0
    assert "no steward decisions" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # records and a number at once
        main(["steward", "remove", "crm:003A", "--id", "1", "--db", url])
