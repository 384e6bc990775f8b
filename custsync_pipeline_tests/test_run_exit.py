"""``custsync run`` exits non-zero when a target dead-letters deltas (issue 15), and says which
target and how many in one line; the publish step fails (issue 10), naming target and reason. A real sync against the sandbox over real sockets: KatanaPIM
(a YAML-only REST connector) is made a target whose write path the API does not serve."""

from __future__ import annotations

import argparse

import yaml

from custsync_pipeline import cli_run
from custsync_pipeline.sandbox.server import Sandbox
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
