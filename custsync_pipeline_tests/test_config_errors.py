"""A broken sync config is named before the run (issue 15): every mistake stops the load with
at most a few lines naming the key (a misspelt one with the closest valid key), the CLI prints
them without a traceback and exits non-zero; ``CUSTSYNC_<NAME>_BASE_URL`` points a connector
elsewhere without copying the file."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from custsync_pipeline.cli import main
from custsync_pipeline.config import DEFAULT_CONFIG_PATH, ConfigError, load_sync_config

BASE = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


def _c(d: dict) -> dict:
    return d["connectors"]


# mistake -> (edit of the packaged config, text the message must hold)
MISTAKES = {
    "type_typo": (
        lambda d: _c(d)["voucherify"].__setitem__("type", "voucherfy"),
        "connectors.voucherify.type: 'voucherfy' is not a connector type (did you mean 'voucherify'?)",
    ),
    "option_typo": (
        lambda d: _c(d)["salesforce"]["options"].__setitem__("api_verison", "60.0"),
        "connectors.salesforce.options: unknown api_verison (did you mean 'api_version'?)",
    ),
    "rest_option_typo": (
        lambda d: _c(d)["katana"]["options"].__setitem__(
            "record_path", _c(d)["katana"]["options"].pop("records_path")
        ),
        "connectors.katana.options.record_path: unknown key (did you mean 'records_path'?)",
    ),
    "http_option_typo": (
        lambda d: (
            _c(d)["voyado"].setdefault("options", {}).__setitem__("http", {"read_timeout": 5})
        ),
        "connectors.voyado.options.http: unknown read_timeout (did you mean 'read_timeout_s'?)",
    ),
    "missing_base_url": (
        lambda d: _c(d)["exact"].pop("base_url"),
        "connectors.exact.base_url: required for a exact connector",
    ),
    "secret_in_credentials": (
        lambda d: _c(d)["icomm"].__setitem__("credentials", {"api_key": "s3cr3t-value"}),
        "connectors.icomm.credentials: credentials.api_key must name an environment variable",
    ),
    "top_level_typo": (
        lambda d: d.__setitem__("publsh", d.pop("publish")),
        "publsh: unknown key (did you mean 'publish'?)",
    ),
    "connector_key_typo": (
        lambda d: _c(d)["voyado"].__setitem__("crendentials", _c(d)["voyado"].pop("credentials")),
        "connectors.voyado.crendentials: unknown key (did you mean 'credentials'?)",
    ),
    "flow_unknown_connector": (
        lambda d: d["flow"]["enrichments"][0].__setitem__("connector", "voyadoo"),
        "flow.enrichments[0].connector: 'voyadoo' is not a configured connector",
    ),
    "bad_role": (
        lambda d: _c(d)["voyado"].__setitem__("role", "sink"),
        "connectors.voyado.role: Input should be 'source', 'enrichment', 'target' or 'transactions'",
    ),
    "bad_threshold": (
        lambda d: _c(d)["voyado"].__setitem__("quality", {"min_valid_rate": 1.5}),
        "connectors.voyado.quality.min_valid_rate: Input should be less than or equal to 1",
    ),
    "missing_credential": (
        lambda d: _c(d)["salesforce"].__setitem__("credentials", {}),
        "connectors.salesforce.credentials.access_token is not configured",
    ),
    "identifier_column_typo": (
        lambda d: next(
            r for r in d["identity"]["identifiers"] if r["columns"] == ["email"]
        ).__setitem__("columns", ["emial"]),
        "'emial' is not a canonical column (did you mean 'email'?)",
    ),
    "unknown_mapping_column": (
        lambda d: _c(d)["katana"]["options"]["mapping"].__setitem__("phone", "phone_number"),
        "connectors.katana.options.mapping: unknown canonical column(s) ['phone_number']",
    ),
}


def broken(tmp_path: Path, name: str) -> Path:
    data = copy.deepcopy(BASE)
    MISTAKES[name][0](data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch):
    for key in list(os.environ):
        if key.startswith("CUSTSYNC_") and key.endswith("_BASE_URL"):
            monkeypatch.delenv(key)
    monkeypatch.delenv("CUSTSYNC_CONFIG", raising=False)


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_each_mistake_is_named_at_load_in_a_few_lines(tmp_path, capsys, name):
    path = broken(tmp_path, name)
    with pytest.raises(ConfigError) as err:
        load_sync_config(path)
    assert MISTAKES[name][1] in str(err.value)
    # the CLI: one message naming the key, no traceback, non-zero exit
    assert main(["run", "--config", str(path)]) == 2
    out = capsys.readouterr()
    lines = (out.out + out.err).strip().splitlines()
    assert 1 <= len(lines) <= 5, lines
    assert MISTAKES[name][1] in out.err and "Traceback" not in out.err + out.out
    assert "s3cr3t-value" not in out.err  # a secret put in the file is not echoed


def test_a_yaml_syntax_error_is_one_line_with_its_position(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("connectors: {a: [\n")
    assert main(["conflicts", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not valid YAML (line 2, column 1)" in err[0]


@pytest.mark.parametrize("name", ["type_typo", "option_typo", "missing_base_url"])
def test_custsync_run_from_a_fresh_process(tmp_path, name):
    """As a user types it: ``custsync run --config broken.yaml``."""
    path = broken(tmp_path, name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTSYNC_")}
    env["DAGSTER_HOME"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "custsync_pipeline.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) <= 5 and "Traceback" not in proc.stderr
    assert MISTAKES[name][1] in proc.stderr


def test_base_url_env_override_points_a_connector_elsewhere(tmp_path, monkeypatch):
    path = broken(tmp_path, "missing_base_url")
    monkeypatch.setenv("CUSTSYNC_EXACT_BASE_URL", "http://127.0.0.1:9999")
    cfg = load_sync_config(path)  # the override fills the missing key
    assert cfg.connectors["exact"].base_url == "http://127.0.0.1:9999"
    monkeypatch.setenv("CUSTSYNC_SALESFORCE_BASE_URL", "https://crm.example.com")
    assert load_sync_config().connectors["salesforce"].base_url == "https://crm.example.com"


def test_status_names_a_config_mistake_instead_of_dropping_targets(tmp_path, capsys):
    """``custsync status`` lists the config's publish targets: a broken config is named,
    exit 2 — not a table that silently leaves every target out."""
    from custsync_pipeline.store.db import StateDB

    db = f"sqlite:///{tmp_path / 'state.sqlite'}"
    StateDB(db).create_all().engine.dispose()
    path = broken(tmp_path, "identifier_column_typo")
    assert main(["status", "G1", "--db", db, "--config", str(path)]) == 2
    out = capsys.readouterr()
    assert "'emial' is not a canonical column" in out.out + out.err
    assert "Traceback" not in out.err
