"""The ``transactions`` asset: extract the shop's orders since the watermark, validate,
link to golden records, store, refresh the ``order_history`` aspect and publish them to
the ``transactions.publish`` targets (``custsync_pipeline.transactions_sync``).

Built only when the config has ``transactions.sources``; it runs after the golden
records (the identity map it links through is that run's).
"""

import dagster as dg

from custsync_pipeline.config import SyncConfig
from custsync_pipeline.defs.golden.assets import GOLDEN_CUSTOMERS
from custsync_pipeline.defs.resources import STATE_POOL, connector_resource_key
from custsync_pipeline.defs.state_lease import holds_state_lease

TRANSACTIONS = dg.AssetKey("transactions")


def build_transaction_assets(cfg: SyncConfig) -> list[dg.AssetsDefinition]:
    enabled = cfg.enabled_connectors()
    sources = [s for s in cfg.transactions.sources if s in enabled]
    targets = [t for t in cfg.transactions.publish if t.connector in enabled]
    if not sources:
        return []
    keys = {connector_resource_key(n) for n in [*sources, *(t.connector for t in targets)]}

    @dg.asset(
        key=TRANSACTIONS,
        group_name="transactions",
        deps=[GOLDEN_CUSTOMERS],
        required_resource_keys={"state_db", *keys},
        kinds={"python"},
        owners=["team:custsync"],
        pool=STATE_POOL,
        description="Shop orders since the watermark: validated, linked to golden records, "
        "stored, order history refreshed, sent as Voyado receipts, Salesforce Purchase__c "
        "and Voucherify orders (each once: ledger by transaction id + hash).",
    )
    @holds_state_lease
    def transactions(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from custsync_pipeline.connectors.http import ConnectorError
        from custsync_pipeline.transactions_sync import sync_transactions

        engine = context.resources.state_db.engine
        # a connector that cannot be built (its credential missing) fails alone
        conns, broken = {}, {}
        for n in [*sources, *(t.connector for t in targets)]:
            try:
                conns[n] = getattr(context.resources, connector_resource_key(n)).connector()
            except ConnectorError as exc:
                broken[n] = str(exc)
        view = cfg.model_copy(
            update={
                "transactions": cfg.transactions.model_copy(
                    update={"sources": sources, "publish": targets}
                )
            }
        )
        out = sync_transactions(engine, view, conns, broken=broken)
        meta: dict[str, dg.MetadataValue] = {}
        for name, s in out["sources"].items():
            for k in ("read", "rejected", "stored", "linked", "requests"):
                meta[f"{name}_{k}"] = dg.MetadataValue.int(int(s[k]))
            meta[f"{name}_link_rules"] = dg.MetadataValue.json(s["link_rules"])
        for name, t in out["targets"].items():
            for k in ("sent", "failed", "held_no_member", "already_sent", "requests"):
                meta[f"{name}_{k}"] = dg.MetadataValue.int(int(t[k]))
        if out["failed"]:
            # what the others did is stored (ledger, outbox); the step fails naming the rest
            raise dg.Failure(
                description="; ".join(f"{n}: {why}" for n, why in sorted(out["failed"].items())),
                metadata=meta,
                allow_retries=False,
            )
        return dg.MaterializeResult(metadata=meta)

    return [transactions]
