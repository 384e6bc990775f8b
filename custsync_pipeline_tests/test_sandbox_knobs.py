"""Sandbox knobs set at start (constructor and CLI) and the slow-response and
malformed-page faults, each seen through real served requests."""

from __future__ import annotations

import pandas as pd
import pytest
import requests

from custsync_pipeline.sandbox import CREDENTIALS, Sandbox
from custsync_pipeline_tests.sandbox_fixtures import sandbox_process
from custsync_pipeline_tests.test_connectors_systems import FAST_HTTP, connector, source_ids

VOYADO_HEADERS = {"apikey": CREDENTIALS["VOYADO_API_KEY"]}


@pytest.fixture(autouse=True)
def _default_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CREDENTIALS:  # the emulators accept the documented defaults
        monkeypatch.delenv(name, raising=False)


def test_faults_set_at_start_answer_the_first_request():
    with Sandbox(seed=2, people=40, systems=["icomm", "katana"], faults={"rate_5xx": 1.0}) as sb:
        resp = requests.get(
            f"{sb.urls['icomm']}/api/v1/profiles/1/customers",
            headers={"X-Api-Key": CREDENTIALS["ICOMM_API_KEY"]},
            timeout=10,
        )
        assert resp.status_code == 503
        assert resp.json()["Error"] == "SERVER_UNAVAILABLE"  # Icomm's own error shape
        stats = requests.get(f"{sb.urls['katana']}/_sandbox/stats", timeout=10).json()
        assert stats["faults"]["rate_5xx"] == 1.0 and stats["5xx"] == 0
        requests.get(f"{sb.urls['katana']}/api/v1/customers", timeout=10)
        assert requests.get(f"{sb.urls['katana']}/_sandbox/stats", timeout=10).json()["5xx"] == 1


def test_changes_set_at_start_are_served_and_in_the_feeds():
    with Sandbox(seed=4, people=120, systems=["voyado", "exact"]) as plain:
        before = {
            s: source_ids(connector(plain, s), connector(plain, s).read().records)
            for s in plain.systems
        }
    spec = {"edit": 2, "delete": 2, "add": 3}
    with Sandbox(seed=4, people=120, systems=["voyado", "exact"], changes=spec) as sb:
        for system in sb.systems:
            touched = sb.start_changes[system]
            assert [len(touched[k]) for k in ("edited", "deleted", "added")] == [2, 2, 3]
            conn = connector(sb, system)
            full = conn.read()
            got = source_ids(conn, full.records)
            assert got == (before[system] - set(touched["deleted"])) | set(touched["added"])
            # the edits, inserts and deletes are recent changes: an incremental pull from
            # an hour ago finds exactly them, and the deletes in the feed
            since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1)
            inc = conn.read(since=since.to_pydatetime())
            assert source_ids(conn, inc.records) == set(touched["edited"]) | set(touched["added"])
            assert set(touched["deleted"]) <= set(inc.deleted_ids)


def test_changes_at_start_per_system_and_object_type():
    changes = {"salesforce": {"add": 2, "object_type": "Lead"}, "voyado": {"edit": 1}}
    with Sandbox(seed=4, people=60, systems=["salesforce", "voyado"], changes=changes) as sb:
        added = sb.start_changes["salesforce"]["added"]
        conn = connector(sb, "salesforce", objects=["Lead"])
        assert set(added) <= source_ids(conn, conn.read().records)
        assert len(sb.start_changes["voyado"]["edited"]) == 1
    with pytest.raises(ValueError, match="unknown system"):
        Sandbox(changes={"nosuch": {"add": 1}})
    with pytest.raises(ValueError, match=r"changes.voyado: unknown key\(s\) \['adds'\]"):
        Sandbox(changes={"voyado": {"adds": 1}})


def test_cli_sets_changes_and_faults_at_start():
    with Sandbox(seed=9, people=40, systems=["voyado"]) as plain:
        generated = len(plain.records("voyado"))
    args = ["--people", "40", "--seed", "9", "--systems", "voyado"]
    args += ["--add", "3", "--delete", "1", "--edit", "2", "--rate-5xx", "1"]
    with sandbox_process(*args) as (urls, lines, _):
        url = urls["voyado"]
        assert any("changes at start, voyado: 2 edited, 1 deleted, 3 added" in x for x in lines)
        records = requests.get(f"{url}/_sandbox/records", timeout=10).json()
        assert len(records) == generated + 3 - 1
        resp = requests.get(
            f"{url}/api/v3/contacts/{records[0]['id']}", headers=VOYADO_HEADERS, timeout=10
        )
        assert resp.status_code == 503


@pytest.mark.parametrize("system", ["voucherify", "icomm"])
def test_slow_responses_time_out_are_retried_and_the_read_completes(system):
    with Sandbox(seed=6, people=150, systems=[system]) as sb:
        clean = connector(sb, system, page_limit=10).read()
        sb.set_faults(system, slow_rate=0.3, slow_seconds=0.6, seed=3)
        http = {**FAST_HTTP, "read_timeout_s": 0.25}
        slow = connector(sb, system, page_limit=10, http=http).read()
        stats = sb.emulators[system].stats
    assert stats["slow"] > 0
    assert slow.stats.retries >= stats["slow"] - 1  # each slow answer timed out (the last may not)
    assert slow.stats.retries > 0
    key = ["id"] if system == "voucherify" else ["UserId", "StoreCode"]
    pd.testing.assert_frame_equal(
        clean.records.sort_values(key).reset_index(drop=True),
        slow.records.sort_values(key).reset_index(drop=True),
    )


@pytest.mark.parametrize("system", ["voyado", "exact", "icomm"])
def test_malformed_pages_are_fetched_again_for_other_emulators(system):
    with Sandbox(seed=6, people=150, systems=[system]) as sb:
        sb.set_faults(system, malformed_pages=2)
        conn = connector(sb, system)
        result = conn.read()
        assert sb.emulators[system].stats["malformed"] == 2
        assert result.stats.retries >= 2
        assert len(result.records) == len(sb.records(system))
