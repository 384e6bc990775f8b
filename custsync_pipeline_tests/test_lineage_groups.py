"""What the UI shows of the lanes: a group per connector (the lanes stay apart in the
lineage), kinds and owners on every lane asset, a description on every schedule and
sensor; and ``schema_drift`` leaves out the fields custsync writes itself."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from custsync_pipeline.defs.extract.checks import build_schema_drift_check, vendor_columns
from custsync_pipeline.defs.extract.pulls import Pull
from custsync_pipeline.defs.resources import StateDBResource
from custsync_pipeline_tests.test_checks import lane_outputs


def test_lanes_are_grouped_by_connector_with_kinds_and_owners() -> None:
    from custsync_pipeline.config import current_plan
    from custsync_pipeline.definitions import defs

    d = defs()
    graph = d.resolve_asset_graph()
    for name in current_plan().connectors:
        for leaf in ("raw_customers", "customers", "rejected_customers", "changes"):
            node = graph.get(dg.AssetKey([name, leaf]))
            assert node.group_name == name, (name, leaf)
            assert node.owners == ["team:custsync"], (name, leaf)
            spec = next(s for s in d.resolve_all_asset_specs() if s.key == node.key)
            assert spec.kinds, (name, leaf)
    for schedule in d.schedules or []:
        assert schedule.description, schedule.name
    for sensor in d.sensors or []:
        assert sensor.description, sensor.name


def test_schema_drift_ignores_what_custsync_writes(tmp_path) -> None:
    assert vendor_columns(
        ["id", "metadata.custsync_id", "Custsync_Id__c", "__resource", "_custsync.error", "email"]
    ) == ["id", "email"]
    state = StateDBResource(url=f"sqlite:///{tmp_path / 'state.sqlite'}")
    check = build_schema_drift_check("voucherify")

    runs = iter(range(100))

    def run(frame: pd.DataFrame) -> dg.AssetCheckResult:  # the check reads the stored output
        io = lane_outputs(tmp_path / str(next(runs)), "voucherify", raw_customers=frame)
        return check(dg.build_asset_check_context(resources={"state_db": state, "io_manager": io}))

    base = pd.DataFrame({"id": ["c1"], "email": ["a@example.com"]})
    assert run(base).passed  # the baseline
    written = base.assign(**{"metadata.custsync_id": ["G-1"]})
    assert run(written).passed  # the golden id custsync wrote back is not drift
    # an incremental pull of records lacking a column is no removal; a new column is drift
    few = Pull(mode="incremental").attach(pd.DataFrame({"id": ["c2"]}))
    assert run(few).passed
    more = Pull(mode="incremental").attach(base.assign(phone=["+46"]))
    result = run(more)
    assert not result.passed and result.metadata["columns_added"].value == 1


def test_golden_and_aspect_assets_declare_their_columns() -> None:
    from custsync_pipeline.config import current_plan
    from custsync_pipeline.definitions import defs
    from custsync_pipeline.defs.golden.assets import GOLDEN_CUSTOMERS, aspect_key, flow_aspects

    specs = {s.key: s for s in defs().resolve_all_asset_specs()}
    for key in [GOLDEN_CUSTOMERS, *(aspect_key(a) for a in flow_aspects(current_plan()))]:
        schema = specs[key].metadata["dagster/column_schema"]
        names = [c.name for c in schema.columns]
        assert names[0] == "golden_id" and len(names) > 2, key
        assert specs[key].kinds and specs[key].owners == ["team:custsync"], key
