"""``golden_customers`` and one ``golden_<aspect>`` table per multi-valued aspect in the flow:
one golden record per golden id, merged by the plan's survivorship and ownership rules.

The aspect tables live in the state DB (``golden_entries``, with every entry's
holders in ``golden_entry_sources``); their assets carry counts, not copies.
"""

import json
from datetime import datetime, timedelta

import dagster as dg
import numpy as np
import pandas as pd

from custsync_pipeline.defs.golden.echo import reads_as, written_canonical
from custsync_pipeline.defs.identity.assets import IDENTITY_MAP, MAP_STAMP
from custsync_pipeline.defs.io import ARROW_TEXT_INPUT, held_stamp, kept_outputs
from custsync_pipeline.defs.resources import STATE_POOL, connector_resource_key
from custsync_pipeline.defs.state_lease import holds_state_lease
from custsync_pipeline.domain.aspects import ASPECT_COLUMNS, ENTRY_ASPECTS
from custsync_pipeline.domain.canonical import GOLDEN_FIELDS
from custsync_pipeline.domain.echo import ECHO_FIELDS, keep_spelling, own_word
from custsync_pipeline.domain.golden import (
    GOLDEN_INPUT_COLUMNS,
    change_counts,
    diff_golden,
    entries_digest,
    merge_golden,
)
from custsync_pipeline.domain.merge_scope import golden_scope, member_digests, moved_members
from custsync_pipeline.domain.plan import SyncPlan
from custsync_pipeline.domain.quality import nameless_golden
from custsync_pipeline.store import core, merge_scope
from custsync_pipeline.store import golden as golden_store
from custsync_pipeline.store.bulk import (
    code_digest,
    inputs_key,
    save_digest,
    stack_rows,
    stored_digest,
    table_stamp,
)
from custsync_pipeline.store.identity import IDENTITY_STAMP

GOLDEN_CUSTOMERS = dg.AssetKey("golden_customers")
MERGED_INPUTS = "golden_inputs"  # table_digests row: what the stored golden records came from
MERGED_OUTPUTS = "golden_outputs"  # ... and the figures of that merge (replayed when skipped)
MERGE_STATE = "golden_merge_state"  # the plan and start time of the last merge
# the modules whose code decides a golden record (survivorship, echo safety): golden
# records merged by another version of them are no base for a merge of a part
MERGE_CODE_MODULES = (
    "custsync_pipeline.connectors.common",  # how a target's payloads are read back
    "custsync_pipeline.connectors.entries",
    "custsync_pipeline.domain.aspects",
    "custsync_pipeline.domain.canonical",
    "custsync_pipeline.domain.echo",
    "custsync_pipeline.domain.golden",
    "custsync_pipeline.domain.identity_keys",
    "custsync_pipeline.domain.merge_scope",
    "custsync_pipeline.defs.golden.assets",
    "custsync_pipeline.defs.golden.echo",
    # how golden aspects and field origins are stored: a new layout is filled by a full merge
    "custsync_pipeline.store.golden",
)
# what a skipped merge changed: nothing
UNCHANGED_COUNTS = ("changed_records", "field_changes", "entry_changes", "retired_ids")


def aspect_key(aspect: str) -> dg.AssetKey:
    return dg.AssetKey(f"golden_{aspect}")


def flow_aspects(plan: SyncPlan) -> list[str]:
    """The multi-valued aspects some flow step contributes (their tables exist)."""
    given = {a for s in plan.steps for a in s.aspects}
    return [a for a in ENTRY_ASPECTS if a in given or plan.uses_current_data]


def golden_table_schema() -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn("golden_id", "string"),
            *[dg.TableColumn(c, "string") for c in GOLDEN_FIELDS],
            dg.TableColumn("entries_hash", "string", description="digest of the aspect entries"),
        ]
    )


