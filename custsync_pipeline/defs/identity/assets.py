"""``identity_map`` and ``identity_conflicts``: one stable golden id per person.

Reads every connector's valid records from the state DB (so a lane that did not
run this time still counts with its last good snapshot), resolves identities
with the configured rules and stored steward decisions, and saves the map.
"""

import json
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from custsync_pipeline.defs.extract.assets import customers_key
from custsync_pipeline.defs.extract.pulls import full_snapshot_requested
from custsync_pipeline.defs.io import held_stamp, kept_outputs
from custsync_pipeline.defs.resources import STATE_POOL, connector_resource_key
from custsync_pipeline.defs.state_lease import holds_state_lease
from custsync_pipeline.domain.identity import MAP_COLUMNS
from custsync_pipeline.domain.plan import SyncPlan
from custsync_pipeline.store.bulk import (
    code_digest,
    drop_digest,
    frame_digest,
    inputs_key,
    rows_digest,
    save_digest,
    stored_digest,
    table_stamp,
)
from custsync_pipeline.store.core import SOURCE_STAMP
from custsync_pipeline.store.identity import (
    IDENTITY_STAMP,
    QueuedChanges,
    read_resolution_queue,
    take_off_resolved,
)

RESOLVED_INPUTS = "identity_inputs"  # table_digests row: what the stored map was resolved from
RESOLVED_RECORDS = "identity_records"  # ... and a digest of what it read of the records

RESOLVED_FIGURES = "identity_figures"  # ... and the counts of what it stored, for a skip

IDENTITY_MAP = dg.AssetKey("identity_map")
# the identity map's state-DB stamp (IDENTITY_STAMP) the output file was written at
MAP_STAMP = "custsync/identity_stamp"
IDENTITY_CONFLICTS = dg.AssetKey("identity_conflicts")


def conflict_counts(conflicts: pd.DataFrame) -> dict[str, int]:
    """``conflicts_<kind>`` -> rows of that kind (counts only: no personal data)."""
    if conflicts.empty:
        return {}
    return {f"conflicts_{k}": int(v) for k, v in conflicts["kind"].value_counts().items()}


def resolution_metadata(stats: dict[str, int], conflicts: pd.DataFrame) -> dict[str, int]:
    """What this resolution did, as numbers: merges, splits, new ids, conflicts by kind."""
    return {
        "merges": int(stats.get("golden_ids_merged", 0)),
        "splits": int(stats.get("split_parts", 0)),
        "new_golden_ids": int(stats.get("golden_ids_new", 0)),
        "conflicts": len(conflicts),
        "slow_path_records": int(stats.get("slow_path_records", 0)),
        # the probabilistic stage: clusters it linked, pairs it queued for review
        "probable_links": int(stats.get("match_links", 0)),
        "probable_review": int(stats.get("match_review", 0)),
        "stamped_records": int(stats.get("stamped_records", 0)),
        "steward_decisions_applied": int(stats.get("steward_decisions_applied", 0)),
        # a decision naming a record absent from this run is not applied (yet): counted
        "steward_decisions_waiting": int(stats.get("steward_decisions_waiting", 0)),
        # values custsync wrote to a target record and read back: no evidence of identity
        "echoed_values_ignored": int(stats.get("echoed_values_ignored", 0)),
        # an incremental resolution: the records changed, and those their change reached
        # (resolved again); 0 and 0 for a full resolution
        "changed_records": int(stats.get("changed_records", 0)),
        "resolved_records": int(stats.get("scope_records", 0)),
        # ... and the records the resolution queue named (0: every record's hash was read)
        "queued_records": int(stats.get("queued_records", 0)),
        **conflict_counts(conflicts),
    }


def masked_conflicts(conflicts: pd.DataFrame) -> pd.DataFrame:
    """The review queue as a step output: source ids that are e-mail addresses (an Icomm
    guest's UserId) masked like the key. The state DB keeps them in clear for stewards."""
    from custsync_pipeline.domain.identity_keys import mask_keys

    out = conflicts.copy()
    for col in ("source_id_a", "source_id_b"):
        if col in out.columns and len(out):
            out[col] = mask_keys(out[col].to_numpy(dtype=object), contact=False)
    return out


