"""Two ``custsync run`` started together (issue 10, item 5), as two real processes against
the sandbox, on SQLite and on PostgreSQL: the state lease lets one write at a time, the
second (started while the first holds it) waits for the first and then finds nothing to change, so golden events are never
doubled and the targets receive each write once. With no patience left (``runs.lease_wait_s:
0``) the second exits 2 with a message naming the holder instead."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import lease
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import SANDBOX_SECRETS, write_sync_config

ROOT = Path(__file__).resolve().parent.parent


def _env(cfg: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CUSTSYNC_STATE_DB_URL"}
    env.update(SANDBOX_SECRETS, CUSTSYNC_CONFIG=str(cfg), DAGSTER_HOME=str(home))
    env["PYTHONPATH"] = str(ROOT)
    return env


def _start(env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "custsync_pipeline.cli", "run"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_two_runs_started_together_write_one_after_the_other(db, tmp_path, request) -> None:
    url = (
        f"sqlite:///{tmp_path / 'state.sqlite'}"
        if db == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    home = tmp_path / "home"
    home.mkdir()
    with Sandbox(seed=5, people=40, base_port=0) as sb:
        cfg = write_sync_config(
            tmp_path / "sync.yaml", sb.urls, url, enabled={"salesforce", "voucherify"}
        )
        env = _env(cfg, home)
        first = _start(env)
        # the second starts once the first holds the lease (so the two overlap for sure,
        # and do not race to create the Dagster instance's own SQLite tables)
        engine = StateDB(url).create_all().engine
        deadline = time.monotonic() + 120
        while lease.current(engine) is None and first.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        procs = [first, _start(env)]
        outs = [p.communicate(timeout=240) for p in procs]
        codes = [p.returncode for p in procs]
        assert codes == [0, 0], [o[1][-2000:] for o in outs]
        # one of them waited for the other's lease, and said so
        assert any("another sync holds the state lease" in err for _, err in outs)

        events = pd.read_sql("select golden_id, version, field from golden_events", engine)
        golden = pd.read_sql("select golden_id, version from golden_records", engine)
        assert len(golden) > 0 and (golden["version"] == 1).all()  # the second changed nothing
        assert not events.duplicated().any(), "golden events doubled"
        # each golden record created once in Voucherify: no write was doubled
        vc = pd.DataFrame(sb.records("voucherify"))
        ours = vc[vc["source_id"].isin(golden["golden_id"])]
        assert len(ours) > 0 and ours["source_id"].is_unique
        assert lease.current(engine) is None  # both let go
        engine.dispose()


def test_no_patience_exits_2_naming_the_holder(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    home = tmp_path / "home"
    home.mkdir()
    cfg = write_sync_config(tmp_path / "sync.yaml", {}, url, enabled={"salesforce"})
    data = yaml.safe_load(cfg.read_text())
    data["runs"] = {"lease_wait_s": 0}
    cfg.write_text(yaml.safe_dump(data))
    engine = StateDB(url).create_all().engine
    assert lease.try_acquire(engine, "custsync-run-elsewhere", ttl_s=300)
    proc = _start(_env(cfg, home))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err[-2000:]
    assert "custsync-run-elsewhere" in err and "try again" in err
    assert "custsync run summary" not in out  # nothing ran
    engine.dispose()
