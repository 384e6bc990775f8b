"""Personal data outside the state DB (issue 15): step outputs readable by their owner only,
masked source ids in ``identity_conflicts``, and ``custsync forget`` erasing a person from the
state DB and every stored step output. One real sync against the sandbox over real sockets,
a real SQLite state DB and the real Parquet files."""

from __future__ import annotations

import os
import stat

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from custsync_pipeline.cli import main
from custsync_pipeline.defs.extract.pulls import PULL_ATTR
from custsync_pipeline.defs.io import ParquetIOManager, purge_outputs
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store.db import make_engine
from custsync_pipeline.store.quarantine import record_quarantine
from custsync_pipeline_tests.e2e import SANDBOX_SECRETS, materialize_all, write_sync_config


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    """One full sync of three lanes; yields (state DB URL, storage root)."""
    tmp = tmp_path_factory.mktemp("privacy")
    home = tmp / "dagster_home"
    home.mkdir()
    url = f"sqlite:///{tmp / 'state.sqlite'}"
    mp = pytest.MonkeyPatch()
    old_umask = os.umask(
        0o022
    )  # the usual umask: files would be 0644 without the IO manager's care
    try:
        with Sandbox(seed=5, people=400, base_port=0) as sb:
            cfg = write_sync_config(
                tmp / "sync.yaml", sb.urls, url, enabled={"salesforce", "voyado", "icomm"}
            )
            for k, v in SANDBOX_SECRETS.items():
                mp.setenv(k, v)
            mp.setenv("CUSTSYNC_CONFIG", str(cfg))
            mp.setenv("DAGSTER_HOME", str(home))
            mp.delenv("CUSTSYNC_STATE_DB_URL", raising=False)
            with dg.DagsterInstance.ephemeral() as instance:
                result = materialize_all(instance, raise_on_error=False)
            assert result.success
        yield url, home / "storage" / "custsync"
    finally:
        os.umask(old_umask)
        mp.undo()


def test_step_outputs_are_0600_in_0700_directories(synced):
    _, root = synced
    files = list(root.rglob("*.parquet"))
    assert len(files) >= 7  # three lanes x (raw, customers, rejected) + identity ...
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    dirs = [root, *(p for p in root.rglob("*") if p.is_dir())]
    for path in dirs:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert not list(root.rglob("*.tmp"))


def test_a_directory_left_open_by_an_older_version_is_tightened(tmp_path):
    root = tmp_path / "storage"
    (root / "crm").mkdir(parents=True)
    os.chmod(root, 0o755)
    os.chmod(root / "crm", 0o755)

    class Ctx:
        asset_key = dg.AssetKey(["crm", "raw_customers"])

    ParquetIOManager(base_dir=str(root)).handle_output(Ctx(), pd.DataFrame({"id": [1, "A2"]}))
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "crm").stat().st_mode) == 0o700
    path = root / "crm" / "raw_customers.parquet"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(pd.read_parquet(path)["id"]) == ["1", "A2"]  # mixed scalars stored as text


CLEAR_EMAIL = r"[^|@*\s]@[^@\s]+\.[a-z]{2,}"  # a local part not ending in the mask's ***


def _db_conflicts(url: str) -> pd.DataFrame:
    engine = make_engine(url)
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text("SELECT * FROM identity_conflicts"), conn)
    engine.dispose()
    return frame


def test_identity_conflicts_output_masks_source_ids_the_state_db_keeps(synced):
    url, root = synced
    stored = _db_conflicts(url)
    ids = pd.concat([stored["source_id_a"], stored["source_id_b"]])
    # the sandbox's Icomm guests are keyed by their e-mail: the review queue needs them clear
    assert ids.str.contains(CLEAR_EMAIL, regex=True).any()
    out = pd.read_parquet(root / "identity_conflicts.parquet")
    assert len(out) == len(stored)
    shown = pd.concat([out["source_id_a"], out["source_id_b"]])
    assert not shown.str.contains(CLEAR_EMAIL, regex=True).any()
    assert shown.str.contains(r"\*\*\*@", regex=True).any()
    assert set(out["conflict_id"]) == set(stored["conflict_id"])


