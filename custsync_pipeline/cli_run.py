"""``custsync run``: materialize every asset once and print what happened.

Runs the ``sync_job`` on the Dagster instance of ``$DAGSTER_HOME`` (so the run
shows in the UI afterwards) or an ephemeral one, then prints records per
connector, rejected rows, golden records and deltas published per target,
then one line per failed step (its connector or target, the step, the reason).
Exits 1 when a step failed or a target has failed or dead-lettered deltas, 2 when nothing
ran: another sync held the state lease for longer than ``runs.lease_wait_s``, or the state
DB cannot be opened (one line naming it, password hidden: a PostgreSQL database that does
not exist, a server that does not answer).

Its runs belong to the code location the UI loads (``workspace.yaml``: module
``custsync_pipeline.definitions``, location ``custsync``): each is created with that
location's job origin and the job's own snapshot, then executed in this process
(``execute_run``, in-process executor). So the job page lists them, the Overview timeline
shows them, and Re-execute launches the same job without a "different version" warning.

The whole command holds the state lease (``store.lease``) and hands it to its runs by run
tag, so two ``custsync run`` started together never both write: the second waits for the
first, then finds nothing left to do.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

import dagster as dg

from custsync_pipeline.defs.state_lease import LEASE_OWNER_TAG

if TYPE_CHECKING:
    from collections.abc import Callable

    from custsync_pipeline.config import SyncConfig
    from custsync_pipeline.domain.plan import SyncPlan


def _metadata_value(value: object) -> object:
    return getattr(value, "value", value)


def materialization_metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    """asset key (user string) -> metadata of its materialization in this run, or of its
    observation when the step failed after recording what it did (a publish with failed
    writes)."""
    out: dict[str, dict[str, object]] = {}
    observed: dict[str, dict[str, object]] = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            mat = event.event_specific_data.materialization
            into = out
        elif event.event_type_value == "ASSET_OBSERVATION":
            mat = event.event_specific_data.asset_observation
            into = observed
        else:
            continue
        into[mat.asset_key.to_user_string()] = {
            k: _metadata_value(v) for k, v in mat.metadata.items()
        }
    return {**observed, **out}


def step_owner(step_key: str, names: list[str]) -> str | None:
    """The connector or target a step belongs to (``voucherify__raw_customers`` -> voucherify)."""
    hits = [n for n in names if step_key == n or step_key.startswith((f"{n}__", f"{n}_"))]
    return max(hits, key=len) if hits else None


# error classes that wrap the user's error (the one a failed step's line names)
WRAPPERS = ("Dagster", "RetryRequested")


def failure_reason(event: dg.DagsterEvent, limit: int = 240) -> str:
    """One line saying why a step failed: the innermost user error, not Dagster's wrapper."""
    err = getattr(event.event_specific_data, "error", None)
    if err is None:
        return event.message or "failed"
    retried = ""
    # Dagster's wrappers, and a RetryPolicy's ("Exceeded max_retries of 2"), hold the
    # user's error as their cause
    while err.cause is not None and err.cls_name and err.cls_name.startswith(WRAPPERS):
        if err.cls_name.startswith("RetryRequested") and "max_retries of" in err.message:
            retried = f" (the step tried {int(err.message.rsplit(' ', 1)[-1]) + 1} times)"
        err = err.cause
    text = " ".join(err.message.strip().splitlines()[:1]) or err.cls_name or "failed"
    head, sep, rest = text.partition(": ")
    if sep and "." in head and " " not in head:  # "dagster._core...Failure: why" -> "why"
        text = rest if head.endswith(".Failure") else f"{head.rsplit('.', 1)[-1]}: {rest}"
    room = limit - len(retried)
    return (text if len(text) <= room else text[: room - 1] + "…") + retried


def step_failures(results: list[dg.ExecuteInProcessResult]) -> list[tuple[str, str]]:
    """(step key, one-line reason) of every failed step of ``results``, in order."""
    return [
        (e.step_key, failure_reason(e))
        for result in results
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE" and e.step_key
    ]


def format_transactions(meta: dict[str, object]) -> str:
    """One line per transaction source and target from the ``transactions`` asset."""
    sources = sorted(k.removesuffix("_read") for k in meta if k.endswith("_read"))
    targets = sorted(
        k.removesuffix("_held_no_member") for k in meta if k.endswith("_held_no_member")
    )
    lines = ["", "transactions"]
    for s in sources:
        lines.append(
            f"  {s}: {meta.get(f'{s}_read', 0)} read, {meta.get(f'{s}_rejected', 0)} rejected, "
            f"{meta.get(f'{s}_linked', 0)} linked to golden records"
        )
    for t in targets:
        lines.append(
            f"  -> {t}: {meta.get(f'{t}_sent', 0)} sent, {meta.get(f'{t}_failed', 0)} failed, "
            f"{meta.get(f'{t}_held_no_member', 0)} held (no member there), "
            f"{meta.get(f'{t}_already_sent', 0)} sent before"
        )
    return "\n".join(lines)