def _aspect_schema(aspect: str) -> dg.TableSchema:
    cols = ["golden_id", "entry_key", "parent_key", *ASPECT_COLUMNS[aspect], "providers"]
    return dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in cols])


def _aspect_results(aspects: list[str], counts: dict[str, int], multi: dict[str, int]):
    for a in aspects:
        yield dg.MaterializeResult(
            asset_key=aspect_key(a),
            metadata={
                "dagster/row_count": int(counts.get(a, 0)),
                "dagster/column_schema": _aspect_schema(a),
                "held_by_several_connectors": int(multi.get(a, 0)),
            },
        )


def merge_key(plan: SyncPlan, targets: dict) -> str:
    """The plan and the code a merge ran (survivorship and the publish targets' mappings
    that read back what custsync wrote): a merge of a part needs the same as the last."""
    modules = (*MERGE_CODE_MODULES, *sorted({type(c).__module__ for c in targets.values()}))
    return inputs_key(plan, code_digest(modules))


def _merge_scope(
    engine,
    key: str,
    identity_map: pd.DataFrame,
    queued: pd.DataFrame,
    member_changes: pd.DataFrame | None,
) -> tuple[set[str] | None, pd.Series | None, pd.Series | None, int]:
    """(the golden ids to merge again, or None for every one; the member digests of every
    golden record and as stored at the last merge, or None and None when the identity
    step's queue of member changes told the moved golden ids: ``member_changes``; the
    golden records there are). Every one is merged when there was no merge of this plan
    and code yet (``key``, :func:`merge_key`)."""
    state = json.loads(stored_digest(engine, MERGE_STATE) or "{}")
    if member_changes is None or state.get("plan") != key or not state.get("at"):
        digests = member_digests(identity_map)
        stored = merge_scope.load_member_digests(engine)
        moved, n_golden = moved_members(digests, stored), len(digests)
    else:
        digests = stored = None
        moved = set(member_changes["golden_id"].astype(str))
        n_golden = merge_scope.member_digest_count(engine)
    if state.get("plan") != key or not state.get("at"):
        return None, digests, stored, n_golden
    # a publish since the last merge (the state lease keeps the two apart; a second of
    # slack for the clock's resolution)
    since = datetime.fromisoformat(state["at"]) - timedelta(seconds=1)
    written = core.outbox_written_since(engine, since)
    return golden_scope(identity_map, moved, n_golden, queued, written), digests, stored, n_golden


# what the golden output holds of a stored golden record (not its version or hash)
OUTPUT_DROPS = ["version", "record_hash", "updated_at"]
# the golden records' stamp the output was made at, in the output file itself (pandas
# keeps a frame's attrs in its Parquet metadata): a file another run left at the same
# path (another DAGSTER_HOME, a restored state DB) does not pass for the last output
OUTPUT_STAMP = "custsync/golden_stamp"


def _one_of(values: pd.Series, wanted: set[str]) -> np.ndarray:
    """Whether each value, as text, is one of ``wanted``: Arrow text (the map as the step
    reads it) is looked up as it is, not turned into a Python string per value first."""
    if not isinstance(values.dtype, pd.StringDtype):
        values = values.astype(str)
    return values.isin(wanted).to_numpy(dtype=bool)


def _stamped(golden: pd.DataFrame, stamp: str) -> pd.DataFrame:
    golden.attrs = {OUTPUT_STAMP: stamp}
    return golden


def _last_output(context: dg.AssetExecutionContext, stamp: str) -> pd.DataFrame | None:
    """The last golden output, when it holds the stored golden records as they are now:
    no golden record was written since it was made (``stamp``, the golden records' stamp
    before this merge wrote, is the one written into the file). None otherwise, or when
    the IO manager cannot hand it back."""
    if not stamp:
        return None
    held = getattr(getattr(context.resources, "io_manager", None), "held_output", None)
    frame = held(GOLDEN_CUSTOMERS) if held is not None else None
    if frame is None or frame.attrs.get(OUTPUT_STAMP) != stamp:
        return None
    return frame