def _text_cells_equal(frame: pd.DataFrame, values: set[str]) -> int:
    hits = 0
    for col in frame.columns:
        if pd.api.types.infer_dtype(frame[col], skipna=True) == "bytes":
            continue  # hashes (identity_map.reach), no text: gone with their row
        if frame[col].dtype == object or isinstance(frame[col].dtype, pd.StringDtype):
            hits += int(frame[col].astype("string").isin(values).fillna(False).sum())
    return hits


def test_forget_erases_a_person_from_the_state_db_and_every_step_output(synced, capsys):
    url, root = synced
    engine = make_engine(url)
    with engine.connect() as conn:
        imap = pd.read_sql(
            sa.text("SELECT connector, source_id, golden_id FROM identity_map"), conn
        )
    sizes = imap.groupby("golden_id")["connector"].nunique().sort_values(ascending=False)
    gid = str(sizes.index[0])
    assert sizes.iloc[0] >= 2  # a person known to several systems
    members = imap[imap["golden_id"] == gid]
    source_ids = set(members["source_id"])
    others = imap[imap["golden_id"] != gid]
    before = {p: pd.read_parquet(p) for p in root.rglob("*.parquet")}
    # a row rejected before it had an id still names the person inside its payload
    with engine.connect() as conn:
        emails = pd.read_sql(
            sa.text("SELECT email FROM source_records WHERE email IS NOT NULL"), conn
        )
    mine = set(emails["email"]) & set(
        pd.read_sql(
            sa.text(
                "SELECT s.email FROM source_records s JOIN identity_map m "
                "ON s.connector = m.connector AND s.source_id = m.source_id "
                "WHERE m.golden_id = :g AND s.email IS NOT NULL"
            ),
            engine,
            params={"g": gid},
        )["email"]
    )
    assert mine
    email = sorted(mine)[0]
    rejected = pd.DataFrame(
        {
            "connector": "export",
            "source_id": [None, None],
            "field": "source_id",
            "check": "not_null",
            "severity": "row",
            "reason": "source_id is required but missing",
            "raw_payload": [f'{{"Email": "{email}"}}', '{"Email": "someone.else@example.org"}'],
        }
    )
    record_quarantine(engine, "export", rejected)
    assert sum(_text_cells_equal(f, {gid} | source_ids) for f in before.values()) > 0

    # without --yes it only says what would go
    assert main(["forget", gid, "--db", url]) == 2
    assert "--yes" in capsys.readouterr().err
    # a sync holding the state lease (merging, publishing) is waited for, not raced
    from custsync_pipeline.store import lease

    assert lease.try_acquire(engine, "a-running-sync", ttl_s=60)
    args = ["forget", gid, "--db", url, "--yes", "--storage", str(root)]
    assert main([*args, "--wait", "0"]) == 3
    err = capsys.readouterr().err
    assert "nothing erased" in err and "a-running-sync" in err and email not in err
    with engine.connect() as conn:
        held = conn.execute(sa.text("SELECT COUNT(*) FROM identity_map")).scalar()
    assert held == len(members) + len(others)
    lease.release(engine, "a-running-sync")
    assert main(["forget", gid, "--db", url, "--yes", "--storage", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"forgot {gid}" in out and "identity_map" in out and "source_records" in out
    assert email not in out
    assert not any(s in out for s in source_ids)  # counts only, no personal data

    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        for table in meta.tables.values():
            rows = pd.DataFrame(conn.execute(sa.select(table)).mappings().all())
            if rows.empty:
                continue
            assert _text_cells_equal(rows, {gid}) == 0, table.name
            if "source_id" in rows.columns and "connector" in rows.columns:
                pairs = set(zip(rows["connector"], rows["source_id"], strict=True))
                assert not pairs & set(zip(members["connector"], members["source_id"], strict=True))
        left = pd.read_sql(sa.text("SELECT connector, source_id FROM identity_map"), conn)
        payloads = pd.read_sql(sa.text("SELECT raw_payload FROM quarantine"), conn)["raw_payload"]
    assert not payloads.dropna().str.contains(email, regex=False).any()
    assert payloads.dropna().str.contains("someone.else@example.org", regex=False).any()
    engine.dispose()
    # everyone else is still there
    assert len(left) == len(others)
    for path, frame in before.items():
        after = pd.read_parquet(path)
        assert _text_cells_equal(after, {gid} | source_ids) == 0, path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(after) >= len(frame) - len(members) - 50  # only the person's rows went
    # a second request finds nothing
    assert main(["forget", gid, "--db", url, "--yes", "--storage", str(root)]) == 1


def test_purge_outputs_matches_every_part_of_a_composite_id_only(tmp_path):
    root = tmp_path / "storage"
    (root / "icomm").mkdir(parents=True)
    raw = pd.DataFrame({"UserId": ["u1", "u1", "u2"], "StoreCode": ["SE01", "NO01", "SE01"]})
    raw.to_parquet(root / "icomm" / "raw_customers.parquet")
    removed = purge_outputs(root, {"G1"}, {("icomm", "u1|SE01")}, [("u1", "SE01")])
    assert removed == {"icomm/raw_customers.parquet": 1}
    left = pd.read_parquet(root / "icomm" / "raw_customers.parquet")
    assert list(zip(left["UserId"], left["StoreCode"], strict=True)) == [
        ("u1", "NO01"),
        ("u2", "SE01"),
    ]


def test_purge_outputs_finds_a_raw_payload_with_a_vendor_source_id_field(tmp_path):
    # Voucherify's customers carry a field of their own called source_id (custsync's golden
    # id for those it created, a shop's id for the rest): no connector column beside it
    root = tmp_path / "storage"
    (root / "voucherify").mkdir(parents=True)
    raw = pd.DataFrame(
        {
            "id": ["cust_1", "cust_2"],
            "source_id": ["G1", "shop-77"],
            "name": ["Anna Berg", "Nils Ek"],
            "email": ["anna@example.se", "nils@example.se"],
        }
    )
    raw.to_parquet(root / "voucherify" / "raw_customers.parquet")
    removed = purge_outputs(root, {"G9"}, {("voucherify", "cust_1")}, [("cust_1",)])
    assert removed == {"voucherify/raw_customers.parquet": 1}
    left = pd.read_parquet(root / "voucherify" / "raw_customers.parquet")
    assert left["id"].tolist() == ["cust_2"]


def test_purge_outputs_drops_the_persons_ids_a_pull_noted_as_deleted(tmp_path):
    """An incremental pull notes the ids deleted in the system (its frame's attrs, kept in
    the Parquet file): a forgotten person's id leaves that note too, even when no row of
    theirs is in the file; another connector's note of the same id stays."""
    root = tmp_path / "storage"
    for lane in ("salesforce", "voyado"):
        (root / lane).mkdir(parents=True)
        raw = pd.DataFrame({"Id": ["003B"]})
        raw.attrs[PULL_ATTR] = {"mode": "incremental", "deleted_ids": ["003A", "003C"]}
        raw.to_parquet(root / lane / "raw_customers.parquet")
    removed = purge_outputs(root, {"G1"}, {("salesforce", "003A")}, [("003A",)])
    assert removed == {"salesforce/raw_customers.parquet": 0}
    left = pd.read_parquet(root / "salesforce" / "raw_customers.parquet")
    assert left["Id"].tolist() == ["003B"]
    assert left.attrs[PULL_ATTR] == {"mode": "incremental", "deleted_ids": ["003C"]}
    other = pd.read_parquet(root / "voyado" / "raw_customers.parquet")
    assert other.attrs[PULL_ATTR]["deleted_ids"] == ["003A", "003C"]


def test_rejected_outputs_carry_hashed_payloads_the_state_db_keeps_in_clear(synced):
    url, root = synced
    outputs = sorted(root.glob("*/rejected_customers.parquet"))
    assert outputs
    engine = make_engine(url)
    with engine.connect() as conn:
        table = pd.read_sql(sa.text("SELECT connector, raw_payload FROM quarantine"), conn)
    engine.dispose()
    assert table["raw_payload"].str.contains(CLEAR_EMAIL, regex=True).any()  # clear in the DB
    total = 0
    for path in outputs:
        frame = pd.read_parquet(path)
        total += len(frame)
        assert frame["raw_payload"].dropna().str.fullmatch(r"h\d+").all(), path
        for col in frame.columns:
            text = frame[col].dropna().astype(str)
            assert not text.str.contains(CLEAR_EMAIL, regex=True).any(), (path, col)
    assert total > 0


def test_an_input_asked_for_as_arrow_text_is_read_so(tmp_path):
    """The merge reads the million-row identity map with Arrow-backed text (a tenth of the
    time of one Python string per value); any other input keeps Python strings."""
    from custsync_pipeline.config import DEFAULT_CONFIG_PATH, current_plan
    from custsync_pipeline.defs.golden.assets import build_golden_assets
    from custsync_pipeline.defs.identity.assets import IDENTITY_MAP
    from custsync_pipeline.defs.io import ARROW_TEXT_INPUT

    io = ParquetIOManager(base_dir=str(tmp_path))
    frame = pd.DataFrame(
        {"connector": ["crm", "shop"], "source_id": ["1", None], "n": [1, 2]},
    )
    io.handle_output(dg.build_output_context(asset_key=IDENTITY_MAP), frame)
    plain = io.load_input(dg.build_input_context(asset_key=IDENTITY_MAP))
    assert plain["source_id"].dtype == object
    merge = next(
        a
        for a in build_golden_assets(current_plan(DEFAULT_CONFIG_PATH))
        if isinstance(a, dg.AssetsDefinition)
    )
    asked = merge.node_def.input_def_named("identity_map").metadata
    assert asked.get(ARROW_TEXT_INPUT) is True
    arrow = io.load_input(dg.build_input_context(asset_key=IDENTITY_MAP, definition_metadata=asked))
    assert (
        str(arrow["source_id"].dtype) == "string" and arrow["source_id"].dtype.storage == "pyarrow"
    )
    assert arrow["source_id"].isna().tolist() == [False, True]
    assert arrow["n"].tolist() == [1, 2]
    pd.testing.assert_frame_equal(
        arrow.astype(object), plain.astype(object).where(plain.notna(), pd.NA), check_dtype=False
    )


def test_rows_replaced_in_a_stored_output_read_back_as_a_whole_output_would(tmp_path):
    """``replace_rows`` (a merge of a part brings the golden output up to date in place):
    the named rows leave, the new ones join with the file's types, its attrs are replaced,
    the file stays 0600; rows that do not fit its columns or types write nothing."""
    key = dg.AssetKey("golden_customers")
    io = ParquetIOManager(base_dir=str(tmp_path))
    when = pd.Timestamp("2026-12-01 10:00", tz="UTC")
    whole = pd.DataFrame(
        {
            "golden_id": ["g1", "g2", "g3"],
            "last_name": ["Berg", None, "Lind"],
            "updated": [when, when, pd.NaT],
            "n": [1.0, 2.0, None],
        }
    )
    whole.attrs = {"stamp": "s1"}
    io.handle_output(dg.build_output_context(asset_key=key), whole)
    fresh = pd.DataFrame(
        {
            "golden_id": ["g2", "g4"],
            "last_name": ["Ek", "Ås"],
            "updated": [when + pd.Timedelta(days=1), when],
            "n": [5.0, None],
        }
    )
    table = io.replace_rows(key, "golden_id", ["g2", "g3"], fresh, {"stamp": "s2"})
    assert table is not None and table.num_rows == 3
    out = io.held_output(key)
    expected = pd.concat([whole.iloc[[0]], fresh], ignore_index=True)
    pd.testing.assert_frame_equal(out, expected)
    assert out.attrs == {"stamp": "s2"}
    assert stat.S_IMODE(os.stat(io.key_path(key)).st_mode) == 0o600
    # a column the file lacks, or a value of another type: nothing written
    assert io.replace_rows(key, "golden_id", [], fresh.assign(extra=1), {}) is None
    assert io.replace_rows(key, "golden_id", [], fresh.assign(updated="soon"), {}) is None
    assert io.held_output(key).attrs == {"stamp": "s2"}
    assert io.replace_rows(dg.AssetKey("nothing_yet"), "golden_id", [], fresh, {}) is None
