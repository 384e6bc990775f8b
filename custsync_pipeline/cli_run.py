"""``custsync run``: materialize every asset once and print what happened.

Runs the ``sync_job`` on the Dagster instance of ``$DAGSTER_HOME`` (so the run
shows in the UI afterwards) or an ephemeral one, then prints records per
connector, rejected rows, golden records and deltas published per target.
"""

from __future__ import annotations

import argparse
import os
import sys

import dagster as dg


def _metadata_value(value: object) -> object:
    return getattr(value, "value", value)


def materialization_metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    """asset key (user string) -> metadata of its materialization in this run."""
    out: dict[str, dict[str, object]] = {}
    for event in result.all_events:
        if event.event_type_value != "ASSET_MATERIALIZATION":
            continue
        mat = event.event_specific_data.materialization
        out[mat.asset_key.to_user_string()] = {
            k: _metadata_value(v) for k, v in mat.metadata.items()
        }
    return out


def format_summary(
    meta: dict[str, dict[str, object]], connectors: list[str], targets: list[str]
) -> str:
    lines = ["", "custsync run summary", "=" * 60]
    lines.append(
        f"{'connector':<16}{'received':>10}{'valid':>10}{'rejected':>10}{'fields quarantined':>20}"
    )
    for name in connectors:
        cust = meta.get(f"{name}/customers", {})
        rej = meta.get(f"{name}/rejected_customers", {})
        if not cust:
            lines.append(f"{name:<16}{'FAILED (see the run in the UI)':>40}")
            continue
        lines.append(
            f"{name:<16}{cust.get('received', 0):>10}{cust.get('dagster/row_count', 0):>10}"
            f"{rej.get('rejected_records', 0):>10}{rej.get('field_issues', 0):>20}"
        )
    idm = meta.get("identity_map", {})
    gold = meta.get("golden_customers", {})
    lines.append("")
    lines.append(f"identity map: {idm.get('dagster/row_count', '-')} source records")
    lines.append(
        f"golden records: {gold.get('dagster/row_count', '-')} "
        f"({gold.get('changed_records', '-')} new or changed this run)"
    )
    conflicts = meta.get("identity_conflicts", {}).get("dagster/row_count", "-")
    lines.append(f"identity conflicts for review: {conflicts}")
    lines.append("")
    lines.append(
        f"{'target':<16}{'deltas':>10}{'published':>12}{'failed':>10}{'dead':>8}{'held back':>12}"
    )
    for name in targets:
        d = meta.get(f"{name}/outbound_deltas", {})
        p = meta.get(f"{name}/published", {})
        lines.append(
            f"{name:<16}{d.get('dagster/row_count', '-'):>10}{p.get('published', '-'):>12}"
            f"{p.get('failed_transient', '-'):>10}{p.get('dead_lettered', '-'):>8}"
            f"{d.get('held_back', '-'):>12}"
        )
    return "\n".join(lines)


def _failed_steps(result: dg.ExecuteInProcessResult) -> list[str]:
    return [
        e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE" and e.step_key
    ]


def run(args: argparse.Namespace) -> int:
    from custsync_pipeline.config import load_sync_config
    from custsync_pipeline.definitions import defs
    from custsync_pipeline.defs.reconcile.definitions import only_lanes_failed

    cfg = load_sync_config()
    definitions = defs()
    instance = (
        dg.DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else dg.DagsterInstance.ephemeral()
    )
    # INFO, not DEBUG: the connectors' progress lines without every engine event
    log_level = os.environ.get("CUSTSYNC_LOG_LEVEL", "INFO")
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    results = [
        definitions.resolve_job_def("sync_job").execute_in_process(
            instance=instance, raise_on_error=False, run_config=run_config
        )
    ]
    failed = _failed_steps(results[0])
    if only_lanes_failed(failed, cfg.plan()):
        # what the continue_after_failed_lanes sensor does under the daemon
        print(
            f"\n==> lanes failed ({', '.join(failed)}): resolving and publishing "
            "from the stored records of every lane"
        )
        results.append(
            definitions.resolve_job_def("resolve_and_publish_job").execute_in_process(
                instance=instance, raise_on_error=False, run_config=run_config
            )
        )
    meta: dict[str, dict[str, object]] = {}
    for result in results:
        meta.update(materialization_metadata(result))
    connectors = list(cfg.enabled_connectors())
    targets = [t.connector for t in cfg.publish if t.connector in connectors]
    print(format_summary(meta, connectors, targets))
    for result in results:
        state = "success" if result.success else "FAILED"
        print(f"\nrun id: {result.run_id} ({result.job_def.name}: {state})")
        for event in result.all_events:
            if event.event_type_value == "STEP_FAILURE":
                print(f"  step failed: {event.step_key}: {event.message}", file=sys.stderr)
    return 0 if all(r.success for r in results) else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="materialize every asset once (the sync job) and print a summary"
    )
    p.set_defaults(func=run)
