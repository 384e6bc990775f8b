"""Helpers for end-to-end runs: a sync config pointing at a running sandbox, and a
full materialization of the real definitions (the ones ``dagster dev`` loads)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import yaml

from custsync_pipeline.config import DEFAULT_CONFIG_PATH
from custsync_pipeline.sandbox.server import CREDENTIALS

# the sandbox's demo credentials (one list: the sandbox's own)
SANDBOX_SECRETS = dict(CREDENTIALS)


def write_sync_config(
    path: Path, urls: dict[str, str], state_db_url: str, enabled: set[str] | None = None
) -> Path:
    """The packaged default config, re-pointed at ``urls`` (system -> base URL).

    The connectors pointed at the sandbox send as fast as it answers: the client-side
    token bucket at each vendor's documented rate (25 calls a second to Voucherify, one to
    Exact) is there for the real APIs and has its own tests (``test_http.py``); here it
    would only make a 5,000-person publish wait 200 s."""
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["state_db_url"] = state_db_url
    for name, conn in data["connectors"].items():
        system = conn.get("options", {}).get("sandbox_system", conn["type"])
        if system in urls:
            conn["base_url"] = urls[system]
            options = conn.setdefault("options", {}) or {}
            options["http"] = {**(options.get("http") or {}), "rate_per_s": None}
            conn["options"] = options
        if enabled is not None:
            conn["enabled"] = name in enabled
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_against_sandbox(
    env,
    tmp_path: Path,
    urls: dict[str, str],
    enabled: set[str] | None = None,
    publish: bool = True,
) -> tuple[str, Path]:
    """A SQLite state DB in ``tmp_path`` and the packaged config pointed at ``urls``, both set
    in ``env`` (a monkeypatch) as a whole-graph run reads them; returns (DB URL, config).
    ``publish=False``: no publish targets (the sources alone change between runs)."""
    db_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    env.setenv("CUSTSYNC_STATE_DB_URL", db_url)
    cfg = write_sync_config(tmp_path / "sync.yaml", urls, db_url, enabled=enabled)
    if not publish:
        data = yaml.safe_load(cfg.read_text())
        data["publish"] = []
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    env.setenv("CUSTSYNC_CONFIG", str(cfg))
    return db_url, cfg


def postgres_instance(env, tmp_path: Path, pg_url: str) -> dg.DagsterInstance:
    """The Dagster instance of the repository's production ``dagster.yaml`` (runs, events,
    schedules in PostgreSQL at ``pg_url``) in a fresh ``DAGSTER_HOME`` set in ``env``."""
    import shutil

    home = tmp_path / "pg_home"
    home.mkdir()
    shutil.copy(Path(__file__).resolve().parent.parent / "dagster.yaml", home / "dagster.yaml")
    env.setenv("DAGSTER_HOME", str(home))
    env.setenv("DAGSTER_PG_URL", pg_url)
    instance = dg.DagsterInstance.get()
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    return instance


def materialize_all(
    instance: dg.DagsterInstance, raise_on_error: bool = True
) -> dg.ExecuteInProcessResult:
    """Materialize every asset (and run every check) of the project's definitions."""
    from custsync_pipeline.definitions import defs

    definitions = defs()
    job = definitions.resolve_job_def("sync_job")
    return job.execute_in_process(instance=instance, raise_on_error=raise_on_error)


def metadata_of(result: dg.ExecuteInProcessResult, key: str) -> dict[str, object]:
    from custsync_pipeline.cli_run import materialization_metadata

    return materialization_metadata(result).get(key, {})


def delete_salesforce_contacts(sb, engine, n: int) -> pd.DataFrame:  # noqa: ANN001 - a Sandbox and an Engine
    """Delete ``n`` Salesforce Contacts in the sandbox, each the only Salesforce member of a
    golden record that also has exactly one Voucherify member; returns those pairs
    (``golden_id``, ``source_id_sf``, ``source_id_vf``)."""
    import requests

    from custsync_pipeline_tests.sandbox_fixtures import SF_HEADERS

    ids = pd.read_sql("select connector, source_id, golden_id from identity_map", engine)
    sf = ids[ids["connector"] == "salesforce"]
    vf = ids[ids["connector"] == "voucherify"]
    contacts = set(pd.DataFrame(sb.records("salesforce"))["Id"])
    one_sf = sf[~sf["golden_id"].duplicated(keep=False) & sf["source_id"].isin(contacts)]
    pairs = one_sf.merge(vf, on="golden_id", suffixes=("_sf", "_vf"))
    pairs = pairs[~pairs["golden_id"].duplicated(keep=False)].head(n)
    assert len(pairs) == n
    base = f"{sb.urls['salesforce']}/services/data/v60.0/sobjects/Contact"
    for contact_id in pairs["source_id_sf"]:
        r = requests.delete(f"{base}/{contact_id}", headers=SF_HEADERS, timeout=10)
        assert r.status_code == 204, r.text
    return pairs
