"""Shared pytest fixtures for tests that talk to the sandbox over real sockets.

In a test module::

    @pytest.fixture
    def sandbox(monkeypatch):
        yield from sandbox_fixture(monkeypatch)

or use :func:`running_sandbox` directly for custom knobs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from custsync_pipeline.sandbox import CREDENTIALS, Sandbox

SF_HEADERS = {"Authorization": f"Bearer {CREDENTIALS['SALESFORCE_ACCESS_TOKEN']}"}
VF_HEADERS = {
    "X-App-Id": CREDENTIALS["VOUCHERIFY_APP_ID"],
    "X-App-Token": CREDENTIALS["VOUCHERIFY_APP_TOKEN"],
}


@contextmanager
def running_sandbox(**kwargs) -> Iterator[Sandbox]:
    """A sandbox on ephemeral ports (never fixed ports: tests run in parallel)."""
    kwargs.setdefault("seed", 7)
    kwargs.setdefault("people", 300)
    with Sandbox(base_port=0, **kwargs) as sb:
        yield sb


def sandbox_fixture(monkeypatch: pytest.MonkeyPatch, **kwargs) -> Iterator[Sandbox]:
    """Body of a ``sandbox`` fixture: default credentials, ephemeral ports."""
    for name in CREDENTIALS:  # accept the documented defaults whatever the shell exports
        monkeypatch.delenv(name, raising=False)
    with running_sandbox(**kwargs) as sb:
        yield sb


@contextmanager
def sandbox_process(*args: str) -> Iterator[tuple[dict[str, str], list[str], list[str]]]:
    """``python -m custsync_pipeline.sandbox --base-port 0 <args>`` as a user starts it,
    without the shell's sandbox credentials (the documented defaults apply). Yields
    (urls, stdout lines up to READY, lines after the stop); then SIGTERM, and the
    process must exit 0."""
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIALS}
    env["PYTHONPATH"] = os.getcwd()
    cmd = [sys.executable, "-m", "custsync_pipeline.sandbox", "--base-port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    after: list[str] = []
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("READY "):
                break
        yield json.loads(lines[-1][len("READY ") :]), lines, after
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        after.extend(out.splitlines())
    assert proc.returncode == 0


def closed_port() -> int:
    """A 127.0.0.1 port nobody listens on (bound, then released): a system that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SMALL_PAGES = {"salesforce": {"page_size": 25}, "exact": {"page_size": 10}}


def module_sandbox(seed: int, people: int, options: dict | None = None) -> Iterator[Sandbox]:
    """Body of a module-scoped ``sb`` fixture: documented default credentials, ephemeral
    ports, small pages (so each read makes enough requests to meet injected faults)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in CREDENTIALS:
            mp.delenv(name, raising=False)
        with Sandbox(
            seed=seed, people=people, base_port=0, options=options or SMALL_PAGES
        ) as sandbox:
            yield sandbox


def admin(sb: Sandbox, system: str, action: str, body: dict | None = None) -> requests.Response:
    url = f"{sb.urls[system]}/_sandbox/{action}"
    return (
        requests.post(url, json=body or {}, timeout=10)
        if body is not None
        else requests.get(url, timeout=10)
    )
