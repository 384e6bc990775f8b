"""Extraction lanes, one per configured connector: ``<c>/raw_customers`` (as received)
and ``<c>/customers`` + ``<c>/rejected_customers`` (canonical, validated, quarantined).

A lane is its own set of steps, so a connector that is down fails only its own
assets; the identity step reads the state DB and works with what it has.
"""

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd

from custsync_pipeline.connectors.file_rows import flag_unencodable
from custsync_pipeline.connectors.http import (
    ConnectorError,
    ConnectorUnavailableError,
    CredentialError,
    QuotaExceededError,
    scrub_url,
)
from custsync_pipeline.defs.extract import pulls, replay
from custsync_pipeline.defs.io import kept_outputs
from custsync_pipeline.defs.resources import connector_resource_key
from custsync_pipeline.domain import canonical
from custsync_pipeline.domain.plan import ConnectorPlan, QualityGate, SyncPlan
from custsync_pipeline.domain.quality import valid_rate_passes, validation_metrics
from custsync_pipeline.domain.received import ERROR_COLUMN
from custsync_pipeline.store import core
from custsync_pipeline.store.quarantine import record_quarantine

if TYPE_CHECKING:  # pandera loads with the first lane step, not with the definitions
    from custsync_pipeline.domain.validate import ValidationResult


def lane_entries(
    connector: object, raw: pd.DataFrame, valid: pd.DataFrame, aspects: tuple[str, ...]
) -> pd.DataFrame:
    """The aspect entries of a lane's valid records, only of the aspects it is configured
    to give: the connector's own (``to_aspects``) first, then those its rows imply."""
    from custsync_pipeline.domain.aspects import ENTRY_ASPECTS, entries_from_canonical

    wanted = [a for a in aspects if a in ENTRY_ASPECTS]
    if not wanted:
        return entries_from_canonical(valid.iloc[:0], ())
    parts = []
    given: set[str] = set()
    to_aspects = getattr(connector, "to_aspects", None)
    if callable(to_aspects) and len(raw):
        own = to_aspects(raw)
        parts.append(own[own["aspect"].isin(wanted)])
        given = set(own["aspect"].dropna())
    # the row's implied address and contact details only where the connector gave none of
    # that aspect itself (an Account's billing address is not also a "mailing" one)
    parts.append(entries_from_canonical(valid, [a for a in wanted if a not in given]))
    return pd.concat([p for p in parts if len(p)] or parts[-1:], ignore_index=True)


def canonical_table_schema() -> dg.TableSchema:
    """The canonical columns as the UI's column schema."""
    kinds = {
        **dict.fromkeys(canonical.STRING_COLUMNS, "string"),
        **dict.fromkeys(canonical.DATETIME_COLUMNS, "timestamp (UTC)"),
        **dict.fromkeys(canonical.NUMERIC_COLUMNS, "float"),
        **dict.fromkeys(canonical.BOOL_COLUMNS, "bool"),
    }
    return dg.TableSchema(
        columns=[dg.TableColumn(c, kinds[c]) for c in canonical.CANONICAL_COLUMNS]
    )


OWNERS = ["team:custsync"]


def extract_retry(plan: SyncPlan) -> dg.RetryPolicy:
    """The step retry of extraction assets (``runs.extract_retries``/``extract_retry_delay_s``)."""
    return dg.RetryPolicy(
        max_retries=plan.extract_retries,
        delay=plan.extract_retry_delay_s,
        backoff=dg.Backoff.EXPONENTIAL,
    )


def raw_key(connector: str) -> dg.AssetKey:
    return dg.AssetKey([connector, "raw_customers"])


def customers_key(connector: str) -> dg.AssetKey:
    return dg.AssetKey([connector, "customers"])


def rejected_key(connector: str) -> dg.AssetKey:
    return dg.AssetKey([connector, "rejected_customers"])


