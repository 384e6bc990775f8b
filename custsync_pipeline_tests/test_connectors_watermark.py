"""Incremental reads: the watermark never goes backwards, and a pull that fails
mid-way returns no watermark (the caller keeps the old one and loses nothing).
Against the sandbox over real sockets."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from custsync_pipeline.connectors import ConnectorError
from custsync_pipeline.sandbox import Sandbox
from custsync_pipeline_tests.sandbox_fixtures import module_sandbox
from custsync_pipeline_tests.test_connectors_systems import SPECS, connector, source_ids


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    yield from module_sandbox(
        seed=41, people=200, options={"salesforce": {"page_size": 5}, "exact": {"page_size": 5}}
    )


@pytest.fixture(autouse=True)
def _fresh(sb: Sandbox) -> None:
    sb.reset()


@pytest.mark.parametrize("system", list(SPECS))
def test_a_pull_that_only_sees_the_overlap_window_keeps_the_watermark(sb, system):
    conn = connector(sb, system)
    sb.changes(system, edit=2, seed=8)
    full = conn.read()
    # a later watermark: the last changes are older than it but inside the 10-minute
    # overlap, so the pull returns them again; their times must not move it back
    since = full.watermark + timedelta(minutes=5)
    inc = conn.read(since=since)
    assert len(inc.records) > 0, "the overlap window brings the last changes back"
    assert inc.watermark == since
    # and a change after it moves it forward as usual
    changed = sb.changes(system, edit=1, seed=9)
    later = conn.read(since=full.watermark)
    assert set(changed["edited"]) <= source_ids(conn, later.records)
    assert later.watermark > full.watermark


@pytest.mark.parametrize("system", ["salesforce", "voucherify"])
def test_a_page_failing_mid_pull_returns_no_watermark_and_loses_nothing(sb, system):
    opts = {"page_limit": 5} if system == "voucherify" else {}
    conn = connector(sb, system, **opts)
    before = conn.read()
    changed = sb.changes(system, edit=20, seed=3)
    # two answers, then an outage that outlasts the client's retries
    served = dict(sb.emulators[system].stats)
    sb.set_faults(system, fail_after=2)
    try:
        with pytest.raises(ConnectorError) as info:
            conn.read(since=before.watermark)
    finally:
        sb.set_faults(system, fail_after=-1)
    assert info.value.transient and info.value.status == 503
    stats = sb.emulators[system].stats
    ok = (stats["requests"] - served["requests"]) - (stats["5xx"] - served["5xx"])
    assert ok == 2 and stats["5xx"] - served["5xx"] > 1  # two pages served, then the outage
    # nothing was returned, so the caller still holds the old watermark: the retry finds it all
    again = conn.read(since=before.watermark)
    assert set(changed["edited"]) <= source_ids(conn, again.records)
    assert again.watermark > before.watermark