def format_summary(
    meta: dict[str, dict[str, object]],
    connectors: list[str],
    targets: list[str],
    failures: list[tuple[str, str]] | None = None,
) -> str:
    failures = failures or []
    names = [*connectors, *targets]
    lines = ["", "custsync run summary", "=" * 60]
    lines.append(
        f"{'connector':<16}{'received':>10}{'valid':>10}{'rejected':>10}{'fields quarantined':>20}"
    )
    notes: list[str] = []
    for name in connectors:
        cust = meta.get(f"{name}/customers", {})
        rej = meta.get(f"{name}/rejected_customers", {})
        if not cust:
            lines.append(f"{name:<16}{'FAILED (the reason is below)':>40}")
            continue
        lines.append(
            f"{name:<16}{cust.get('received', 0):>10}{cust.get('dagster/row_count', 0):>10}"
            f"{rej.get('rejected_records', 0):>10}{rej.get('field_issues', 0):>20}"
        )
        if cust.get("source_records_replaced") is False:
            kept = int(cast(int, cust.get("source_records_kept", 0)) or 0)
            notes.append(
                f"  {name}: below its valid-row gate, nothing stored; "
                + (
                    f"the {kept} records of its last good run are used"
                    if kept
                    else "no earlier good run, so golden records are made without it"
                )
            )
    lines.extend(notes)
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
    unsent = unsent_targets(meta, targets)
    if unsent:
        lines.append("")
        for name, (failed, dead) in unsent.items():
            lines.append(
                f"  {name}: {failed} failed (retried by the outbox sensor), {dead} dead-lettered "
                "(the API refused them; the reasons are in the state DB's outbox)"
            )
    if failures:
        lines.append("")
        lines.append("failed steps:")
        for step, reason in failures:
            owner = step_owner(step, names)
            lines.append(f"  {owner or '-'}: {step}: {reason}")
    return "\n".join(lines)


def unsent_targets(
    meta: dict[str, dict[str, object]], targets: list[str]
) -> dict[str, tuple[int, int]]:
    """Targets with deltas that failed or were dead-lettered this run: name -> (failed, dead)."""
    out: dict[str, tuple[int, int]] = {}
    for name in targets:
        p = meta.get(f"{name}/published", {})
        failed = int(cast(int, p.get("failed_transient", 0)) or 0)
        dead = int(cast(int, p.get("dead_lettered", 0)) or 0)
        if failed or dead:
            out[name] = (failed, dead)
    return out


DEFINITIONS_MODULE = "custsync_pipeline.definitions"
LOCATION_NAME = "custsync"  # workspace.yaml's location_name and [tool.dg] code_location_name


