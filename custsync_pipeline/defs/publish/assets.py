"""Publishing lanes, one per target: ``<t>/outbound_deltas`` (what must change, queued in the
outbox) and ``<t>/published`` (sent through the connector, one ledger row per entity).

Only deltas leave: a golden record whose payload the target already holds, or
already acknowledged (and not since changed by hand in the target), is not sent. Sends
are upserts by an immutable key, so a crash mid-publish resumes by re-sending what is
still pending, without duplicates. Each deltas computation supersedes what an older
one left queued, and a queued create is dropped, not sent, once the target holds a
record of that golden id. A publish with failed or dead-lettered writes fails its step,
naming the target and the reason. A golden record deleted in a target (held there before,
no longer) is never created there again. A batch the target refuses whole for custsync's
credential (HTTP 401/403) is no verdict on its payloads: they stay queued (``failed``, never
``dead``), and the publish stops there, leaving the rest queued, until the credential works;
a 401/403 beside writes the target took is that record's, dead-lettered.
"""

import json
import re
from dataclasses import replace

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from custsync_pipeline.connectors.base import WriteOp
from custsync_pipeline.connectors.http import (
    AUTH_ERROR,
    TOKEN_ERROR,
    auth_failure_status,
    mask_personal,
    mask_sent,
    sent_values,
)
from custsync_pipeline.defs.golden.assets import GOLDEN_CUSTOMERS
from custsync_pipeline.defs.golden.echo import held_for_updates
from custsync_pipeline.defs.identity.assets import IDENTITY_MAP
from custsync_pipeline.defs.resources import STATE_POOL, connector_resource_key
from custsync_pipeline.defs.state_lease import holds_state_lease
from custsync_pipeline.domain.aspects import ASPECT_COLUMNS
from custsync_pipeline.domain.canonical import CONSENT_TIMES
from custsync_pipeline.domain.conflicts import (
    accept_target_values,
    field_conflicts,
    foreign_opt_outs,
    review_fields,
    withhold_fields,
)
from custsync_pipeline.domain.deltas import (
    aspect_payload_hashes,
    attach_payloads,
    clear_withdrawn,
    compute_deltas,
    entry_lists,
    hold_back,
    hold_taken_keys,
    key_clashes,
    member_views,
    withdrawn_values,
)
from custsync_pipeline.domain.echo import names_as_held
from custsync_pipeline.domain.markets import apply_market_rules, market_takes
from custsync_pipeline.domain.plan import PublishPolicy, SyncPlan
from custsync_pipeline.store import conflicts as conflict_store
from custsync_pipeline.store import core, presence
from custsync_pipeline.store import golden as golden_store
from custsync_pipeline.store.delete_events import record_delete_events

PUBLISH_CHUNK = (
    1000  # ops recorded per state-DB transaction: a crash loses at most this much progress
)
# the first writes of a publish go alone: when every one of them fails transiently (after
# its retries) the target is down, and the rest wait in the outbox for the outbox sensor
# instead of each spending its retries against an outage
PUBLISH_PROBE = 20
# a connector's own error line ("[voyado] POST …"): a refusal judged to be about one record
# is stored reworded (``RECORD_REFUSED``) and is not taken for the credential again
_AUTH_ERROR_ANY = re.compile(
    r"^\[[^\]]+\] .*(?:"
    + "|".join(x.pattern.replace("(", "(?:", 1) for x in (AUTH_ERROR, TOKEN_ERROR))
    + ")"
)
RECORD_REFUSED = "refused for this record, not for the credential: "


def auth_refused(errors: pd.Series) -> pd.Series:
    """Per error (``last_error`` of outbox rows): whether it was a refused credential."""
    return errors.astype("string").str.contains(_AUTH_ERROR_ANY, na=False).astype(bool)


