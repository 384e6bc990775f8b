"""Publishing lanes, one per target: ``<t>/outbound_deltas`` (what must change, queued in the
outbox) and ``<t>/published`` (sent through the connector, one ledger row per entity).

Only deltas leave: a golden record whose payload the target already holds, or
already acknowledged, is not sent. Sends are upserts by an immutable key, so a
crash mid-publish resumes by re-sending what is still pending, without duplicates.
"""

import json

import dagster as dg
import pandas as pd

from custsync_pipeline.connectors.base import WriteOp
from custsync_pipeline.defs.golden.assets import GOLDEN_CUSTOMERS
from custsync_pipeline.defs.identity.assets import IDENTITY_MAP
from custsync_pipeline.defs.resources import STATE_POOL, connector_resource_key
from custsync_pipeline.domain.deltas import (
    aspect_payload_hashes,
    attach_payloads,
    compute_deltas,
    entry_lists,
    hold_back,
)
from custsync_pipeline.domain.plan import PublishPolicy, SyncPlan
from custsync_pipeline.store import core
from custsync_pipeline.store import golden as golden_store

PUBLISH_CHUNK = (
    1000  # ops recorded per state-DB transaction: a crash loses at most this much progress
)


def deltas_key(target: str) -> dg.AssetKey:
    return dg.AssetKey([target, "outbound_deltas"])


def published_key(target: str) -> dg.AssetKey:
    return dg.AssetKey([target, "published"])


def with_aspects(
    frame: pd.DataFrame, entries: pd.DataFrame, aspects: list[str], by: str
) -> pd.DataFrame:
    """``frame`` plus one column per aspect holding its entries (``deltas.entry_lists``)."""
    out = frame.copy()
    for aspect in aspects:
        lists = entry_lists(entries, aspect, by=by)
        out[aspect] = out[by].map(lists)
    return out


def _deltas_asset(plan: SyncPlan, target: PublishPolicy) -> dg.AssetsDefinition:
    name = target.connector
    api_key = connector_resource_key(name)

    @dg.asset(
        key=deltas_key(name),
        group_name="publish",
        ins={
            "golden_customers": dg.AssetIn(key=GOLDEN_CUSTOMERS),
            "identity_map": dg.AssetIn(key=IDENTITY_MAP),
        },
        required_resource_keys={"state_db", api_key},
        kinds={"pandas"},
        owners=["team:custsync"],
        pool=STATE_POOL,
        description=f"Creates and updates {name} needs to match the golden records (queued in the outbox).",
    )
    def outbound_deltas(
        context: dg.AssetExecutionContext,
        golden_customers: pd.DataFrame,
        identity_map: pd.DataFrame,
    ) -> dg.MaterializeResult:
        engine = context.resources.state_db.engine
        fields = plan.target_fields(name)
        aspects = list(target.aspects)
        members = core.load_source_records(engine, [name]).merge(
            identity_map[["connector", "source_id", "golden_id"]], on=["connector", "source_id"]
        )
        ledger = core.load_outbox(engine, name)
        # settled: acknowledged, or dead-lettered with this very payload (sending the
        # same payload again would fail the same way; a changed payload is retried)
        settled = pd.concat(
            [
                ledger.loc[ledger["status"] == "acked", ["entity_key", "acked_hash"]],
                ledger.loc[ledger["status"] == "dead", ["entity_key", "payload_hash"]].rename(
                    columns={"payload_hash": "acked_hash"}
                ),
            ]
        )
        connector = getattr(context.resources, api_key).connector()
        takes, held_back = hold_back(golden_customers, target.kinds, target.required_fields)
        write_object = getattr(connector, "write_object", None)
        golden_sub = golden_customers[["golden_id", *fields]]
        aspect_hashes = member_hashes = None
        if aspects:
            # the aspects compared in the target's shape, golden side and member side
            g_entries = golden_store.load_golden_entries(engine)
            golden_sub = with_aspects(golden_sub, g_entries, aspects, by="golden_id")
            m_entries = golden_store.load_source_entries(engine, [name])
            m_frame = with_aspects(members[["source_id"]], m_entries, aspects, by="source_id")
            taken = golden_sub[golden_sub["golden_id"].isin(takes["golden_id"])]
            aspect_hashes = aspect_payload_hashes(taken, aspects, connector.from_canonical)
            member_hashes = aspect_payload_hashes(
                m_frame, aspects, connector.from_canonical, key="source_id"
            )
        deltas = compute_deltas(
            takes,
            members,
            fields,
            settled,
            writable_types=[write_object] if write_object else None,
            aspect_hashes=aspect_hashes,
            member_aspect_hashes=member_hashes,
        )
        deltas = attach_payloads(deltas, golden_sub, connector.from_canonical, core.dumps_payload)
        core.enqueue_deltas(engine, name, deltas)
        creates = (
            int(deltas["entity_key"].astype(str).str.startswith("new:").sum()) if len(deltas) else 0
        )
        context.log.info(
            f"{name}: {len(deltas)} deltas ({creates} creates), "
            f"{sum(held_back.values())} golden records held back {held_back}"
        )
        return dg.MaterializeResult(
            value=deltas,
            metadata={
                "dagster/row_count": len(deltas),
                "creates": creates,
                "updates": len(deltas) - creates,
                "held_back": sum(held_back.values()),
                **{f"held_back_{reason}": n for reason, n in held_back.items()},
            },
        )

    return outbound_deltas


def _published_asset(target: PublishPolicy) -> dg.AssetsDefinition:
    name = target.connector
    api_key = connector_resource_key(name)

    @dg.asset(
        key=published_key(name),
        group_name="publish",
        deps=[deltas_key(name)],
        required_resource_keys={"state_db", api_key},
        kinds={"python"},
        owners=["team:custsync"],
        pool=api_key,
        description=f"Sends pending and failed {name} deltas; records each entity's status in the ledger.",
    )
    def published(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        engine = context.resources.state_db.engine
        pending = core.load_outbox(engine, name, statuses=("pending", "failed"))
        connector = getattr(context.resources, api_key).connector()
        counts = {"acked": 0, "failed": 0, "dead": 0}
        total = len(pending)
        for start in range(0, total, PUBLISH_CHUNK):
            chunk = pending.iloc[start : start + PUBLISH_CHUNK]
            ops = [
                WriteOp(golden_id=g, target_id=t, payload=json.loads(p), op=o)
                for g, t, p, o in zip(
                    chunk["golden_id"],
                    chunk["target_id"],
                    chunk["payload"],
                    chunk["op"],
                    strict=True,
                )
            ]
            results = connector.write(ops)
            status = ["acked" if r.ok else ("failed" if r.transient else "dead") for r in results]
            frame = pd.DataFrame(
                {
                    "entity_key": chunk["entity_key"].to_numpy(),
                    "target_id": [r.target_id for r in results],
                    "status": status,
                    "last_error": [r.error for r in results],
                }
            )
            core.record_publish_results(engine, name, frame)
            for s in status:
                counts[s] += 1
            context.log.info(f"{name}: sent {min(start + PUBLISH_CHUNK, total)}/{total}")
        if counts["dead"]:
            context.log.warning(
                f"{name}: {counts['dead']} deltas dead-lettered (see the outbox table)"
            )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": total,
                "published": counts["acked"],
                "failed_transient": counts["failed"],
                "dead_lettered": counts["dead"],
            }
        )

    return published


def build_publish_assets(plan: SyncPlan) -> list[dg.AssetsDefinition]:
    assets: list[dg.AssetsDefinition] = []
    for target in plan.publish:
        assets += [_deltas_asset(plan, target), _published_asset(target)]
    return assets