def _updated_output(
    context: dg.AssetExecutionContext,
    engine,
    stamp: str,
    changed: pd.DataFrame,
    gone: list[str],
    new_stamp: str,
) -> pd.DataFrame | None:
    """The last golden output brought up to date in its file after a merge of a part wrote
    ``changed`` and retired ``gone`` — while that file holds the stored golden records as
    they were before (``stamp``, as ``_last_output`` checks it, from the file's footer), and
    the IO manager can (``replace_rows``). Returns the name columns of every golden record
    (what the step's metadata counts), or None: the caller builds the output itself."""
    io = getattr(context.resources, "io_manager", None)
    replace = getattr(io, "replace_rows", None)
    shape = io.held_shape(GOLDEN_CUSTOMERS) if replace is not None and stamp else None
    if shape is None or shape.attrs.get(OUTPUT_STAMP) != stamp:
        return None
    written = changed["golden_id"].astype(str)
    fresh = core.load_golden_records(engine, written.tolist()) if len(written) else None
    if fresh is None:
        fresh = pd.DataFrame(columns=[c for c in shape.columns])
    fresh = fresh.drop(columns=OUTPUT_DROPS, errors="ignore")
    table = replace(
        GOLDEN_CUSTOMERS, "golden_id", [*written, *gone], fresh, {OUTPUT_STAMP: new_stamp}
    )
    if table is None:
        return None
    names = [
        c
        for c in ("golden_id", "first_name", "last_name", "company_name")
        if c in table.column_names
    ]
    return table.select(names).to_pandas()


def _stored_after(
    engine, before: pd.DataFrame, changed: pd.DataFrame, gone: list[str]
) -> pd.DataFrame:
    """The stored golden records after a merge of a part wrote ``changed`` and retired
    ``gone``: those rows read back, the others as ``before`` (the last output) holds them."""
    written = changed["golden_id"].astype(str)
    out = ~before["golden_id"].astype(str).isin({*written, *gone}).to_numpy()
    kept = before[out].drop(columns=OUTPUT_DROPS, errors="ignore")
    fresh = core.load_golden_records(engine, written.tolist()) if len(written) else None
    if fresh is None or not len(fresh):
        return kept.reset_index(drop=True)
    fresh = fresh.drop(columns=OUTPUT_DROPS)
    kept = kept.reindex(columns=fresh.columns)
    for col in fresh.columns:
        if kept[col].dtype == fresh[col].dtype:
            continue
        if col not in before.columns:  # a column the file predates: missing, typed
            kept[col] = pd.Series(None, index=kept.index, dtype=object)
        kept[col] = kept[col].astype(fresh[col].dtype)  # a file's types: as the DB's
    return stack_rows([kept, fresh])


