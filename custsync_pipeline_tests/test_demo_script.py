"""The README's first command, as a new user runs it: ``bash scripts/demo.sh`` in a shell
that has nothing set (no secrets, no config, no DAGSTER_HOME), on its own sandbox port.
It starts the sandbox, runs the sync job, prints the summary; run again, it publishes
nothing; ``scripts/stop-sandbox.sh`` stops the sandbox it started.

The repository's scripts and ``pyproject.toml`` are copied to a temporary folder beside
the installed ``.venv`` (linked): the run's ``.custsync`` and ``.dagster_home`` land
there, not in the checkout."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from custsync_pipeline.sandbox.server import PORT_OFFSETS

ROOT = Path(__file__).resolve().parent.parent


def _free_base_port() -> int:
    """A base port whose sandbox ports (base + every offset) are all free."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + max(PORT_OFFSETS.values()) > 65535:
            continue
        try:
            for off in PORT_OFFSETS.values():
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + off))
            return base
        except OSError:
            continue
    raise RuntimeError("no free range of sandbox ports")


def _deltas(out: str) -> dict[str, int]:
    """target -> deltas, from the summary's target table."""
    rows = re.findall(r"^(\w+)\s+(\d+)\s+\d+\s+\d+\s+\d+\s+\d+$", out, flags=re.M)
    return {name: int(n) for name, n in rows}


def test_demo_script_runs_the_sync_job_then_publishes_nothing_the_second_time(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    (repo / ".venv").symlink_to(ROOT / ".venv")
    base = _free_base_port()
    # a fresh shell: nothing custsync reads is set
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "CUSTSYNC_SANDBOX_PORT": str(base),
    }

    def demo() -> str:
        done = subprocess.run(
            ["bash", "scripts/demo.sh"],
            cwd=repo, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    pidfile = repo / ".custsync" / "sandbox.pid"
    try:
        first = demo()
        assert f"starting the sandbox APIs on 127.0.0.1:{base}" in first
        assert "(sync_job: success)" in first
        published = _deltas(first)
        assert set(published) == {"salesforce", "voucherify", "voyado"}
        assert all(n > 0 for n in published.values()), published
        assert (repo / ".custsync" / "state.sqlite").exists()
        # every system was read from this sandbox (its port), not from a default one
        for system, off in PORT_OFFSETS.items():
            url = f"http://127.0.0.1:{base + off}/_sandbox/stats"
            with urllib.request.urlopen(url, timeout=10) as answer:
                assert json.load(answer)["requests"] > 0, system
        assert (repo / ".dagster_home" / "dagster.yaml").exists()
        second = demo()
        assert "sandbox already running" in second
        assert "(sync_job: success)" in second
        assert _deltas(second) == dict.fromkeys(published, 0), second[-6000:]
    finally:
        pid = int(pidfile.read_text()) if pidfile.exists() else None
        stopped = subprocess.run(
            ["bash", "scripts/stop-sandbox.sh"], cwd=repo, env=env, capture_output=True, text=True
        )
    assert "sandbox stopped" in stopped.stdout
    assert pid is not None and _gone(pid)


def _gone(pid: int, wait_s: float = 15.0) -> bool:
    """Whether process ``pid`` ends within ``wait_s``."""
    deadline = time.monotonic() + wait_s
    stat = Path(f"/proc/{pid}/stat")
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # ended, not yet reaped by a parent that never waits (a container's init)
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (OSError, IndexError):
            pass
        time.sleep(0.1)
    return False