def _raw_asset(name: str, system_type: str, retry: dg.RetryPolicy) -> dg.AssetsDefinition:
    api_key = connector_resource_key(name)

    @dg.asset(
        key=raw_key(name),
        group_name=name,  # a group per connector: the lanes stay apart in the lineage
        kinds={"python", system_type},
        owners=OWNERS,
        required_resource_keys={api_key, "state_db"},
        retry_policy=retry,
        pool=api_key,
        description=(
            f"Customers as received from {name}: the changes since the stored watermark "
            "(with the connector's overlap) and its delete feed; a full snapshot on the "
            "first run or when the run is tagged custsync/full_snapshot."
        ),
    )
    def raw_customers(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        resource = getattr(context.resources, api_key)
        started = time.monotonic()
        since = pulls.pull_start(context.resources.state_db.engine, name, context.run.tags)
        try:
            connector = resource.connector()
            result = connector.read(since=since)
        except ConnectorError as exc:
            if _retry_may_help(exc):
                raise  # 429/5xx/timeouts that outlived the HTTP retries: the RetryPolicy runs
            raise dg.Failure(
                description=_fatal_message(name, resource, exc), allow_retries=False
            ) from None
        # text no store can hold (a JSON "\udc80" escape) names its row instead of failing the lane
        records = flag_unencodable(result.records, name)
        unreadable = int(records[ERROR_COLUMN].notna().sum()) if ERROR_COLUMN in records else 0
        pull = pulls.describe(since, result.watermark, result.deleted_ids)
        # the canonical step stores the pull and only then moves the watermark
        records = pull.attach(records)
        stats = result.stats
        context.log.info(
            f"{name}: {pull.mode} pull, {len(result.records)} records in {stats.pages} pages, "
            f"{stats.retries} retries, {time.monotonic() - started:.1f}s"
        )
        # columns the config maps that a full read did not find (file connectors): named in
        # the log and by the schema_drift check, not read as values missing in every row
        absent_in = getattr(connector, "absent_columns", None)
        absent = absent_in(result.records) if absent_in and not pull.incremental else []
        pulls.mark_absent(records, absent)
        if absent:
            context.log.warning(
                f"{name}: the payload has no column {absent}, which the config reads "
                "(options.mapping / updated_field / created_field): their "
                "values are missing in every record"
            )
        return dg.MaterializeResult(
            value=records,
            metadata={
                "dagster/row_count": len(records),
                # rows that could not be decoded or parsed: quarantined by the next step
                "unreadable_rows": unreadable,
                "pages": stats.pages,
                "requests": stats.requests,
                "retries": stats.retries,
                "elapsed_s": round(stats.elapsed_s or (time.monotonic() - started), 3),
                "deleted_reported": len(result.deleted_ids),
                "pull_mode": pull.mode,
                "incremental": pull.incremental,
                "mapped_columns_absent": dg.MetadataValue.json(absent),
            },
        )

    return raw_customers


def _retry_may_help(exc: ConnectorError) -> bool:
    """Whether a later attempt of the asset can succeed.

    Connection refused is marked transient by the HTTP layer, but it has already
    been retried there: a system that is down stays down for the next 30 s, so the
    asset fails at once instead of sleeping through the RetryPolicy. Quota,
    auth (401/403) and config errors are never fixed by retrying.
    """
    if isinstance(exc, ConnectorUnavailableError | QuotaExceededError | CredentialError):
        return False
    if exc.status in (401, 403):
        return False
    return exc.transient


def _fatal_message(name: str, resource: dg.ConfigurableResource, exc: ConnectorError) -> str:
    """Connector, base URL and the (already scrubbed) reason; never a secret."""
    try:
        base_url = resource.config.base_url
    except Exception:  # the reason below still names the connector
        base_url = ""
    where = f" at {scrub_url(base_url)}" if base_url else ""
    kind = (
        "unreachable"
        if isinstance(exc, ConnectorUnavailableError)
        else "quota exceeded"
        if isinstance(exc, QuotaExceededError)
        else "credentials missing"
        if isinstance(exc, CredentialError)
        else "not authorized"
        if exc.status in (401, 403)
        else "failed"
    )
    return f"connector {name}{where}: {kind}, not retrying: {exc}"


def private_rejected(rejected: pd.DataFrame) -> pd.DataFrame:
    """The quarantine as a step output, without personal data in clear: the state DB's
    ``quarantine`` keeps each payload for review (``custsync quarantine``); here it is a
    hash (``h…``, the same payload the same hash), and a source id that is an e-mail
    address (an Icomm guest) is masked with a short hash that keeps ids apart."""
    from custsync_pipeline.domain.identity_keys import mask_keys

    out = rejected.copy()
    if not len(out):
        return out
    payload = out["raw_payload"].astype("string")
    hashed = pd.util.hash_pandas_object(payload.fillna(""), index=False).astype(str)
    out["raw_payload"] = ("h" + hashed).where(payload.notna(), pd.NA).astype("string")
    ids = out["source_id"].astype("string")
    mail = ids.str.contains("@", regex=False).fillna(False).to_numpy(dtype=bool)
    if mail.any():
        tag = pd.util.hash_pandas_object(ids[mail], index=False).astype(str).str[-4:]
        masked = mask_keys(ids[mail].to_numpy(dtype=object), contact=False)
        ids = ids.copy()
        ids[mail] = pd.Series(masked, index=tag.index).astype("string") + "#" + tag
        out["source_id"] = ids
    return out


def gate_message(name: str, checked: "ValidationResult", gate: QualityGate, kept: int) -> str:
    """What a lane below its valid-row gate did, true on a first run too (nothing to keep)."""
    why = (
        f"{name}: {checked.valid_rate:.1%} of {checked.rows_in} rows valid, below "
        f"{gate.min_valid_rate:.0%} (min rows {gate.min_rows})"
    )
    if kept:
        return f"{why}: nothing stored, the {kept} source records of the last good run kept"
    return (
        f"{why}: nothing stored, and there is no earlier good run to keep: identity and "
        f"golden records go on without {name} until a run passes the gate "
        f"(`custsync quarantine --connector {name}` says why rows failed)"
    )


@dataclass
class StoredPull:
    """What a lane did with one pull: the validation, what went to the quarantine, and the
    numbers its materialization shows."""

    checked: "ValidationResult"
    rejected: pd.DataFrame
    metadata: dict[str, object]


def store_lane_pull(
    context: dg.AssetExecutionContext,
    name: str,
    conn: ConnectorPlan,
    aspects: tuple[str, ...],
    connector: object,
    raw: pd.DataFrame,
    pull: pulls.Pull,
) -> StoredPull:
    """Normalize, validate and store one pull of a lane (a snapshot, the changes since the
    watermark, or a day window of ``<c>/changes``)."""
    from custsync_pipeline.domain.normalize import normalize_customers
    from custsync_pipeline.domain.validate import check_payload, validate_customers
    from custsync_pipeline.domain.validate_aspects import check_entries

    gate = conn.quality
    # the shape first: a renamed or vanished column stops this lane with its name,
    # before the mapping trips over it
    check_payload(raw, name, conn.type)
    canonical = normalize_customers(
        connector.to_canonical(raw),
        default_region=gate.default_region,
        market_regions=gate.market_regions,
    )
    checked = validate_customers(
        canonical,
        name,
        raw=raw,
        connector_type=conn.type,
        default_region=gate.default_region,
        market_regions=gate.market_regions,
    )
    engine = context.resources.state_db.engine
    given = lane_entries(connector, raw, checked.valid, aspects)
    entries = check_entries(
        given,
        name,
        pulls.entry_source_ids(engine, name, pull, checked.valid, given),
        regions=checked.valid.set_index("source_id")["country"],
    )
    # Blocking: a feed below its valid-row threshold must not overwrite this
    # connector's source records (identity and golden records read them). The last
    # good snapshot stays; the quarantine is recorded; the valid_row_rate check fails.
    # An incremental pull may legitimately find nothing: min_rows guards snapshots.
    passes = valid_rate_passes(
        checked.rows_in,
        len(checked.valid),
        gate.min_valid_rate,
        0 if pull.incremental else gate.min_rows,
    )
    kept = 0
    counts = {"stored": 0, "deleted_removed": 0, "watermark_moved": 0}
    if passes:
        if pull.mode == pulls.WINDOW:  # records stored outside the lane's own pulls
            replay.forget_pull(engine, name)
        counts = pulls.store_pull(engine, name, pull, checked.valid, entries.valid)
    else:
        kept = core.source_record_counts(engine, name).get(name, 0)
        context.log.warning(gate_message(name, checked, gate, kept))
    stored = counts["stored"]
    rejected = pd.concat([checked.rejected, entries.rejected], ignore_index=True)
    # an incremental batch resolves only its own records' failures
    record_quarantine(engine, name, rejected, checked.valid, partial=pull.incremental)
    context.log.info(
        f"{name}: {pull.mode} pull, {len(checked.valid)} valid of {checked.rows_in}, "
        f"{checked.rows_rejected} rejected, {checked.field_issues} field values quarantined, "
        f"{stored} stored, {counts['deleted_removed']} deleted; "
        f"{len(entries.valid)} aspect entries, {len(entries.rejected)} quarantined"
    )
    metadata: dict[str, object] = {
        # counts and rates (per failing check too) as numbers: the UI plots them
        **validation_metrics(checked),
        "dagster/row_count": len(checked.valid),
        "min_valid_rate": float(gate.min_valid_rate),
        # the gate passed and the pull was stored (False: the last good records kept);
        # a snapshot replaces the lane's records, an incremental pull upserts into them
        "source_records_replaced": passes,
        "source_records_upserted": passes and pull.incremental,
        "pull_mode": pull.mode,
        "stored": stored,
        "deleted_reported": len(pull.deleted_ids),
        "deleted_removed": counts["deleted_removed"],
        "watermark_moved": bool(counts["watermark_moved"]),
        # the gate held: records kept from the last good run (0: there was none)
        "source_records_kept": kept,
        "aspect_entries": len(entries.valid),
        "aspect_entries_rejected": len(entries.rejected),
        **entries.counts(),
    }
    return StoredPull(checked=checked, rejected=rejected, metadata=metadata)


def _customers_asset(
    name: str, conn: ConnectorPlan, aspects: tuple[str, ...]
) -> dg.AssetsDefinition:
    api_key = connector_resource_key(name)

    @dg.multi_asset(
        name=f"{name}_customers",
        outs={
            "customers": dg.AssetOut(
                key=customers_key(name),
                group_name=name,
                kinds={"pandas", "pandera"},
                owners=OWNERS,
                description=f"{name} customers in the canonical model, normalized and validated.",
            ),
            "rejected_customers": dg.AssetOut(
                key=rejected_key(name),
                group_name=name,
                kinds={"pandas"},
                owners=OWNERS,
                description=f"{name} rows that failed validation, with field, check and reason.",
            ),
        },
        ins={"raw": dg.AssetIn(key=raw_key(name))},
        required_resource_keys={api_key, "state_db", "io_manager"},
    )
    def customers(context: dg.AssetExecutionContext, raw: pd.DataFrame):
        pull = pulls.pull_of(raw)
        raw.attrs.pop(pulls.PULL_ATTR, None)  # not copied into every derived frame
        raw.attrs.pop(pulls.ABSENT_ATTR, None)
        connector = getattr(context.resources, api_key).connector()
        engine = context.resources.state_db.engine
        key = replay.pull_key(raw, pull.deleted_ids, conn, aspects, type(connector).__module__)
        saved = replay.unchanged_pull(engine, name, key, pull.incremental)
        if saved is not None and kept_outputs(
            context,
            {
                customers_key(name): saved["metadata"]["dagster/row_count"],
                rejected_key(name): saved["rejected"]["dagster/row_count"],
            },
        ):
            moved = pulls.move_watermark(engine, name, pull)
            context.log.info(
                f"{name}: {pull.mode} pull of {len(raw)} rows is the one stored last "
                f"({saved['rows']} records held): validation and storing skipped"
            )
            # no value: the outputs of the run that stored this snapshot stay
            yield dg.MaterializeResult(
                asset_key=customers_key(name),
                metadata={
                    **saved["metadata"],
                    "pull_mode": pull.mode,
                    "pull_unchanged": True,
                    "deleted_removed": 0,
                    "watermark_moved": bool(moved),
                    "dagster/column_schema": canonical_table_schema(),
                },
            )
            yield dg.MaterializeResult(asset_key=rejected_key(name), metadata=saved["rejected"])
            return
        done = store_lane_pull(context, name, conn, aspects, connector, raw, pull)
        checked, rejected = done.checked, done.rejected
        rejected_metadata = {
            "dagster/row_count": len(rejected),
            "rejected_records": checked.rows_rejected,
            "field_issues": checked.field_issues,
        }
        if done.metadata["source_records_replaced"]:
            replay.remember_pull(engine, name, key, pull.mode, done.metadata, rejected_metadata)
        else:  # the gate held: these outputs are not the stored pull's
            replay.forget_pull(engine, name)
        yield dg.MaterializeResult(
            asset_key=customers_key(name),
            value=checked.valid,
            metadata={
                **done.metadata,
                "pull_unchanged": False,
                "dagster/column_schema": canonical_table_schema(),
            },
        )
        yield dg.MaterializeResult(
            asset_key=rejected_key(name),
            value=private_rejected(rejected),
            metadata=rejected_metadata,
        )

    return customers


def build_extract_assets(plan: SyncPlan) -> list[dg.AssetsDefinition]:
    assets: list[dg.AssetsDefinition] = []
    for name, conn in plan.connectors.items():
        assets.append(_raw_asset(name, conn.type, extract_retry(plan)))
        assets.append(_customers_asset(name, conn, plan.stored_aspects(name)))
    return assets
