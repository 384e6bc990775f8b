"""Exact Online as a publish target (issue 12 item 6): the sync config refuses it, saying why.

Exact's API has no upsert and no idempotency key (a replayed POST creates a second
Account), an Account needs a Name, Contacts exist only under their Account, and it allows
60 calls a minute: custsync reads Exact as an enrichment source and never writes to it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from custsync_pipeline.config import DEFAULT_CONFIG_PATH, ConfigError, load_sync_config


def _with_exact_target(tmp_path: Path, **extra: object) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["publish"].append({"connector": "exact", "fields": ["first_name", "last_name"], **extra})
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_exact_as_a_target_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_sync_config(_with_exact_target(tmp_path))
    text = str(err.value)
    n = len(yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())["publish"])
    assert f"publish[{n}].connector: 'exact' (type 'exact') cannot be a publish target" in text
    for reason in ("no idempotency key", "needs a Name", "under their Account", "60 calls"):
        assert reason in text
    assert len(text.splitlines()) == 2  # the file, then one line naming the key


def test_refused_whatever_the_entry_is_named(tmp_path: Path) -> None:
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["connectors"]["erp"] = {**data["connectors"].pop("exact"), "role": "target"}
    data["flow"]["enrichments"] = [
        s for s in data["flow"]["enrichments"] if s["connector"] != "exact"
    ]
    data["publish"].append({"connector": "erp", "fields": ["last_name"]})
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=r"'erp' \(type 'exact'\) cannot be a publish target"):
        load_sync_config(path)


def test_exact_stays_an_enrichment_source() -> None:
    plan = load_sync_config().plan()
    assert "exact" in plan.connectors and "exact" in plan.flow_order()
    assert "exact" not in {p.connector for p in plan.publish}