def save_resolved(
    conn,
    inputs: str,
    id_map: pd.DataFrame,
    conflicts: pd.DataFrame,
    queue: QueuedChanges | None = None,
) -> int:
    """Mark the stored map as resolved from ``inputs`` (in the caller's transaction, with
    the rows it covers), with its figures: a later run whose inputs are the same reports
    them without counting a million rows; the resolution ``queue`` it read is taken off.
    Returns the golden ids mapped."""
    golden = int(id_map["golden_id"].nunique()) if len(id_map) else 0
    figures = {"inputs": inputs, "rows": len(id_map), "golden": golden}
    save_digest(conn, RESOLVED_INPUTS, inputs)
    save_digest(conn, RESOLVED_FIGURES, json.dumps({**figures, **conflict_counts(conflicts)}))
    if queue is not None:
        take_off_resolved(conn, queue.ids, queue.stamp)
    return golden


def resolved_figures(engine, inputs: str) -> tuple[int, int, dict[str, int]]:
    """(source records mapped, golden ids, review-queue rows by kind) of the stored map:
    as saved with it when it was resolved from ``inputs``, else counted in the state DB."""
    from custsync_pipeline.store.identity import identity_figures

    try:
        saved = json.loads(stored_digest(engine, RESOLVED_FIGURES) or "{}")
    except ValueError:
        saved = {}
    if saved.get("inputs") != inputs:
        return identity_figures(engine)
    kinds = {
        k.removeprefix("conflicts_"): int(v) for k, v in saved.items() if k.startswith("conflicts_")
    }
    return int(saved["rows"]), int(saved["golden"]), kinds


def _identity_figures(rows: int, golden: int, kinds: dict[str, int]):
    """The metadata of a skipped resolution, with no values: the last outputs stay."""
    conflicts = {f"conflicts_{k}": n for k, n in kinds.items()}
    yield dg.MaterializeResult(
        asset_key=IDENTITY_MAP,
        metadata={
            "dagster/row_count": rows,
            "golden_ids": golden,
            "records_per_golden": float(rows / golden) if golden else 0.0,
            "resolution_skipped": True,
            **resolution_metadata({}, pd.DataFrame()),
            "conflicts": sum(kinds.values()),
            **conflicts,
        },
    )
    yield dg.MaterializeResult(
        asset_key=IDENTITY_CONFLICTS,
        metadata={"dagster/row_count": sum(kinds.values()), **conflicts},
    )


def _identity_results(
    engine: Engine,
    id_map: pd.DataFrame,
    conflicts: pd.DataFrame,
    stats: dict[str, int],
    skipped: bool = False,
    n_golden: int | None = None,
):
    """The map and review-queue outputs; the map's file carries the stamp of the map the
    state DB (``engine``) holds now: a step that keeps the file, or reads it, can tell."""
    if n_golden is None:
        n_golden = id_map["golden_id"].nunique() if not id_map.empty else 0
    out = id_map.copy(deep=False)
    out.attrs = {MAP_STAMP: table_stamp(engine, IDENTITY_STAMP)}
    yield dg.MaterializeResult(
        asset_key=IDENTITY_MAP,
        value=out,
        metadata={
            "dagster/row_count": len(id_map),
            "golden_ids": int(n_golden),
            "records_per_golden": float(len(id_map) / n_golden) if n_golden else 0.0,
            # no source record, decision or rule changed: the stored map was used
            "resolution_skipped": skipped,
            **resolution_metadata(stats, conflicts),
        },
    )
    yield dg.MaterializeResult(
        asset_key=IDENTITY_CONFLICTS,
        value=masked_conflicts(conflicts),
        metadata={"dagster/row_count": len(conflicts), **conflict_counts(conflicts)},
    )