def build_golden_assets(plan: SyncPlan) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    aspects = flow_aspects(plan)
    outs = {
        "golden_customers": dg.AssetOut(
            key=GOLDEN_CUSTOMERS,
            group_name="golden",
            kinds={"pandas"},
            owners=["team:custsync"],
            # the columns show on the asset page before its first materialization too
            metadata={"dagster/column_schema": golden_table_schema()},
            description="The golden record of every person or company: single-valued fields "
            "chosen by the flow (latest connector) and ownership rules, with a version.",
        ),
        **{
            f"golden_{a}": dg.AssetOut(
                key=aspect_key(a),
                group_name="golden",
                kinds={"sql"},
                owners=["team:custsync"],
                metadata={"dagster/column_schema": _aspect_schema(a)},
                description=f"Golden {a.replace('_', ' ')}: the union of every contributing "
                "step's entries, one per natural key, each with the connectors that hold it "
                "(state-DB table golden_entries).",
            )
            for a in aspects
        },
    }

    @dg.multi_asset(
        name="merge_golden_records",
        outs=outs,
        ins={"identity_map": dg.AssetIn(key=IDENTITY_MAP, metadata={ARROW_TEXT_INPUT: True})},
        required_resource_keys={
            "state_db",
            "io_manager",
            *(connector_resource_key(t.connector) for t in plan.publish),
        },
        pool=STATE_POOL,
        can_subset=False,
    )
    @holds_state_lease
    def merge_golden_records(context: dg.AssetExecutionContext, identity_map: pd.DataFrame):
        engine = context.resources.state_db.engine
        # everything a merge reads: source records and entries (their stamp), the identity
        # map (its stamp), what custsync wrote to the targets (echo safety reads the
        # outbox) and the plan's rules
        inputs = inputs_key(
            table_stamp(engine, core.SOURCE_STAMP),
            table_stamp(engine, IDENTITY_STAMP),
            core.outbox_stamp(engine),
            plan,
        )
        merged_before = inputs == stored_digest(engine, MERGED_INPUTS)
        last = json.loads(stored_digest(engine, MERGED_OUTPUTS) or "{}")
        if (
            merged_before
            and last.get("inputs") == inputs
            and kept_outputs(context, {GOLDEN_CUSTOMERS: last["metadata"]["dagster/row_count"]})
        ):
            context.log.info(
                "nothing changed since the last merge: the "
                f"{last['metadata']['dagster/row_count']} stored golden records and the last "
                "output stay as they are"
            )
            yield dg.MaterializeResult(
                asset_key=GOLDEN_CUSTOMERS,
                metadata={
                    **last["metadata"],
                    "dagster/column_schema": golden_table_schema(),
                    **dict.fromkeys(UNCHANGED_COUNTS, 0),
                    "merge_skipped": True,
                },
            )
            yield from _aspect_results(aspects, last["counts"], last["multi"])
            return
        if merged_before:
            golden = core.load_golden_records(engine)
            context.log.info(
                f"nothing changed since the last merge: the {len(golden)} stored golden "
                "records are used as they are"
            )
            counts, multi = golden_store.entry_counts(engine)
            yield dg.MaterializeResult(
                asset_key=GOLDEN_CUSTOMERS,
                value=_stamped(
                    golden.drop(columns=OUTPUT_DROPS), table_stamp(engine, core.GOLDEN_STAMP)
                ),
                metadata={
                    "dagster/row_count": len(golden),
                    "dagster/column_schema": golden_table_schema(),
                    "changed_records": 0,
                    "field_changes": 0,
                    "entry_changes": 0,
                    "retired_ids": 0,
                    "nameless_records": int(nameless_golden(golden).sum()),
                    "aspect_entries": int(sum(counts.values())),
                    "merge_skipped": True,
                },
            )
            yield from _aspect_results(aspects, counts, multi)
            return
        # what the merge must redo, read before anything else: a record written while it
        # merges stays queued for the next merge
        started = core.utcnow()
        queued = merge_scope.read_queue(engine)
        # the golden ids whose members the identity step changed, while its queue of
        # them is a full account of the map (else every golden record's members digested)
        identity_stamp = table_stamp(engine, IDENTITY_STAMP)
        member_changes, members_queued = merge_scope.read_member_queue(engine, identity_stamp)
        # ... and while the map this step reads is the one the queue accounts for
        members_queued &= held_stamp(context, IDENTITY_MAP, MAP_STAMP) == identity_stamp
        targets = {
            t.connector: getattr(
                context.resources, connector_resource_key(t.connector)
            ).payload_reader()
            for t in plan.publish
        }
        key = merge_key(plan, targets)
        scope, digests, stored_digests, n_golden = _merge_scope(
            engine, key, identity_map, queued, member_changes if members_queued else None
        )
        full_map = identity_map
        if scope is None:
            keys = None
            context.log.info(f"merging all {n_golden} golden records")
        else:
            members = identity_map[_one_of(identity_map["golden_id"], scope)]
            identity_map, keys = members, members[["connector", "source_id"]]
            context.log.info(
                f"merging {len(scope)} of {n_golden} golden records: those whose "
                f"{len(queued)} queued source records, members or writes changed"
                + ("" if digests is not None else " (members as the identity step queued them)")
            )
        digests_told = digests is not None
        if digests is None:  # the members of the golden records merged, digested
            digests = member_digests(identity_map)
            stored_digests = merge_scope.load_member_digests(engine, scope)
        # Arrow-backed text: a million records and their entries in a fraction of the memory
        records = core.load_source_records(
            engine,
            list(plan.connectors),
            columns=GOLDEN_INPUT_COLUMNS,
            arrow_text=True,
            keys=keys,
        )
        entries = golden_store.load_source_entries(
            engine, list(plan.connectors), arrow_text=True, keys=keys
        )
        # the stored golden records this merge redoes; the golden records' stamp before
        # it writes tells whether the last output still holds the others as stored
        golden_stamp = table_stamp(engine, core.GOLDEN_STAMP)
        previous = core.load_golden_records(engine, scope)
        previous_entries = golden_store.load_golden_entries(engine, scope)
        # echo safety: what custsync wrote to a target and reads back is no evidence
        written, written_entries, held, held_entries, unreadable = written_canonical(
            engine, targets, keys
        )
        records, entries, n_echoed = own_word(
            records,
            entries,
            written,
            written_entries,
            held,
            held_entries,
            ECHO_FIELDS,
            reads_as(targets),
        )
        if unreadable:
            context.log.warning(f"echo safety off for {unreadable}: their payloads do not map back")
        # stored consents whose record is gone (deleted, not moved to another golden record)
        gone_consents = None
        if len(previous):
            sources = golden_store.consent_sources(engine, scope)
            # only the map rows of those source ids (a few, not the million)
            near = full_map[_one_of(full_map["source_id"], set(sources["source_id"]))]
            mapped = pd.MultiIndex.from_frame(near[["connector", "source_id"]].astype(str))
            there = pd.MultiIndex.from_frame(sources[["connector", "source_id"]].astype(str))
            gone_consents = sources[~there.isin(mapped)]
        result = merge_golden(
            plan, records, identity_map, entries, previous, previous_entries, gone_consents
        )
        updated = None
        # a spelling (case, spacing) of an entry the golden record holds is no change
        result.entries = keep_spelling(result.entries, previous_entries)
        result.golden["entries_hash"] = entries_digest(result.entries, result.golden["golden_id"])
        now = pd.Timestamp.now(tz="UTC")
        changed, events, gone = diff_golden(
            result.golden,
            previous,
            result.provenance,
            now,
            new_entries=result.entries,
            old_entries=previous_entries,
        )
        core.save_golden_records(engine, changed, events)
        # the aspects and provenance of golden records whose values changed, and of those
        # whose members did (a member deleted there: its fields come from another now,
        # though no value changed)
        rewrite = {*changed["golden_id"].astype(str), *gone}
        if len(stored_digests):
            was = stored_digests.reindex(digests.index).to_numpy(dtype=object)
            rewrite |= set(digests.index[was != digests.to_numpy(dtype=object)])
        golden_store.save_golden_aspects(
            engine,
            sorted(rewrite),
            result.entries,
            result.entry_sources,
            result.provenance,
        )
        core.delete_golden_records(engine, gone)
        field_changes, entry_events = change_counts(changed, events, gone, result.entries)
        if scope is None:
            golden = result.golden
            counts = (
                result.entries["aspect"].value_counts().to_dict() if len(result.entries) else {}
            )
            multi = (
                result.entries.loc[
                    result.entries["providers"].str.contains(",", regex=False), "aspect"
                ]
                .value_counts()
                .to_dict()
                if len(result.entries)
                else {}
            )
        else:  # the records merged are a part: the output is every stored one
            # the last output file with the merged records replaced, in place (Arrow: no
            # Python object per value of the others), while it holds the state DB's
            updated = _updated_output(
                context, engine, golden_stamp, changed, gone, table_stamp(engine, core.GOLDEN_STAMP)
            )
            if updated is not None:
                golden = updated
            else:
                base = _last_output(context, golden_stamp)
                if base is None:  # read whole, after this merge's writes
                    golden = core.load_golden_records(engine).drop(columns=OUTPUT_DROPS)
                else:
                    golden = _stored_after(engine, base, changed, gone)
            counts, multi = golden_store.entry_counts(engine)
        nameless = int(nameless_golden(golden).sum())
        n_entries = int(sum(counts.values()))
        context.log.info(
            f"{len(golden)} golden records ({len(result.golden)} merged): {len(changed)} new "
            f"or changed, {field_changes} field changes, {entry_events} aspect "
            f"entry changes, {len(gone)} retired; {n_entries} aspect entries"
        )
        metadata = {
            "dagster/row_count": len(golden),
            "merged_records": len(result.golden),
            # the golden ids whose members changed came from the identity step's queue
            # (False: every golden record's members were digested)
            "members_queued": digests_told is False,
            "changed_records": len(changed),
            "echoed_values_ignored": n_echoed,
            "field_changes": field_changes,
            "entry_changes": entry_events,
            "retired_ids": len(gone),
            "nameless_records": nameless,
            "aspect_entries": n_entries,
            **{f"ownership_refused_{f}": n for f, n in result.refused.items()},
        }
        yield dg.MaterializeResult(
            asset_key=GOLDEN_CUSTOMERS,
            # the stamp after this merge's writes: the next merge of a part starts from it
            # (none: the output file was brought up to date in place, ``_updated_output``)
            value=None
            if golden is updated
            else _stamped(golden, table_stamp(engine, core.GOLDEN_STAMP)),
            metadata={
                **metadata,
                "dagster/column_schema": golden_table_schema(),
                "merge_skipped": False,
            },
        )
        outputs = {"inputs": inputs, "metadata": metadata, "counts": counts, "multi": multi}
        with engine.begin() as conn:
            # what this merge covered: the next one redoes only what changed since
            merge_scope.save_member_digests(conn, digests, scope)
            merge_scope.note_members_merged(conn, member_changes["id"], identity_stamp)
            merge_scope.take_off(conn, queued["id"])
            save_digest(conn, MERGE_STATE, json.dumps({"plan": key, "at": started.isoformat()}))
            save_digest(conn, MERGED_INPUTS, inputs)
            save_digest(conn, MERGED_OUTPUTS, json.dumps(outputs, default=int))
        yield from _aspect_results(aspects, counts, multi)

    @dg.asset_check(
        asset=GOLDEN_CUSTOMERS,
        name="every_golden_record_has_a_name",
        required_resource_keys={"state_db"},
        description="A golden record with no first name, last name or company name "
        "cannot be addressed: its sources give no name aspect.",
    )
    def every_golden_record_has_a_name(context: dg.AssetCheckExecutionContext):
        # counted in the state DB: a million golden records never leave it for this
        nameless, records = golden_store.nameless_count(context.resources.state_db.engine)
        return dg.AssetCheckResult(
            passed=nameless == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"nameless_records": nameless, "records": records},
        )

    @dg.asset_check(
        asset=GOLDEN_CUSTOMERS,
        name="every_aspect_entry_has_provenance",
        required_resource_keys={"state_db"},
        blocking=True,
        description="Every golden aspect entry names at least one connector that holds it.",
    )
    def every_aspect_entry_has_provenance(context: dg.AssetCheckExecutionContext):
        engine = context.resources.state_db.engine
        missing = golden_store.entries_without_provenance_count(engine)
        return dg.AssetCheckResult(
            passed=missing == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"entries_without_provenance": missing},
        )

    return [merge_golden_records, every_golden_record_has_a_name, every_aspect_entry_has_provenance]
