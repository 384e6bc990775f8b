"""The extraction assets in Dagster against the sandbox over real sockets.

A connector that is down fails only its own ``raw_customers`` asset, fast and
with a clear message, while the other lanes succeed; under 20 % injected
429/5xx every connector's asset returns exactly the fault-free records and
its materialization metadata shows the retries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from custsync_pipeline.config import DEFAULT_CONFIG_PATH, load_sync_config
from custsync_pipeline.defs.extract.assets import build_extract_assets, raw_key
from custsync_pipeline.defs.resources import build_resources
from custsync_pipeline.sandbox import CREDENTIALS, Sandbox
from custsync_pipeline_tests.sandbox_fixtures import closed_port, module_sandbox
from custsync_pipeline_tests.test_connectors_systems import FAST_HTTP, SPECS

ALL = list(SPECS)  # salesforce, voucherify, voyado, exact, icomm, katana
KEYS = {
    "salesforce": ["Id"],
    "voucherify": ["id"],
    "voyado": ["id"],
    "exact": ["ID"],
    "icomm": ["UserId", "StoreCode"],
    "katana": ["id"],
}


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    yield from module_sandbox(seed=31, people=300)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, sb: Sandbox) -> None:
    sb.reset()
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)


def write_config(tmp_path: Path, urls: dict[str, str], **extra_options: dict) -> Path:
    """The packaged config with every connector type enabled against ``urls``."""
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["state_db_url"] = f"sqlite:///{tmp_path / 'state.sqlite'}"
    connectors = {}
    for name, spec in SPECS.items():
        spec = dict(spec)
        spec["options"] = {**spec.get("options", {}), "http": FAST_HTTP}
        spec["options"].update(extra_options.get(name, {}))
        packaged = data["connectors"].get(name, {})
        if "aspects" in packaged:  # what the packaged flow expects each to give
            spec["aspects"] = packaged["aspects"]
        connectors[name] = {**spec, "base_url": urls[name]}
    data["connectors"] = connectors
    data.pop("transactions", None)  # no order feed among these connectors
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


OBJECTS = {"salesforce": [None, "Account", "Lead"], "exact": [None, "Contacts"]}


def stored_count(sb: Sandbox, system: str) -> int:
    return sum(len(sb.records(system, obj)) for obj in OBJECTS.get(system, [None]))


def materialize_raw(config: Path) -> dg.ExecuteInProcessResult:
    cfg = load_sync_config(config)
    # the raw_customers assets only (the canonical multi-assets have two keys)
    raw = [a for a in build_extract_assets(cfg.plan()) if len(a.keys) == 1]
    with dg.instance_for_test() as instance:
        return dg.materialize(
            raw,
            resources=build_resources(cfg),
            instance=instance,
            raise_on_error=False,
        )


def raw_metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        out[mat.asset_key.path[0]] = {k: v.value for k, v in mat.metadata.items()}
    return out


def test_a_refused_connector_fails_fast_alone_with_a_clear_message(sb, tmp_path):
    dead = f"http://127.0.0.1:{closed_port()}"
    urls = {**sb.urls, "voyado": dead}
    config = write_config(tmp_path, urls)
    started = time.monotonic()
    result = materialize_raw(config)
    elapsed = time.monotonic() - started
    assert not result.success
    # no RetryPolicy sleeps (10 s, 20 s): the asset fails on its first attempt
    assert elapsed < 25, elapsed  # the RetryPolicy alone would sleep 10 s + 20 s
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    assert "voyado" in failures[0].step_key
    err = failures[0].event_specific_data.error
    assert err.cls_name == "Failure"
    assert "Exceeded max_retries" not in err.message
    assert f"connector voyado at {dead}: unreachable, not retrying" in err.message
    assert "sandbox-voyado-key" not in err.message
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    meta = raw_metadata(result)
    assert set(meta) == set(ALL) - {"voyado"}
    for name in meta:
        assert meta[name]["dagster/row_count"] == len(sb.records(name)), name


def test_salesforce_quota_fails_fast_in_dagster_too(tmp_path, monkeypatch):
    with Sandbox(
        seed=3, people=40, systems=["salesforce"], options={"salesforce": {"daily_limit": 0}}
    ) as small:
        urls = {s: small.urls.get("salesforce") for s in SPECS}
        config = write_config(tmp_path, urls)
        data = yaml.safe_load(config.read_text())
        for name in data["connectors"]:
            data["connectors"][name]["enabled"] = name == "salesforce"
        config.write_text(yaml.safe_dump(data))
        started = time.monotonic()
        result = materialize_raw(config)
    assert time.monotonic() - started < 25  # no 10 s + 20 s RetryPolicy sleeps
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "connector salesforce" in message and "quota exceeded, not retrying" in message
    assert "REQUEST_LIMIT_EXCEEDED" in message
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_twenty_percent_faults_every_asset_gives_the_fault_free_records(sb, tmp_path):
    # Katana's and Icomm's resources are small: smaller pages so their reads meet faults too
    small = {
        "katana": {"paging": {**SPECS["katana"]["options"]["paging"], "page_size": 5}},
        "icomm": {"page_limit": 5},
        # every object type: Salesforce Account and Lead, Exact Contacts
        "salesforce": {"objects": ["Contact", "Account", "Lead"]},
        "exact": {"resources": ["Accounts", "Contacts"]},
    }
    config = write_config(tmp_path, sb.urls, **small)
    clean = materialize_raw(config)
    assert clean.success
    # 20 % of requests: 429 (half of them with a real Retry-After) or 503
    sb.set_faults(rate_429=0.1, rate_5xx=0.1, retry_after=0, seed=17)
    for system in ("salesforce", "voyado", "icomm"):
        sb.set_faults(system, retry_after=1)  # honoured, capped by retry_after_max_s
    try:
        noisy = materialize_raw(config)
        served = {s: dict(sb.emulators[s].stats) for s in ALL}
    finally:
        sb.set_faults(rate_429=0, rate_5xx=0)
    assert noisy.success
    meta = raw_metadata(noisy)
    clean_meta = raw_metadata(clean)
    for name in ALL:
        assert served[name]["429"] + served[name]["5xx"] > 0, name
        assert meta[name]["retries"] > 0, name
        assert meta[name]["retries"] >= served[name]["429"] + served[name]["5xx"], name
        assert clean_meta[name]["retries"] == 0, name
        assert meta[name]["dagster/row_count"] == stored_count(sb, name), name
        a = clean.asset_value(raw_key(name))
        b = noisy.asset_value(raw_key(name))
        cols = sorted(a.columns)
        key = KEYS[name]
        pd.testing.assert_frame_equal(
            a[cols].sort_values(key).reset_index(drop=True),
            b[cols].sort_values(key).reset_index(drop=True),
            obj=name,
        )


def _only(config: Path, name: str) -> None:
    data = yaml.safe_load(config.read_text())
    for other in data["connectors"]:
        data["connectors"][other]["enabled"] = other == name
    config.write_text(yaml.safe_dump(data))


def test_a_rejected_credential_fails_fast_without_the_secret(sb, tmp_path, monkeypatch):
    secret = "wrong-but-secret-token-456"
    # another variable: the emulator itself accepts whatever SALESFORCE_ACCESS_TOKEN holds
    monkeypatch.setenv("OLD_SALESFORCE_TOKEN", secret)
    config = write_config(tmp_path, sb.urls)
    _only(config, "salesforce")
    data = yaml.safe_load(config.read_text())
    data["connectors"]["salesforce"]["credentials"] = {"access_token": "OLD_SALESFORCE_TOKEN"}
    config.write_text(yaml.safe_dump(data))
    started = time.monotonic()
    result = materialize_raw(config)
    assert time.monotonic() - started < 25  # no 10 s + 20 s RetryPolicy sleeps
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert f"connector salesforce at {sb.urls['salesforce']}: not authorized" in message
    assert "INVALID_SESSION_ID" in message and secret not in message
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_a_transient_outage_still_goes_to_the_retry_policy(sb, tmp_path):
    config = write_config(tmp_path, sb.urls)
    _only(config, "voucherify")
    data = yaml.safe_load(config.read_text())
    data["connectors"]["voucherify"]["options"]["http"]["max_retries"] = 1
    config.write_text(yaml.safe_dump(data))
    sb.set_faults("voucherify", fail_after=0)  # every request 503 until the outage ends
    stop = threading.Event()

    def end_outage_after_the_first_attempt() -> None:
        # the first attempt makes 2 requests (1 HTTP retry), both 503: then the API is back
        while not stop.wait(0.05):
            if sb.emulators["voucherify"].stats["5xx"] >= 2:
                sb.set_faults("voucherify", fail_after=-1)
                return

    watcher = threading.Thread(target=end_outage_after_the_first_attempt, daemon=True)
    watcher.start()
    try:
        result = materialize_raw(config)
    finally:
        stop.set()
        watcher.join(timeout=5)
        sb.set_faults("voucherify", fail_after=-1)
    assert result.success  # the asset's RetryPolicy ran it again after 10 s
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == 1
    assert "HTTP 503 after 1 retries" in retried[0].event_specific_data.error.to_string()
    assert raw_metadata(result)["voucherify"]["dagster/row_count"] == len(sb.records("voucherify"))