def build_identity_assets(plan: SyncPlan) -> list[dg.AssetsDefinition]:
    upstream = [customers_key(n) for n in plan.connectors]

    @dg.multi_asset(
        name="resolve_identities",
        outs={
            "identity_map": dg.AssetOut(
                key=IDENTITY_MAP,
                group_name="identity",
                kinds={"pandas"},
                owners=["team:custsync"],
                description="(connector, source_id) -> golden_id for every valid source record.",
            ),
            "identity_conflicts": dg.AssetOut(
                key=IDENTITY_CONFLICTS,
                group_name="identity",
                kinds={"pandas"},
                owners=["team:custsync"],
                description="Links refused or in doubt: the steward review queue.",
            ),
        },
        deps=upstream,
        required_resource_keys={
            "state_db",
            "io_manager",
            # the targets' mappings: what custsync wrote there is no evidence (echo safety)
            *(connector_resource_key(t.connector) for t in plan.publish),
        },
        pool=STATE_POOL,
    )
    @holds_state_lease
    def resolve(context: dg.AssetExecutionContext):
        from custsync_pipeline.store.identity import (
            load_identity_conflicts,
            load_identity_state,
            load_steward_decisions,
        )

        engine = context.resources.state_db.engine
        # everything a resolution reads: the source records (their stamp moves whenever
        # one is written or deleted), the steward decisions and the rules
        inputs = inputs_key(
            table_stamp(engine, SOURCE_STAMP),
            frame_digest(load_steward_decisions(engine).astype("string")),
            sorted(plan.connectors),
            plan.identifiers,
            plan.matching,
        )
        unchanged = inputs == stored_digest(engine, RESOLVED_INPUTS)
        if unchanged:
            rows, golden, kinds = resolved_figures(engine, inputs)
            if (
                rows
                and kept_outputs(
                    context, {IDENTITY_MAP: rows, IDENTITY_CONFLICTS: sum(kinds.values())}
                )
                # the file holds the stored map (not one as many rows long)
                and held_stamp(context, IDENTITY_MAP, MAP_STAMP)
                == table_stamp(engine, IDENTITY_STAMP)
            ):
                context.log.info(
                    f"nothing changed since the last resolution: the stored map of {rows} "
                    "source records and the last outputs stay as they are"
                )
                yield from _identity_figures(rows, golden, kinds)
                return
        # the nightly reconciliation resolves every record (m and u estimated again), and
        # compares every stored reach with the one it computes
        incremental = plan.incremental_identity and not full_snapshot_requested(context.run.tags)
        # what changed since the stored map, read before the records: a write after it
        # stays queued for the next resolution
        queue = read_resolution_queue(engine, plan.connectors)
        prior_map, golden_ids, decisions = load_identity_state(
            engine, with_reach=plan.incremental_identity
        )
        if len(prior_map) and unchanged:
            context.log.info(
                f"nothing changed since the last resolution: the stored map of "
                f"{len(prior_map)} source records is used as it is"
            )
            conflicts = load_identity_conflicts(engine)
            yield from _identity_results(
                engine, prior_map[MAP_COLUMNS], conflicts, {}, skipped=True
            )
            return
        basis = resolution_basis(plan, decisions)
        now = pd.Timestamp(datetime.now(UTC))
        readers = _payload_readers(context, plan)
        if incremental and len(prior_map):
            scoped = _resolve_scope(
                context, engine, plan, basis, prior_map, golden_ids, decisions, now, readers, queue
            )
            if scoped is not None:
                with engine.begin() as conn:
                    n_golden = save_resolved(
                        conn, inputs, scoped.identity_map, scoped.conflicts, queue
                    )
                    drop_digest(conn, RESOLVED_RECORDS)
                # nothing any resolution reads changed (an edit of points or consents): no
                # record was resolved, none got another golden id
                skipped = not scoped.stats.get("scope_records", 0) and not scoped.stats.get(
                    "map_rows_written", 0
                )
                yield from _identity_results(
                    engine, scoped.identity_map, scoped.conflicts, scoped.stats, skipped, n_golden
                )
                return
        yield from _resolve_all(
            context, engine, plan, basis, inputs, prior_map, golden_ids, decisions, now, readers,
            queue,
        )  # fmt: skip

    return [resolve]


def _payload_readers(context: dg.AssetExecutionContext, plan: SyncPlan) -> dict:
    """Each publish target's connector as it reads the payloads custsync wrote there."""
    return {
        t.connector: getattr(
            context.resources, connector_resource_key(t.connector)
        ).payload_reader()
        for t in plan.publish
    }


def _own_word(
    context: dg.AssetExecutionContext, engine, readers: dict, records: pd.DataFrame
) -> tuple[pd.DataFrame, int]:
    """``records`` with what custsync wrote to them and reads back set aside
    (``defs.golden.echo.own_records``): (records, values set aside)."""
    from custsync_pipeline.defs.golden.echo import own_records

    out, n, unreadable = own_records(engine, readers, records)
    if unreadable:
        context.log.warning(f"echo safety off for {unreadable}: their payloads do not map back")
    return out, n


# the code a stored resolution depends on: a change to it resolves everything again
IDENTITY_CODE_MODULES = (
    "custsync_pipeline.domain.identity",
    "custsync_pipeline.domain.identity_constrained",
    "custsync_pipeline.domain.identity_ids",
    "custsync_pipeline.domain.identity_keys",
    "custsync_pipeline.domain.identity_match",
    "custsync_pipeline.domain.identity_names",
    "custsync_pipeline.domain.identity_scope",
    "custsync_pipeline.domain.stamps",
)


