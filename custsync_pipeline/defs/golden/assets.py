"""``golden_customers``: one golden record per golden id, merged by survivorship rules."""

import dagster as dg
import pandas as pd

from custsync_pipeline.config import SyncConfig
from custsync_pipeline.defs.identity.assets import IDENTITY_MAP
from custsync_pipeline.defs.resources import STATE_POOL
from custsync_pipeline.domain.golden import FlowStep, build_golden, diff_golden
from custsync_pipeline.store import core

GOLDEN_CUSTOMERS = dg.AssetKey("golden_customers")


def flow_steps(cfg: SyncConfig) -> list[FlowStep]:
    """The configured flow as survivorship steps (source first, later steps win)."""
    steps = []
    if cfg.flow.source != "current_data":
        src = cfg.connectors[cfg.flow.source]
        steps.append(FlowStep(cfg.flow.source, tuple(src.aspects)))
    for step in cfg.flow.enrichments:
        aspects = step.aspects or cfg.connectors[step.connector].aspects
        steps.append(FlowStep(step.connector, tuple(aspects)))
    return steps


def build_golden_assets(cfg: SyncConfig) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=GOLDEN_CUSTOMERS,
        group_name="golden",
        ins={"identity_map": dg.AssetIn(key=IDENTITY_MAP)},
        required_resource_keys={"state_db", "sync_config"},
        pool=STATE_POOL,
        description="The golden record of every person: fields chosen by the flow and ownership rules.",
    )
    def golden_customers(
        context: dg.AssetExecutionContext, identity_map: pd.DataFrame
    ) -> dg.MaterializeResult:
        cfg_now = context.resources.sync_config.load()
        engine = context.resources.state_db.engine
        records = core.load_source_records(engine, cfg_now.enabled_connectors())
        result = build_golden(
            records,
            identity_map,
            flow_steps(cfg_now),
            cfg_now.flow.ownership,
            placeholder_rules=cfg_now.identity.identifiers,
        )
        now = pd.Timestamp.now(tz="UTC")
        changed, events, gone = diff_golden(
            result.golden, core.load_golden_records(engine), result.provenance, now
        )
        core.save_golden_records(engine, changed, events)
        core.delete_golden_records(engine, gone)
        context.log.info(
            f"{len(result.golden)} golden records: {len(changed)} new or changed, "
            f"{len(events)} field changes, {len(gone)} retired"
        )
        return dg.MaterializeResult(
            value=result.golden,
            metadata={
                "dagster/row_count": len(result.golden),
                "changed_records": len(changed),
                "field_changes": len(events),
                "retired_ids": len(gone),
            },
        )

    return [golden_customers]
