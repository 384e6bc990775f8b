"""The bounded soak (issue 10 item 6): 20 cycles at 40 people of random edits, deletes and
inserts in every sandbox system over real sockets (Salesforce, Voucherify and Voyado are
also targets), 10% injected faults, Voucherify down from its extraction through its
publish for one cycle, and one ``custsync run`` killed with SIGKILL mid-publish; every
invariant (``soak.py``) holds after every cycle. The 200-cycle run is
``benchmarks/soak.py``."""

from __future__ import annotations

from pathlib import Path

from custsync_pipeline_tests.soak import run_soak


def test_soak_20_cycles(dagster_env, tmp_path: Path):
    figures = run_soak(tmp_path / "soak", cycles=20, people=40, seed=7)
    assert figures.cycles == 20
    assert figures.violations == [], figures.violations
    assert figures.failed_runs >= 2  # the outage and the kill at least
    assert figures.outage_queued > 0  # the outage met writes, which the next runs sent
    assert figures.edits + figures.deletes + figures.inserts > 20