def resolution_basis(plan: SyncPlan, decisions: pd.DataFrame) -> str:
    """What a stored resolution's parameters and reach were made under: connectors, rules,
    matching, steward decisions and the resolution code. Another basis: resolve all."""
    return inputs_key(
        sorted(plan.connectors),
        plan.identifiers,
        plan.matching,
        frame_digest(decisions.astype("string")),
        code_digest(IDENTITY_CODE_MODULES),
    )


def _resolve_scope(
    context: dg.AssetExecutionContext,
    engine,
    plan: SyncPlan,
    basis: str,
    prior_map: pd.DataFrame,
    golden_ids: pd.DataFrame,
    decisions: pd.DataFrame,
    now: pd.Timestamp,
    readers: dict,
    queue: QueuedChanges,
):
    """Resolve only what changed since the last resolution (``domain.identity_scope``);
    None when a full resolution is due (the reason logged)."""
    from custsync_pipeline.domain.identity import resolution_columns
    from custsync_pipeline.domain.identity_scope import StoredResolution, resolve_changes
    from custsync_pipeline.domain.stamps import attach_stamped, split_stamped
    from custsync_pipeline.store.core import load_source_records
    from custsync_pipeline.store.identity import (
        load_identity_conflicts,
        load_match_params,
        save_identity_result,
        stale_reach,
    )

    same_basis, params, known = load_match_params(engine, basis)
    if not same_basis:
        context.log.info(
            "resolving every record: the rules, matching, steward decisions or resolution "
            "code changed since the last full resolution (or there was none)"
        )
        return None
    if stale_reach(engine, prior_map):
        context.log.info("resolving every record: the stored map predates incremental resolution")
        return None
    connectors = list(plan.connectors)
    current, queued = _current_records(context, engine, connectors, prior_map, queue)
    to_resolve, stamped = split_stamped(current, golden_ids["golden_id"], decisions)
    columns = [*resolution_columns(list(plan.identifiers), plan.matching), "custsync_id"]

    echoed = 0

    def fetch(keys: pd.DataFrame) -> pd.DataFrame:
        nonlocal echoed
        found = load_source_records(engine, connectors, columns=columns, keys=keys, arrow_text=True)
        found, n = _own_word(context, engine, readers, found)
        echoed += n
        return found

    scoped = resolve_changes(
        to_resolve[["connector", "source_id"]].assign(
            source_hash=to_resolve["row_hash"].to_numpy(dtype=object)
        ),
        fetch,
        StoredResolution(prior_map, golden_ids, load_identity_conflicts(engine), params, known),
        list(plan.identifiers),
        decisions=decisions,
        now=now,
        matching=plan.matching,
        max_share=plan.identity_scope_max_share,
        prior_pos=to_resolve[PRIOR_POS].to_numpy() if PRIOR_POS in to_resolve else None,
    )
    if scoped is None:
        context.log.info(
            "resolving every record: the change reaches more than "
            f"{plan.identity_scope_max_share:.0%} of them (identity.incremental.max_share)"
        )
        return None
    result = attach_stamped(scoped.result, stamped, now)
    written = save_identity_result(
        engine,
        result,
        stored=(prior_map, golden_ids),
        reach=scoped.scope,
        touched=scoped.touched,
        kept=scoped.kept,
        gone=scoped.gone,
    )
    stats = result.stats
    stats["map_rows_written"] = written["identity_map_moved"] + written["identity_map_deleted"]
    stats["echoed_values_ignored"] = echoed
    stats["queued_records"] = queued
    context.log.info(
        f"incremental resolution: {stats.get('changed_records', 0)} changed records reached "
        f"{stats.get('scope_records', 0)} of {len(to_resolve)}; "
        f"{written['identity_map']} map rows written"
    )
    return result


PRIOR_POS = "_prior_pos"  # a current record's row in the stored map, when known