def execute_in_code_location(
    definitions: dg.Definitions,
    job_name: str,
    instance: dg.DagsterInstance,
    run_config: dict,
    tags: dict[str, str],
):
    """Run ``job_name`` of ``definitions`` (the project's) as a run of the ``custsync`` code
    location: the run carries the location's job origin (the UI files it under the job and
    its repository) and the snapshot the location computes (re-execution sees the same
    version); it executes in this process, in-process executor, on the job definition
    given (not one Dagster's reconstruction caches per process: another config may
    have been loaded since)."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.execution.api import create_execution_plan, execute_run
    from dagster._core.remote_origin import (
        ManagedGrpcPythonEnvCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    from custsync_pipeline.definitions import PROJECT_ROOT

    recon_repo = ReconstructableRepository.for_module(
        DEFINITIONS_MODULE, "defs", working_directory=str(PROJECT_ROOT)
    )
    recon_job = recon_repo.get_reconstructable_job(job_name)  # its origin only: never loaded
    repository = definitions.get_repository_def()
    job_def = repository.get_job(job_name)
    run_config = {**run_config, "execution": {"config": {"in_process": {}}}}
    plan = create_execution_plan(job_def, run_config=run_config)
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=DEFINITIONS_MODULE,
            working_directory=str(PROJECT_ROOT),
        ),
        location_name=LOCATION_NAME,
    )
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=location,
            repository_name=repository.name,
        ),
        job_name=job_name,
    )
    run = instance.create_run_for_job(
        job_def=job_def,
        execution_plan=plan,
        run_config=run_config,
        tags={**job_def.run_tags, **tags},
        remote_job_origin=origin,
        job_code_origin=recon_job.get_python_origin(),
    )
    return execute_run(InMemoryJob(job_def), run, instance, raise_on_error=False)


def _failed_steps(result: dg.ExecuteInProcessResult) -> list[str]:
    return [
        e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE" and e.step_key
    ]


def run(args: argparse.Namespace) -> int:
    """``custsync run``; a ``--config`` holds for this run only (the process's environment
    is restored after, so a caller running several configs in-process is not surprised)."""
    saved = os.environ.get("CUSTSYNC_CONFIG")
    try:
        return _run(args)
    finally:
        if saved is None:
            os.environ.pop("CUSTSYNC_CONFIG", None)
        else:
            os.environ["CUSTSYNC_CONFIG"] = saved


def _run(args: argparse.Namespace) -> int:
    from custsync_pipeline.config import load_sync_config
    from custsync_pipeline.definitions import defs
    from custsync_pipeline.defs.automation.definitions import only_lanes_failed

    if getattr(args, "config", None):  # the definitions read it from the environment too
        os.environ["CUSTSYNC_CONFIG"] = str(args.config)
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
    with ExitStack() as stack:
        owner = _hold_state_lease(stack, cfg)
        if owner is None:
            return 2
        tags = {LEASE_OWNER_TAG: owner}
        return _run_jobs(definitions, instance, run_config, tags, cfg, only_lanes_failed)


def _hold_state_lease(stack: ExitStack, cfg: SyncConfig) -> str | None:
    """Take the state lease for the whole command (waiting up to ``runs.lease_wait_s``
    for another sync to finish); the owner name, or None with a message on stderr."""
    import sqlalchemy as sa

    from custsync_pipeline.store import lease
    from custsync_pipeline.store.db import StateDB, one_line_error, shown_url

    try:
        engine = StateDB(cfg.state_db_url).create_all().engine
    except (sa.exc.DBAPIError, sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        # a PostgreSQL database must exist (custsync makes its tables, not the database)
        try:
            password = sa.engine.make_url(cfg.state_db_url).password
        except sa.exc.ArgumentError:
            password = None
        reason = one_line_error(exc, password)
        print(
            f"custsync run: cannot open the state DB {shown_url(cfg.state_db_url)}: {reason}; "
            "check the URL, and that the database exists (createdb) and the server runs",
            file=sys.stderr,
        )
        return None
    owner = f"custsync-run-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    ttl, wait = cfg.runs.lease_ttl_s, cfg.runs.lease_wait_s
    holder = lease.current(engine)
    if holder is not None and holder.expires_at > datetime.now(UTC):
        print(
            f"another sync holds the state lease ({holder.owner}, since "
            f"{holder.acquired_at:%H:%M:%S} UTC): waiting up to {wait} s",
            file=sys.stderr,
        )
    try:
        stack.enter_context(lease.holding(engine, owner, ttl, wait))
    except lease.LeaseHeld as exc:
        print(f"custsync run: {exc}", file=sys.stderr)
        return None
    return owner


def _run_jobs(
    definitions: dg.Definitions,
    instance: dg.DagsterInstance,
    run_config: dict,
    tags: dict[str, str],
    cfg: SyncConfig,
    only_lanes_failed: Callable[[list[str], SyncPlan], bool],
) -> int:
    results = [execute_in_code_location(definitions, "sync_job", instance, run_config, tags)]
    failed = _failed_steps(results[0])
    if only_lanes_failed(failed, cfg.plan()):
        # what the continue_after_failed_lanes sensor does under the daemon
        print(
            f"\n==> lanes failed ({', '.join(failed)}): resolving and publishing "
            "from the stored records of every lane"
        )
        results.append(
            execute_in_code_location(
                definitions, "resolve_and_publish_job", instance, run_config, tags
            )
        )
    meta: dict[str, dict[str, object]] = {}
    for result in results:
        meta.update(materialization_metadata(result))
    enabled = cfg.enabled_connectors()
    # an order feed (role: transactions) has no customer lane: its line is the transactions one
    connectors = [n for n, c in enabled.items() if c.role != "transactions"]
    targets = [t.connector for t in cfg.publish if t.connector in connectors]
    print(format_summary(meta, connectors, targets, step_failures(results)))
    tx = meta.get("transactions")
    if tx:
        print(format_transactions(tx))
    for result in results:
        state = "success" if result.success else "FAILED"
        print(f"\nrun id: {result.run_id} ({result.job_def.name}: {state})")
    ok = all(r.success for r in results) and not unsent_targets(meta, targets)
    return 0 if ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="materialize every asset once (the sync job) and print a summary"
    )
    p.add_argument(
        "--config", help="sync config file (default: $CUSTSYNC_CONFIG or the packaged one)"
    )
    p.set_defaults(func=run)