def publish_chunks(
    total: int, probe: int = PUBLISH_PROBE, size: int = PUBLISH_CHUNK
) -> list[tuple[int, int]]:
    """(start, stop) of each batch of a publish of ``total`` ops: the first write alone (a
    credential the target refuses costs one write), the rest of the probe, then chunks."""
    if not total:
        return []
    head = min(probe, total)
    bounds = sorted({0, 1, head, *range(head, total, size), total})
    return list(zip(bounds[:-1], bounds[1:], strict=True))


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


SOURCE_DELETIONS = dg.AssetKey("source_deletions")


def _source_deletions_asset(plan: SyncPlan) -> dg.AssetsDefinition:
    @dg.asset(
        key=SOURCE_DELETIONS,
        group_name="publish",
        ins={"identity_map": dg.AssetIn(key=IDENTITY_MAP)},
        required_resource_keys={"state_db"},
        kinds={"sql"},
        owners=["team:custsync"],
        pool=STATE_POOL,
        description="Golden records gone from the source of truth: pending deletes, and those "
        "past the grace period that targets delete or archive (state DB target_presence).",
    )
    @holds_state_lease
    def source_deletions(
        context: dg.AssetExecutionContext, identity_map: pd.DataFrame
    ) -> dg.MaterializeResult:
        if plan.uses_current_data or plan.source not in plan.connectors:
            return dg.MaterializeResult(metadata={"pending_deletes": 0, "deletes_due": 0})
        engine = context.resources.state_db.engine
        key = presence.SOURCE_PREFIX + plan.source
        mine = identity_map.loc[identity_map["connector"] == plan.source]
        before = presence.gone_runs(engine, key)
        # a Contact now under another golden id (a merge, a re-resolution, a steward's
        # decision) was not deleted: its old golden record is no pending delete
        presence.record_presence(engine, key, mine["golden_id"], mine[["golden_id", "source_id"]])
        # the person's other records, parted when the Contact that held them together went,
        # are deleted with the rest
        presence.inherit_gone(engine, key, mine["golden_id"])
        runs = presence.gone_runs(engine, key)
        due = int((runs >= plan.delete_grace_runs).sum())
        # every step of a delete is an event in golden history
        for ids, step in (
            (runs.index.difference(before.index), "pending"),
            (before.index.difference(runs.index), "cancelled"),
            (runs.index[runs == plan.delete_grace_runs], "due"),
        ):
            record_delete_events(engine, ids, step, plan.source)
        context.log.info(
            f"{len(runs)} golden records gone from {plan.source}: {due} past the grace period "
            f"of {plan.delete_grace_runs} runs, {len(runs) - due} pending"
        )
        return dg.MaterializeResult(
            metadata={"pending_deletes": len(runs) - due, "deletes_due": due}
        )

    return source_deletions


# flat fields an address entry carries: a target that takes the addresses aspect holds them
# as the entry it is sent (Salesforce Mailing*), compared there in its own shape
ADDRESS_FIELDS = ("street", "city", "postal_code", "country")


def compared_fields(fields: list[str], aspects: list[str]) -> list[str]:
    """The flat fields deltas compare for a target: its fields, less those an aspect it
    takes carries (a golden flat city from one connector and a mailing address from another
    would otherwise differ on every run, as the payload's Mailing* come from the entry)."""
    if "addresses" not in aspects:
        return list(fields)
    return [f for f in fields if f not in ADDRESS_FIELDS]