def _current_records(
    context: dg.AssetExecutionContext,
    engine,
    connectors: list[str],
    prior_map: pd.DataFrame,
    queue: QueuedChanges,
) -> tuple[pd.DataFrame, int]:
    """connector, source_id, row_hash, custsync_id of every current record: the stored map
    brought up to date by the records the resolution queue names (with each one's row in
    the map, ``PRIOR_POS``), or every record read when the queue is no account of what
    changed or its count disagrees with the state DB's; and the records the queue named
    (0: every record read)."""
    from custsync_pipeline.domain.identity_scope import current_records
    from custsync_pipeline.store.core import (
        load_source_records,
        source_record_counts,
        stamped_source_records,
    )

    columns = ["connector", "source_id", "row_hash", "custsync_id"]
    reason = queue.reason
    if queue.keys is not None:
        fresh = load_source_records(engine, connectors, columns=columns, keys=queue.keys)
        stamped = stamped_source_records(engine, connectors)
        current, prior_pos = current_records(prior_map, queue.keys, fresh, stamped)
        held = sum(n for c, n in source_record_counts(engine).items() if c in set(connectors))
        if held == len(current):
            context.log.info(
                f"{len(queue.keys)} source records written or deleted since the last "
                "resolution (the resolution queue)"
            )
            return current.assign(**{PRIOR_POS: prior_pos}), len(queue.keys)
        reason = f"the queue accounts for {len(current)} records, the state DB holds {held}"
    context.log.info(f"reading every record's hash: {reason}")
    return load_source_records(engine, connectors, columns=columns), 0


def _resolve_all(
    context: dg.AssetExecutionContext,
    engine,
    plan: SyncPlan,
    basis: str,
    inputs: str,
    prior_map: pd.DataFrame,
    golden_ids: pd.DataFrame,
    decisions: pd.DataFrame,
    now: pd.Timestamp,
    readers: dict,
    queue: QueuedChanges,
):
    """Resolve every record; store the match parameters and each record's reach for the
    incremental resolutions that follow."""
    from custsync_pipeline.domain.golden import key_positions
    from custsync_pipeline.domain.identity import resolution_columns, resolve_identities
    from custsync_pipeline.domain.stamps import attach_stamped, split_stamped
    from custsync_pipeline.store.identity import (
        load_identity_conflicts,
        load_match_params,
        load_resolution_records,
        save_identity_result,
        save_match_params,
        stale_reach,
    )

    records = load_resolution_records(
        engine,
        list(plan.connectors),
        [*resolution_columns(list(plan.identifiers), plan.matching), "row_hash"],
    )
    records, echoed = _own_word(context, engine, readers, records)
    # what resolution reads, as one digest: an edit of a column it does not read (points,
    # consents, a street no rule compares) resolves nothing again. ``updated_at`` only
    # orders two copies of one record, and the state DB holds one per key.
    read = inputs_key(
        rows_digest(records.drop(columns=["updated_at", "row_hash"], errors="ignore")),
        frame_digest(decisions.astype("string")),
        sorted(plan.connectors),
        plan.identifiers,
        plan.matching,
    )
    same_basis, _, _ = load_match_params(engine, basis)
    if len(prior_map) and read == stored_digest(engine, RESOLVED_RECORDS) and same_basis:
        context.log.info(
            f"the records changed in no column resolution reads: the stored map of "
            f"{len(prior_map)} source records is used as it is"
        )
        conflicts = load_identity_conflicts(engine)
        with engine.begin() as conn:
            n_golden = save_resolved(conn, inputs, prior_map, conflicts, queue)
        yield from _identity_results(engine, prior_map[MAP_COLUMNS], conflicts, {}, True, n_golden)
        return
    to_resolve, stamped = split_stamped(records, golden_ids["golden_id"], decisions)
    with_reach = plan.incremental_identity
    result = resolve_identities(
        to_resolve.drop(columns=["row_hash"], errors="ignore"),
        list(plan.identifiers),
        prior_map=prior_map[MAP_COLUMNS],
        golden_ids=golden_ids,
        decisions=decisions,
        now=now,
        matching=plan.matching,
        with_reach=with_reach,
    )
    reach = None
    if with_reach:
        reach = result.identity_map[["connector", "source_id"]].copy()
        pos = key_positions(reach, to_resolve, ["connector", "source_id"])
        reach["source_hash"] = np.where(
            pos >= 0, to_resolve["row_hash"].to_numpy(dtype=object)[np.maximum(pos, 0)], None
        )
        reach["reach"] = result.reach
    result = attach_stamped(result, stamped, now)
    result.stats["echoed_values_ignored"] = echoed
    save_identity_result(
        engine,
        result,
        stored=(prior_map, golden_ids),
        reach=reach,
        rewrite_reach=with_reach and (not same_basis or stale_reach(engine, prior_map)),
    )
    with engine.begin() as conn:
        n_golden = save_resolved(conn, inputs, result.identity_map, result.conflicts, queue)
        save_digest(conn, RESOLVED_RECORDS, read)
        save_match_params(conn, basis, result.match_params, result.known_words)
    yield from _identity_results(
        engine, result.identity_map, result.conflicts, result.stats, n_golden=n_golden
    )
