"""The sync plan: parsed once from the YAML, owned by the domain, cross-references checked
at load with errors that name both ends."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from custsync_pipeline.config import DEFAULT_CONFIG_PATH, ConfigError, load_sync_config
from custsync_pipeline.domain.plan import SyncPlan

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    edit(data)
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_packaged_config_becomes_a_plan() -> None:
    plan = load_sync_config().plan()
    assert isinstance(plan, SyncPlan)
    assert plan.flow_order()[0] == "salesforce"
    assert plan.ownership["email_consent"] == "voyado"
    assert {r.name for r in plan.identifiers} >= {"email", "phone"}
    # a target's fields never include what the target itself owns: the CRM takes the
    # consents Voyado owns, Voyado never gets its own back
    assert "email_consent" in plan.target_fields("salesforce")
    assert not {"email_consent", "sms_consent", "loyalty_tier"} & set(plan.target_fields("voyado"))


def test_domain_never_imports_config() -> None:
    for path in (ROOT / "custsync_pipeline" / "domain").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                assert not name.startswith("custsync_pipeline.config"), path.name
                assert not name.startswith("dagster"), path.name


def _step(data: dict, connector: str) -> dict:
    return next(s for s in data["flow"]["enrichments"] if s["connector"] == connector)


CASES = {
    # a step names an aspect its connector's entry does not list
    "step_aspect_not_listed": (
        lambda d: _step(d, "icomm")["aspects"].append("loyalty"),
        r"aspect 'loyalty' of step 'icomm' is not among connectors\.icomm\.aspects",
    ),
    # the connector lists it, but its module cannot give it
    "vendor_cannot_give": (
        lambda d: (
            d["connectors"]["icomm"]["aspects"].append("addresses"),
            _step(d, "icomm")["aspects"].append("addresses"),
        ),
        r"connectors\.icomm\.aspects: a 'icomm' connector cannot give aspect 'addresses'",
    ),
    # a target subscribes to a field whose aspect no step contributes
    "target_field_no_aspect": (
        lambda d: (
            d["publish"][1]["fields"].append("language"),
            d["connectors"]["katana"].update(aspects=["name"]),
            _step(d, "katana").update(aspects=["name"]),
            d["connectors"]["exact"].update(aspects=["addresses"]),
            _step(d, "exact").update(aspects=["addresses"]),
        ),
        r"publish\[1\]\.fields: 'language' of target 'voucherify' is carried by aspect "
        r"'customer_attributes', which no flow step gives",
    ),
    # a target takes an aspect no step contributes
    "target_aspect_not_given": (
        lambda d: d["publish"][0].update(aspects=["attachments"]),
        r"publish\[0\]\.aspects: aspect 'attachments' of target 'salesforce' is given by no "
        r"flow step",
    ),
    # a target takes something that is not a multi-valued aspect at all
    "target_aspect_unknown": (
        lambda d: d["publish"][0].update(aspects=["adresses"]),
        r"publish\[0\]\.aspects: \['adresses'\] are not multi-valued aspects",
    ),
    # ownership of something that is no golden field
    "ownership_unknown_field": (
        lambda d: d["flow"]["ownership"].update(loyalty_level="voyado"),
        r"flow\.ownership\.loyalty_level: not a golden field",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cross_reference_errors_name_both_ends(tmp_path: Path, case: str) -> None:
    edit, message = CASES[case]
    path = _write(tmp_path, edit)
    with pytest.raises(ConfigError, match=message):
        load_sync_config(path)


def test_readme_names_every_publish_and_connector_key() -> None:
    from custsync_pipeline.config import ConnectorConfig, PublishTarget

    readme = (ROOT / "README.md").read_text()
    for name in PublishTarget.model_fields:
        assert f"`publish[].{name}`" in readme or f"`{name}`" in readme, name
    for name in ConnectorConfig.model_fields:
        assert f"`connectors.<name>.{name}`" in readme, name
    assert "`custsync history <golden id>`" in readme


def test_missing_identity_and_flow_take_the_documented_defaults(tmp_path: Path) -> None:
    for name in ("crm.csv", "shop.csv"):
        (tmp_path / name).write_text("id,email\n1,a@b.se\n")
    path = tmp_path / "sync.yaml"
    path.write_text(
        "connectors:\n"
        f"  crm: {{type: file, role: source, options: {{path: {tmp_path / 'crm.csv'}, id_field: id}}}}\n"
        f"  shop: {{type: file, options: {{path: {tmp_path / 'shop.csv'}, id_field: id}}}}\n"
    )
    plan = load_sync_config(path).plan()
    assert [s.connector for s in plan.steps] == ["crm", "shop"]
    packaged = load_sync_config().plan()
    assert [r.name for r in plan.identifiers] == [r.name for r in packaged.identifiers]
    # two sources and no flow: which one leads is not guessed
    path.write_text(
        path.read_text().replace("type: file, options", "type: file, role: source, options")
    )
    with pytest.raises(ConfigError, match=r"flow: missing.*exactly one enabled connector"):
        load_sync_config(path)


def test_readme_names_every_runs_key() -> None:
    from custsync_pipeline.config import DeletesConfig, RunsConfig

    readme = (ROOT / "README.md").read_text()
    for name in RunsConfig.model_fields:
        assert f"`runs.{name}`" in readme, name
    for name in DeletesConfig.model_fields:
        assert f"`deletes.{name}`" in readme, name
