"""``custsync run`` exits non-zero when a target dead-letters deltas (issue 15), and says which
target and how many in one line; the publish step fails (issue 10), naming target and reason. A real sync against the sandbox over real sockets: KatanaPIM
(a YAML-only REST connector) is made a target whose write path the API does not serve."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import yaml

from custsync_pipeline import cli_run
from custsync_pipeline.config import DEFAULT_CONFIG_PATH, base_url_env_var
from custsync_pipeline.sandbox.server import CREDENTIALS, PORT_OFFSETS, Sandbox
from custsync_pipeline_tests.e2e import write_sync_config


def test_run_exits_1_and_names_the_target_when_deltas_are_dead_lettered(
    dagster_env, tmp_path, capsys
) -> None:
    db_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    dagster_env.setenv("CUSTSYNC_STATE_DB_URL", db_url)
    with Sandbox(seed=5, people=40, base_port=0) as sb:
        path = write_sync_config(
            tmp_path / "sync.yaml", sb.urls, db_url, enabled={"salesforce", "katana"}
        )
        data = yaml.safe_load(path.read_text())
        data["connectors"]["katana"]["options"]["write"] = {"path": "/api/v1/no-such-endpoint"}
        data["publish"] = [{"connector": "katana", "fields": ["first_name", "last_name", "email"]}]
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        dagster_env.setenv("CUSTSYNC_CONFIG", str(path))
        code = cli_run.run(argparse.Namespace(config=None))
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("  katana: "))
    assert "dead-lettered" in line
    dead = int(line.split("failed (retried by the outbox sensor), ")[1].split()[0])
    assert dead > 0
    # the run does not report success while the target refused the writes: its publish step
    # failed, naming the target and the reason
    assert "sync_job: FAILED" in out
    failed = next(x for x in out.splitlines() if x.startswith("  katana: katana__published"))
    assert "dead-lettered" in failed and "404" in failed
    assert code == 1


def test_an_unset_credential_fails_only_its_connector_and_names_the_variable(
    dagster_env, tmp_path, capsys
) -> None:
    """Voyado's secret missing from the environment: its lane and its publish step fail
    with a line naming the variable and the key (no value, no stack trace); the other
    lanes run, the golden records are merged, Salesforce is published to, and the shop's
    orders reach Salesforce while the transactions step names Voyado."""
    db_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    dagster_env.setenv("CUSTSYNC_STATE_DB_URL", db_url)
    dagster_env.delenv("VOYADO_API_KEY")
    with Sandbox(seed=5, people=40, base_port=0) as sb:
        path = write_sync_config(
            tmp_path / "sync.yaml", sb.urls, db_url, enabled={"salesforce", "voyado", "shop"}
        )
        dagster_env.setenv("CUSTSYNC_CONFIG", str(path))
        code = cli_run.run(argparse.Namespace(config=None))
        purchases = sb.records("salesforce", "Purchase__c")
        with urllib.request.urlopen(f"{sb.urls['voyado']}/_sandbox/stats", timeout=10) as r:
            voyado_requests = json.load(r)["requests"]
    captured = capsys.readouterr()
    out = captured.out
    assert code == 1
    failed = [x for x in out.splitlines() if x.startswith("  voyado: ")]
    assert failed and all(
        "environment variable VOYADO_API_KEY (credentials.api_key) is not set" in x for x in failed
    ), failed
    assert not any(x.startswith("  salesforce: ") for x in out.splitlines())
    golden = next(x for x in out.splitlines() if x.startswith("golden records"))
    assert int(golden.split(":")[1].split()[0]) > 0
    targets = out.split("\ntarget ", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    rows = {r.split()[0]: r.split()[1:] for r in targets}
    assert rows["voyado"] == ["-"] * 5  # its publish step failed
    assert rows["salesforce"][2:4] == ["0", "0"]  # published to: nothing failed or dead
    assert voyado_requests == 0  # nothing was sent to it, not even a read
    # the shop's orders went on to Salesforce; the transactions step names Voyado
    assert len(purchases) > 0
    assert any("VOYADO_API_KEY" in x and "transactions" in x for x in out.splitlines()), out
    assert "Traceback" not in out + captured.err
    assert not any(v in out + captured.err for v in CREDENTIALS.values())


def test_the_sandbox_env_script_exports_every_credential_the_packaged_config_reads() -> None:
    """``scripts/sandbox-env.sh`` (what ``scripts/demo.sh`` sources) sets every environment
    variable the packaged config's connectors read, to the value the sandbox accepts: one
    missing fails the README's first command."""
    root = Path(__file__).resolve().parent.parent
    env = subprocess.run(
        ["bash", "-c", "source scripts/sandbox-env.sh && env -0"],
        cwd=root, env={"PATH": os.environ["PATH"]}, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    exported = dict(line.split("=", 1) for line in env.split("\0") if "=" in line)
    named = {
        env_name
        for conn in yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())["connectors"].values()
        for env_name in conn.get("credentials", {}).values()
    }
    assert "SHOP_API_KEY" in named
    assert {n: exported.get(n) for n in named} == {n: CREDENTIALS[n] for n in named}


def test_the_sandbox_env_script_points_every_connector_at_a_sandbox_on_another_port() -> None:
    """``CUSTSYNC_SANDBOX_PORT``: the demo starts the sandbox there, and every connector's
    base URL follows it (``CUSTSYNC_<NAME>_BASE_URL``, at the sandbox's port offsets); a
    URL the user set already stays."""
    root = Path(__file__).resolve().parent.parent
    env = {"PATH": os.environ["PATH"], "CUSTSYNC_SANDBOX_PORT": "19701"}
    env["CUSTSYNC_ICOMM_BASE_URL"] = "https://icomm.example"
    out = subprocess.run(
        ["bash", "-c", "source scripts/sandbox-env.sh && env -0"],
        cwd=root, env=env, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    exported = dict(line.split("=", 1) for line in out.split("\0") if "=" in line)
    want = {base_url_env_var(s): f"http://127.0.0.1:{19701 + o}" for s, o in PORT_OFFSETS.items()}
    want["CUSTSYNC_ICOMM_BASE_URL"] = "https://icomm.example"
    assert {k: exported.get(k) for k in want} == want
    assert set(PORT_OFFSETS) == set(yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())["connectors"])


def test_a_state_db_that_cannot_be_opened_is_one_line_and_nothing_runs(
    dagster_env, tmp_path, capsys, pg_admin_url
) -> None:
    """``custsync run`` on a PostgreSQL database that does not exist (custsync makes its
    tables, not the database): one line naming the URL, its password hidden, exit 2."""
    from sqlalchemy.engine import make_url

    url = (
        make_url(pg_admin_url)
        .set(database=f"no_such_db_{os.getpid()}", password="hunter2")
        .render_as_string(hide_password=False)
    )
    dagster_env.setenv("CUSTSYNC_STATE_DB_URL", url)
    urls = {s: f"http://127.0.0.1:{9 + i}" for i, s in enumerate(PORT_OFFSETS)}
    path = write_sync_config(tmp_path / "sync.yaml", urls, url)
    dagster_env.setenv("CUSTSYNC_CONFIG", str(path))
    assert cli_run.run(argparse.Namespace(config=None)) == 2
    captured = capsys.readouterr()
    lines = [x for x in captured.err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("custsync run: cannot open the state DB ")
    assert f"no_such_db_{os.getpid()}" in lines[0] and "does not exist" in lines[0]
    assert "hunter2" not in captured.err + captured.out and "Traceback" not in captured.err