def _written_by_custsync(
    ledger: pd.DataFrame, name: str, connector: object, members: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(canonical rows with ``created``, held values) of what custsync last wrote to
    ``members`` of ``name``: their rows of the ``ledger`` already read, their acknowledged
    payloads read as the target's records are (``defs.golden.echo.acked_writes``)."""
    from custsync_pipeline.defs.golden.echo import acked_writes

    empty = pd.DataFrame(columns=["source_id"])
    if members.empty or ledger.empty:
        return empty, pd.DataFrame(columns=["source_id", "field", "value"])
    box = ledger[ledger["target_id"].astype(str).isin(set(members["source_id"].astype(str)))]
    canon, _, held, _ = acked_writes(box, connector, name)
    return (canon if len(canon) else empty), held


def _opt_outs_kept(
    ledger: pd.DataFrame,
    name: str,
    connector: object,
    consents: list[str],
    takes: pd.DataFrame,
    members: pd.DataFrame,
) -> pd.DataFrame:
    """``domain.conflicts.foreign_opt_outs`` of ``members``: the opt-outs against a golden
    "yes" found first with no write known (a few of a million), then custsync's writes to
    those read from the ledger."""
    none = pd.DataFrame(columns=["source_id", "field"])
    found = foreign_opt_outs(takes, members, pd.DataFrame(), none, consents)
    if found.empty:
        return found
    candidates = members[members["source_id"].astype(str).isin(set(found["source_id"]))]
    written, held = _written_by_custsync(ledger, name, connector, candidates)
    return foreign_opt_outs(takes, candidates, written, held, consents)


def _withdrawn(
    ledger: pd.DataFrame,
    plan: SyncPlan,
    name: str,
    connector: object,
    fields: list[str],
    takes: pd.DataFrame,
    members: pd.DataFrame,
) -> pd.DataFrame:
    """(source_id, field) of owned values custsync wrote to ``name``'s records that the
    owner no longer gives (``domain.deltas.withdrawn_values``): a loyalty tier whose member
    the loyalty platform deleted is cleared there. ``fields``: those compared (an address
    field a target takes as entries is the entries'). Only fields one connector owns (an
    empty value of any other is no fact) and never a consent (a consent once given or
    withdrawn never returns to not set); only where the connector can clear a field."""
    owned = [
        f
        for f in fields
        if f in plan.ownership
        and f not in CONSENT_TIMES
        and f not in CONSENT_TIMES.values()
        and f in members
        and f in takes
    ]
    if not owned or not hasattr(connector, "cleared_key") or members.empty:
        return pd.DataFrame(columns=["source_id", "field"])
    # only members holding a value their golden record lacks: the writes to those are read
    golden = takes.drop_duplicates("golden_id").set_index("golden_id")
    hit = pd.Series(False, index=members.index)
    for f in owned:
        hit |= members[f].notna() & members["golden_id"].map(golden[f]).isna()
    candidates = members[hit.to_numpy(dtype=bool)]
    if candidates.empty:
        return pd.DataFrame(columns=["source_id", "field"])
    written, _ = _written_by_custsync(ledger, name, connector, candidates)
    return withdrawn_values(takes, candidates, written, owned)


def deleted_by_custsync(outbox: pd.DataFrame, holders: pd.Series | None = None) -> set[str]:
    """Golden ids whose record in the target custsync deleted (the delete acknowledged):
    gone by custsync's own hand, not "deleted there" by someone else. ``holders``
    (golden_id -> the record the target last held of it): only a delete of that very record
    counts — one created again after custsync's delete and then deleted there by someone
    else is theirs."""
    if outbox.empty:
        return set()
    done = outbox[(outbox["op"] == "delete") & (outbox["status"] == "acked")]
    done = done[done["golden_id"].notna()]
    if holders is not None and len(done):
        held = done["golden_id"].astype(str).map(holders)
        record = done["target_id"].fillna(done["entity_key"]).astype(str)
        done = done[(held.isna() | (held == record)).to_numpy()]
    return set(done["golden_id"].astype(str))


def delete_ops(
    members: pd.DataFrame, due: set[str], target: PublishPolicy, versions: pd.Series
) -> pd.DataFrame:
    """Outbox rows that delete (or archive) ``target``'s members of golden records past
    their grace period: ``op`` delete with an empty payload, or an upsert of the target's
    archive fields."""
    hit = members[members["golden_id"].isin(due)]
    if target.delete_mode == "none" or hit.empty:
        return pd.DataFrame()
    if target.delete_mode == "archive":
        payload = core.dumps_payload(dict(target.archive_payload))
        op, digest = "upsert", "archive:" + payload
    else:
        payload, op, digest = "{}", "delete", "delete"
    return pd.DataFrame(
        {
            "entity_key": hit["source_id"].astype(str).to_numpy(),
            "golden_id": hit["golden_id"].astype(str).to_numpy(),
            "target_id": hit["source_id"].astype(str).to_numpy(),
            "op": op,
            "payload": payload,
            "payload_hash": digest,
            "golden_version": hit["golden_id"].map(versions).to_numpy(),
        }
    )


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
        deps=[SOURCE_DELETIONS],
        required_resource_keys={"state_db", api_key},
        kinds={"pandas"},
        owners=["team:custsync"],
        pool=STATE_POOL,
        description=f"Creates and updates {name} needs to match the golden records (queued in the outbox).",
    )
    @holds_state_lease
    def outbound_deltas(
        context: dg.AssetExecutionContext,
        golden_customers: pd.DataFrame,
        identity_map: pd.DataFrame,
    ) -> dg.MaterializeResult:
        engine = context.resources.state_db.engine
        connector = getattr(context.resources, api_key).connector()
        # every field is sent; only those the target's object takes and reads back are
        # compared (a field it cannot hold would differ at every run: an update sent
        # again and again)
        sent = plan.target_fields(name)
        carries = getattr(connector, "carries", None)
        fields = [f for f in sent if carries is None or carries(f)]
        aspects = list(target.aspects)
        members = core.load_source_records(engine, [name]).merge(
            identity_map[["connector", "source_id", "golden_id"]], on=["connector", "source_id"]
        )
        ledger = core.load_outbox(engine, name)
        # dead: the API refused this very payload. A row dead-lettered for a refused
        # credential (401/403, as publishes before that was retryable recorded it) is no
        # verdict on its payload: queued again (failed), so this computation renews or
        # supersedes it like any other queued row
        stranded = (ledger["status"] == "dead") & auth_refused(ledger["last_error"])
        if stranded.any():
            requeued = core.requeue_dead_rows(engine, name, ledger.loc[stranded, "entity_key"])
            ledger.loc[stranded, "status"] = "failed"
            context.log.info(
                f"{name}: {requeued} rows dead-lettered for a refused credential queued again"
            )
        refused_for_good = ledger["status"] == "dead"
        # settled: acknowledged (the ledger keeps the last ack of a row queued again),
        # or dead-lettered with this very payload (sending the same payload again would
        # fail the same way; a changed payload is retried)
        settled = pd.concat(
            [
                ledger.loc[ledger["acked_hash"].notna(), ["entity_key", "acked_hash"]],
                ledger.loc[refused_for_good, ["entity_key", "payload_hash"]].rename(
                    columns={"payload_hash": "acked_hash"}
                ),
            ]
        )
        # each market's language and consent rules, and only the markets it serves
        golden_customers = apply_market_rules(golden_customers, plan.markets)
        serves = market_takes(golden_customers, plan.markets, name)
        takes, held_back = hold_back(golden_customers[serves], target.kinds, target.required_fields)
        if plan.markets:
            held_back["market_not_served"] = int((~serves).sum())
        # each op carries the golden version it was computed from
        takes = takes.assign(version=takes["golden_id"].map(core.golden_versions(engine)))
        write_object = getattr(connector, "write_object", None)
        golden_sub = golden_customers[["golden_id", *sent]]
        aspect_hashes = member_hashes = member_want = views = m_entries = None
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
            # each member's slots: the golden primary entry first (the one the golden
            # record's flat fields hold, sent or not), then its own (duplicates keep theirs)
            flat = sorted(
                {c for a in aspects for c in ASPECT_COLUMNS.get(a, ())}
                & set(golden_customers.columns) - set(taken.columns)
            )
            views = member_views(
                taken.merge(golden_customers[["golden_id", *flat]], on="golden_id", how="left"),
                m_frame.merge(members[["source_id", "golden_id"]], on="source_id"),
                aspects,
            )
            member_want = aspect_payload_hashes(
                views, aspects, connector.from_canonical, key="source_id"
            )
        # target-side changes to fields under review: left alone, queued for a person
        writable_members = (
            members if not write_object else members[members["object_type"] == write_object]
        )
        conflicts = field_conflicts(takes, writable_members, review_fields(target.conflicts))
        # an opt-out the target holds that custsync did not write (an unsubscribe link, a
        # hand edit) is never reversed by the owner's older "yes": left alone, for review
        # (a consent already under review is left to that review)
        under_review = set(review_fields(target.conflicts))
        free = [f for f in CONSENT_TIMES if f in fields and f not in under_review]
        opt_outs = _opt_outs_kept(ledger, name, connector, free, takes, writable_members)
        conflicts = pd.concat([c for c in (conflicts, opt_outs) if len(c)] or [conflicts])
        conflicts = conflicts.drop_duplicates(["source_id", "field"]).reset_index(drop=True)
        # a key value (Voyado's e-mail) another of its records holds: that record keeps
        # its own (two contacts of one person after a merge never share one)
        clashes = key_clashes(takes, writable_members, target.key_field)
        kept = pd.concat([c for c in (conflicts, clashes) if len(c)] or [conflicts])
        withdrawn = _withdrawn(
            ledger, plan, name, connector, compared_fields(fields, aspects), takes, writable_members
        )
        deltas = compute_deltas(
            takes,
            names_as_held(accept_target_values(members, takes, kept), takes),
            compared_fields(fields, aspects),
            settled,
            writable_types=[write_object] if write_object else None,
            aspect_hashes=aspect_hashes,
            member_aspect_hashes=member_hashes,
            member_want_hashes=member_want,
            empty_reads_as=getattr(connector, "empty_reads_as", None),
            withdrawn=withdrawn,
        )
        # a golden record the target held and no longer holds was deleted there: it is
        # never created again in the system that deleted it
        gone_before = set(presence.gone_runs(engine, name).index)
        gone = presence.record_presence(
            engine, name, members["golden_id"], members[["golden_id", "source_id"]]
        )
        # a record custsync deleted there (acknowledged) is gone by its own hand: its
        # history already says "deleted"
        ours = deleted_by_custsync(ledger, presence.holders_of(engine, name, gone))
        record_delete_events(engine, gone - gone_before - ours, "gone from target", name)
        # (one custsync deleted is created again once the person is back at the source)
        again = deltas["entity_key"].astype(str).str.startswith("new:") & deltas["golden_id"].isin(
            gone - ours
        )
        not_recreated = int(again.sum())
        deltas = deltas[~again].reset_index(drop=True)
        # gone from the source of truth: never created anywhere; past the grace period, no
        # more updates either, but a delete (or archive) where the target's mode says so
        src_gone = pd.Series(dtype="int64")
        if not plan.uses_current_data:
            src_gone = presence.gone_runs(engine, presence.SOURCE_PREFIX + plan.source)
        due = set(src_gone.index[src_gone >= plan.delete_grace_runs])
        stop = deltas["golden_id"].isin(due) | (
            deltas["entity_key"].astype(str).str.startswith("new:")
            & deltas["golden_id"].isin(src_gone.index)
        )
        deltas = deltas[~stop].reset_index(drop=True)
        # the API refused this very payload for good (a record deleted there that no delete
        # feed reported answers 404): sending it again, drift or not, fails the same way and
        # would fail every publish until the reconciliation's full snapshot sees the delete
        dead = ledger.loc[refused_for_good, ["entity_key", "payload_hash"]]
        refused = pd.MultiIndex.from_frame(deltas[["entity_key", "payload_hash"]].astype(str))
        again_dead = refused.isin(pd.MultiIndex.from_frame(dead.astype(str))) if len(dead) else []
        not_retried = int(sum(again_dead))
        if not_retried:
            deltas = deltas[~again_dead].reset_index(drop=True)
        if target.key_field:
            deltas, key_taken = hold_taken_keys(deltas, takes, members, target.key_field)
            held_back[f"key_taken_{target.key_field}"] = key_taken
        deltas = attach_payloads(
            deltas, golden_sub, connector.from_canonical, core.dumps_payload, members=views
        )
        deltas = withhold_fields(
            deltas, golden_sub, kept, connector.from_canonical, core.dumps_payload
        )
        if len(withdrawn):  # only a connector with ``cleared_key`` withdraws values
            deltas = clear_withdrawn(deltas, withdrawn, connector.cleared_key, core.dumps_payload)
        conflict_counts = conflict_store.save_field_conflicts(engine, name, conflicts)
        removals = delete_ops(
            writable_members, due, target, takes.set_index("golden_id")["version"]
        )
        if not removals.empty:  # not again what the target already acknowledged
            last = settled.drop_duplicates("entity_key", keep="last").set_index("entity_key")
            done = removals["entity_key"].map(last["acked_hash"])
            removals = removals[done.to_numpy() != removals["payload_hash"].to_numpy()]
            step = "queued archive" if target.delete_mode == "archive" else "queued delete"
            record_delete_events(engine, removals["golden_id"], step, name)
            columns = list(dict.fromkeys([*deltas.columns, *removals.columns]))
            parts = [d for d in (deltas, removals) if len(d)]  # no empty frame in a concat
            if parts:
                deltas = pd.concat(parts, ignore_index=True).reindex(columns=columns)
        # what each update changes, as the record held it: its echo is no evidence later
        if m_entries is None:
            m_entries = golden_store.load_source_entries(engine, [name])
        deltas["held"] = held_for_updates(deltas, connector, name, ledger, members, m_entries)
        queued_before = ledger["status"].isin(core.QUEUED)
        core.enqueue_deltas(engine, name, deltas)
        # queued rows of an older computation this one did not renew: never sent
        superseded = int((queued_before & ~ledger["entity_key"].isin(deltas["entity_key"])).sum())
        creates = (
            int(deltas["entity_key"].astype(str).str.startswith("new:").sum()) if len(deltas) else 0
        )
        context.log.info(
            f"{name}: {len(deltas)} deltas ({creates} creates), {superseded} older queued "
            f"rows superseded, {not_recreated} deleted there not re-created, {sum(held_back.values())} golden records held back {held_back}"
        )
        return dg.MaterializeResult(
            value=deltas,
            metadata={
                "dagster/row_count": len(deltas),
                "creates": creates,
                "updates": len(deltas) - creates,
                "superseded": superseded,
                "not_recreated": not_recreated,
                "deletes": len(removals),
                "dead_not_retried": not_retried,
                # records that keep their own key value (another record of the target
                # holds the golden one): not given a value the target holds twice
                "key_kept": len(clashes),
                "values_withdrawn": len(withdrawn),
                "conflicts_open": conflict_counts["open"],
                "conflicts_new": conflict_counts["new"],
                "held_back": sum(held_back.values()),
                **{f"held_back_{reason}": n for reason, n in held_back.items()},
            },
        )

    return outbound_deltas


def held_golden_ids(engine, target: str) -> set[str]:  # noqa: ANN001 - an Engine
    """Golden ids with at least one member among ``target``'s stored records."""
    from custsync_pipeline.store.identity import identity_map as idm

    stmt = (
        sa.select(idm.c.golden_id)
        .distinct()
        .where(idm.c.connector == target)
        .where(
            sa.exists().where(
                core.source_records.c.connector == idm.c.connector,
                core.source_records.c.source_id == idm.c.source_id,
            )
        )
    )
    with engine.connect() as conn:
        return {str(g) for g in conn.execute(stmt).scalars()}


def publish_failure_reason(
    target: str,
    counts: dict[str, int],
    errors: list[str],
    auth: tuple[int, str] | None = None,
) -> str:
    """One line: the target, how many writes failed, and the commonest error (personal
    data masked; connectors already scrub secrets from API error bodies). ``auth``: the
    status and error of the write the target refused for custsync's credential, which
    stopped the publish: the line says so first, and what was left queued."""
    if auth is not None:
        status, error = auth
        left = counts["auth"] + counts.get("unsent", 0)
        return (
            f"{target}: not authorized (HTTP {status}): the target refused custsync's "
            f"credential, publishing to it stopped at the first batch it refused whole; {left} deltas left "
            "queued, not dead-lettered (sent by the next run or the outbox sensor once the "
            f"credential is fixed), {counts['acked']} acknowledged"
            + (
                f", {counts['failed'] - counts['auth']} other writes failed"
                if counts["failed"] > counts["auth"]
                else ""
            )
            + (f", {counts['dead']} dead-lettered" if counts["dead"] else "")
            + f"; error: {mask_personal(error)[:200]}"
        )
    top = pd.Series(errors, dtype="string").value_counts() if errors else pd.Series(dtype=int)
    reason = mask_personal(str(top.index[0]))[:200] if len(top) else "no error text"
    return (
        f"{target}: {counts['failed']} writes failed (retried by the outbox sensor), "
        f"{counts['dead']} dead-lettered, {counts['acked']} acknowledged"
        + (
            f", {counts['unsent']} not sent (every write of a batch failed: the target looks down)"
            if counts.get("unsent")
            else ""
        )
        + f"; most common error ({int(top.iloc[0]) if len(top) else 0}x): {reason}"
    )


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
    @holds_state_lease
    def published(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        engine = context.resources.state_db.engine
        pending = core.load_outbox(engine, name, statuses=core.QUEUED)
        # a create is never sent for a golden record the target already holds (the outbox
        # sensor publishes without recomputing: identity may have moved since it queued)
        held = held_golden_ids(engine, name)
        stale = pending["entity_key"].astype(str).str.startswith("new:") & pending[
            "golden_id"
        ].isin(held)
        dropped = core.supersede_rows(engine, name, pending.loc[stale, "entity_key"])
        pending = pending[~stale]
        if dropped:
            context.log.info(f"{name}: {dropped} queued creates dropped (the target holds them)")
        connector = getattr(context.resources, api_key).connector()
        errors: list[str] = []
        counts = {"acked": 0, "failed": 0, "dead": 0, "gone": 0, "auth": 0}
        total = len(pending)
        unsent = unsent_auth = 0
        auth: tuple[int, str] | None = None  # the first refused credential: (status, error)
        first: list[str] = []  # the lone first write's status (part of the outage probe)
        undecided: pd.DataFrame | None = None  # that write, refused 401/403: whose fault?
        for start, stop in publish_chunks(total):
            chunk = pending.iloc[start:stop]
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
            core.mark_sending(engine, name, chunk["entity_key"])
            # an error that quotes what was sent (a name, a street) is stored masked
            sent = sent_values([op.payload for op in ops])
            results = [
                replace(r, error=mask_sent(r.error, sent)) if r.error else r
                for r in connector.write(ops)
            ]
            # 401/403 beside writes the target took is about that record (a customer the
            # key may not touch): a verdict on it, dead-lettered. A batch refused whole is
            # the credential: no verdict, queued again. The lone first write decides
            # nothing alone (a record refused there would block every publish): the next
            # batch tells which it was.
            refused = [not r.ok and auth_failure_status(r.error) is not None for r in results]
            took = any(r.ok for r in results)
            credential = any(refused) and not took
            lone = start == 0 and stop == 1 and total > 1 and credential
            status = [
                "acked"
                if r.ok
                else "gone"
                if r.gone
                else "failed"
                if r.transient or (a and credential)
                else "dead"
                for r, a in zip(results, refused, strict=True)
            ]
            frame = pd.DataFrame(
                {
                    "entity_key": chunk["entity_key"].to_numpy(),
                    "target_id": [r.target_id for r in results],
                    "status": status,
                    "last_error": [
                        RECORD_REFUSED + str(r.error) if a and s == "dead" else r.error
                        for r, a, s in zip(results, refused, status, strict=True)
                    ],
                }
            )
            core.record_publish_results(engine, name, frame)
            gone = frame["status"].eq("gone").to_numpy()
            if gone.any():  # deleted there since read: that member leaves, as a delete feed
                core.remove_source_records(engine, name, frame.loc[gone, "target_id"])
                record_delete_events(
                    engine, chunk["golden_id"].to_numpy()[gone], "gone when written", name
                )
            removed = chunk["payload_hash"].astype(str).isin(["delete"]) | chunk[
                "payload_hash"
            ].astype(str).str.startswith("archive:")
            done = removed.to_numpy() & (frame["status"] == "acked").to_numpy()
            if done.any():
                kind = chunk["payload_hash"].astype(str).str.startswith("archive:").to_numpy()
                ids = chunk["golden_id"].to_numpy()
                record_delete_events(engine, ids[done & kind], "archived", name)
                record_delete_events(engine, ids[done & ~kind], "deleted", name)
            for s in status:
                counts[s] += 1
            errors += [r.error for r in results if not r.ok and r.error]
            # tried, not delivered: the counts say how many the target took
            context.log.info(
                f"{name}: {stop}/{total} tried, {counts['acked']} acknowledged, "
                f"{counts['failed'] + counts['dead']} failed"
            )
            if lone:
                undecided = frame  # the first write, refused: the probe's next batch decides
            elif undecided is not None:
                if took:  # the target takes writes: the first refusal was that record's
                    verdict = undecided.assign(
                        status="dead", last_error=RECORD_REFUSED + undecided["last_error"]
                    )
                    core.record_publish_results(engine, name, verdict)
                    counts["failed"] -= 1
                    counts["dead"] += 1
                elif credential:
                    counts["auth"] += 1
                undecided = None
            if credential and not lone:
                counts["auth"] += sum(refused)
                error = next(r.error for r, a in zip(results, refused, strict=True) if a)
                auth = (auth_failure_status(error) or 0, str(error))
                unsent_auth = counts["unsent"] = total - stop
                context.log.warning(
                    f"{name}: the target refused custsync's credential (HTTP {auth[0]}): "
                    f"publishing to it stopped, {counts['auth'] + unsent_auth} deltas left "
                    "queued for the next run or the outbox sensor"
                )
                break
            # the probe: the lone first write and the next ones, all failed transiently
            tried = first + status if start == 1 else status
            first = status if start == 0 else first
            if stop < total and stop > 1 and all(s == "failed" for s in tried):
                unsent = counts["unsent"] = total - stop
                context.log.warning(
                    f"{name}: every write of the last {len(tried)} failed transiently; "
                    f"{unsent} left queued for the outbox sensor"
                )
                break
        metadata = {
            "dagster/row_count": total,
            "published": counts["acked"],
            "failed_transient": counts["failed"],
            "dead_lettered": counts["dead"],
            "gone_there": counts["gone"],
            "not_sent_target_down": unsent,
            "failed_auth": counts["auth"],
            "not_sent_auth_failed": unsent_auth,
            "creates_dropped": dropped,
        }
        if counts["failed"] or counts["dead"] or unsent or unsent_auth:
            # what was acknowledged is recorded; the step still fails so the run does not
            # report success while the target missed writes
            context.log_event(dg.AssetObservation(asset_key=published_key(name), metadata=metadata))
            raise dg.Failure(
                description=publish_failure_reason(name, counts, errors, auth),
                metadata=metadata,
            )
        return dg.MaterializeResult(metadata=metadata)

    return published


def build_publish_assets(plan: SyncPlan) -> list[dg.AssetsDefinition]:
    assets: list[dg.AssetsDefinition] = []
    for target in plan.publish:
        assets += [_deltas_asset(plan, target), _published_asset(target)]
    if plan.publish:
        assets.append(_source_deletions_asset(plan))
    return assets
