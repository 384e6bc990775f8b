"""The soak harness (issue 10 item 6): cycles of random edits, deletes and inserts in every
sandbox system, 10% injected faults, one target outage (Voucherify goes down after its
extraction, so its publish meets it) and one ``custsync run`` killed with SIGKILL
mid-publish; after every cycle, the sync invariants are checked against the
sandbox's real state and the state DB:

1. **one record per golden record**: no golden record has two records custsync created in
   a target (stamped with its golden id), nor a created one beside a record it already had;
   every live golden record a target takes has a record there (unless the target deleted it,
   or the cycle's writes to it failed and wait in the outbox);
2. **deletes**: no customer gone from the source of truth for the grace period is still in a
   target whose ``delete_mode`` is ``delete`` (once its delete was acknowledged or the cycle
   succeeded);
3. **no drift** on the fields custsync sends, for every record whose last write was
   acknowledged (read back through the connector, compared with the golden record);
4. **golden ids**: no record changed golden id without a recorded merge or split.

Used by ``test_soak.py`` (20 cycles, small) and ``benchmarks/soak.py`` (200 cycles).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd
import yaml

from custsync_pipeline.config import load_sync_config
from custsync_pipeline.connectors import build_connector
from custsync_pipeline.defs.publish.assets import compared_fields
from custsync_pipeline.domain.conflicts import accept_target_values
from custsync_pipeline.domain.deltas import compute_deltas, hold_back
from custsync_pipeline.sandbox import CREDENTIALS
from custsync_pipeline.sandbox.server import SERVED_SYSTEMS, Sandbox
from custsync_pipeline.store import core, presence
from custsync_pipeline.store.conflicts import load_field_conflicts
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import SANDBOX_SECRETS, materialize_all, write_sync_config

# every sandbox system is a source the soak edits; the targets are the packaged config's
SYSTEMS = SERVED_SYSTEMS
OUTAGE_CREATES = 6  # Contacts added in the outage cycle: creates Voucherify cannot take
TARGET_ID_FIELD = {
    "salesforce": "Custsync_Id__c",
    "voucherify": "source_id",
    "voyado": "custsyncId",
}


@dataclass
class SoakFigures:
    cycles: int = 0
    failed_runs: int = 0
    edits: int = 0
    deletes: int = 0
    inserts: int = 0
    seconds: float = 0.0
    golden_min: int = 10**9
    golden_max: int = 0
    writes_acked: int = 0
    outage_queued: int = 0  # Voucherify writes left queued by the outage cycle
    deleted_in_targets: int = 0
    violations: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.cycles} cycles in {self.seconds:.0f} s ({self.seconds / max(self.cycles, 1):.1f} s "
            f"a cycle): {self.edits} edits, {self.deletes} deletes, {self.inserts} inserts at "
            f"the sources; {self.failed_runs} runs failed (faults, outage, kill); the outage "
            f"left {self.outage_queued} Voucherify writes queued; golden records "
            f"{self.golden_min}..{self.golden_max}; {self.writes_acked} writes acknowledged; "
            f"{len(self.violations)} invariant violations"
        )


def _id_map(engine) -> pd.DataFrame:  # noqa: ANN001
    return pd.read_sql("select connector, source_id, golden_id from identity_map", engine)


def _check(
    sb: Sandbox,
    engine,  # noqa: ANN001
    cfg_path: Path,
    before: pd.DataFrame | None,
    cycle: int,
    run_ok: bool,
) -> list[str]:
    cfg = load_sync_config(cfg_path)
    plan = cfg.plan()
    bad: list[str] = []
    golden = core.load_golden_records(engine)
    ids = _id_map(engine)

    # 4. golden ids move only through a recorded merge or split
    if before is not None:
        moved = before.merge(ids, on=["connector", "source_id"], suffixes=("_old", "_new"))
        moved = moved[moved["golden_id_old"] != moved["golden_id_new"]]
        if len(moved):
            gids = pd.read_sql("select golden_id, merged_into, split_from from golden_ids", engine)
            merged = dict(zip(gids["golden_id"], gids["merged_into"], strict=True))
            split = dict(zip(gids["golden_id"], gids["split_from"], strict=True))
            for old, new in zip(moved["golden_id_old"], moved["golden_id_new"], strict=True):
                if merged.get(old) != new and split.get(new) != old and merged.get(new) != old:
                    bad.append(f"cycle {cycle}: a record moved {old} -> {new} with no merge/split")

    gone_src = presence.gone_runs(engine, presence.SOURCE_PREFIX + plan.source)
    due = set(gone_src.index[gone_src >= plan.delete_grace_runs])
    for target in plan.publish:
        name = target.connector
        recs = pd.DataFrame(sb.records(name))
        stamp = TARGET_ID_FIELD[name]
        stamped = recs[stamp].dropna() if stamp in recs else pd.Series(dtype=object)
        stamped = stamped[stamped.astype(str).str.startswith("G")]
        # 1. one record per golden record
        dup = stamped[stamped.duplicated()]
        if len(dup):
            bad.append(f"cycle {cycle}: {name} holds {len(dup)} second created records")
        members = ids[ids["connector"] == name]
        box = core.load_outbox(engine, name)
        waiting = set(box.loc[box["status"].isin(["pending", "failed", "dead"]), "golden_id"])
        takes, _ = hold_back(golden, target.kinds, target.required_fields)
        gone_there = set(presence.gone_runs(engine, name).index)
        held = set(members["golden_id"]) | set(stamped)
        missing = set(takes["golden_id"]) - held - gone_there - waiting - due
        missing -= set(gone_src.index)  # pending deletes are not created
        # a record custsync created that the soak's random deletes removed there before it
        # was ever read back: deleted in that system, never created there again
        ids_there = set(recs.get("Id", recs.get("id", pd.Series(dtype=object))).astype(str))
        made = box[(box["status"] == "acked") & box["entity_key"].str.startswith("new:")]
        missing -= set(made.loc[~made["target_id"].astype(str).isin(ids_there), "golden_id"])
        conn_cfg = cfg.connectors[name]
        if conn_cfg.type == "voyado":  # the whole listing, no point balances: custsync
            # sends none, and per-contact requests would make the check the slow part
            options = {**conn_cfg.options, "read_mode": "listing", "points": False}
            conn_cfg = conn_cfg.model_copy(update={"options": options})
        connector = build_connector(name, conn_cfg, os.environ)
        canon = connector.to_canonical(connector.read().records)
        if target.key_field and missing:
            # a target keyed by a value (Voyado's e-mail) never gets a second record with a
            # value another of its records holds, nor two creates that share one: held now,
            # or as this cycle's deltas saw it (a record that handed its value on in this
            # cycle's publish frees it for a create in the next)
            key = target.key_field

            def folded(values: pd.Series) -> pd.Series:
                return values.astype("string").str.strip().str.casefold()

            value = folded(takes.set_index("golden_id")[key])
            seen = core.load_source_records(engine, [name], columns=["source_id", key])
            held_values = set(folded(canon[key]).dropna()) | set(folded(seen[key]).dropna())
            blocked = value[
                value.isin(held_values) | (value.notna() & value.duplicated(keep=False))
            ]
            missing -= set(blocked.index)
        if run_ok and missing:
            bad.append(
                f"cycle {cycle}: {name} lacks {len(missing)} golden records it takes "
                f"({sorted(missing)[:3]})"
            )
        # 2. deletes past the grace period are gone (delete mode)
        if target.delete_mode == "delete" and run_ok:
            still = due & set(stamped) - waiting
            if still:
                bad.append(f"cycle {cycle}: {name} still holds {len(still)} deleted customers")
        # 3. no drift on sent fields where the last write was acknowledged
        if run_ok:
            canon = canon.merge(ids, on=["connector", "source_id"])
            ok = box[box["status"] == "acked"]
            acked = set(ok["golden_id"])
            written = set(ok["target_id"].dropna().astype(str))
            # as the publisher compares: the fields the object carries, an empty value as
            # the target holds it, and fields under review (an opt-out custsync did not
            # write) left as the target holds them
            carries = getattr(connector, "carries", None)
            sent = [f for f in target.fields if carries is None or carries(f)]
            fields = compared_fields(sent, list(target.aspects))
            write_object = getattr(connector, "write_object", None)
            takes_live = takes[takes["golden_id"].isin(acked) & ~takes["golden_id"].isin(due)]
            kept = load_field_conflicts(engine, name)
            drift = compute_deltas(
                takes_live,
                accept_target_values(
                    canon[canon["source_id"].astype(str).isin(written)], takes_live, kept
                ),
                fields,
                pd.DataFrame(columns=["entity_key", "acked_hash"]),
                writable_types=[write_object] if write_object else None,
                empty_reads_as=getattr(connector, "empty_reads_as", None),
            )
            drift = drift[drift["target_id"].notna()]
            if len(drift):
                first = drift.iloc[0]
                have = canon[canon["source_id"].astype(str) == str(first["target_id"])].iloc[0]
                want = golden.set_index("golden_id").loc[first["golden_id"]]
                fields_off = [
                    f for f in fields if pd.notna(want[f]) and str(want[f]) != str(have[f])
                ]
                bad.append(f"cycle {cycle}: {name} first drift on {fields_off}")
                bad.append(
                    f"cycle {cycle}: {name} drifted on {len(drift)} acknowledged records "
                    f"({drift['target_id'].head(3).tolist()})"
                )
    return bad


def _kill_mid_publish(cfg: Path, env: dict[str, str], sb: Sandbox, log: Path) -> None:
    """``custsync run`` in a subprocess, SIGKILLed once Voucherify took a few writes."""
    before = len(sb.records("voucherify"))
    sb.set_faults("voucherify", slow_rate=1.0, slow_seconds=0.1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "custsync_pipeline.cli", "run", "--config", str(cfg)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if len(sb.records("voucherify")) > before:
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        sb.set_faults("voucherify", slow_rate=0.0)


def run_soak(
    workdir: Path,
    cycles: int = 20,
    people: int = 40,
    seed: int = 7,
    fault_rate: float = 0.10,
    outage_cycle: int = 5,
    kill_cycle: int = 9,
    progress=None,  # noqa: ANN001 - callable(str) or None
) -> SoakFigures:
    """Run the soak; return its figures (``violations`` lists every broken invariant)."""
    for k in CREDENTIALS:
        os.environ.pop(k, None)
    rng = random.Random(seed)
    figures = SoakFigures()
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with Sandbox(seed=seed, people=people, base_port=0, systems=list(SYSTEMS)) as sb:
        db_url = f"sqlite:///{workdir / 'state.sqlite'}"
        cfg = write_sync_config(workdir / "sync.yaml", sb.urls, db_url, enabled=set(SYSTEMS))
        data = yaml.safe_load(cfg.read_text())
        for t in data["publish"]:
            if t["connector"] == "voucherify":
                t["delete_mode"] = "delete"
        data["deletes"] = {"grace_runs": 2}
        # an outage or an injected fault costs milliseconds, not seconds, of backoff: the
        # soak tests what a retry does, not how long it waits
        quick = {
            "backoff_max_s": 1.0,
            "backoff_factor_s": 0.02,
            "backoff_jitter_s": 0.02,
            "retry_after_max_s": 0.1,
        }
        for c in SYSTEMS:
            opts = data["connectors"][c].setdefault("options", {}) or {}
            opts["http"] = {**(opts.get("http") or {}), **quick}
            data["connectors"][c]["options"] = opts
        data["runs"] = {"lease_ttl_s": 5, "lease_wait_s": 60, "extract_retry_delay_s": 0.1}
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        env_keep = {k: os.environ.get(k) for k in ("CUSTSYNC_CONFIG", "CUSTSYNC_STATE_DB_URL")}
        os.environ.update(SANDBOX_SECRETS)
        os.environ["CUSTSYNC_CONFIG"] = str(cfg)
        os.environ["CUSTSYNC_STATE_DB_URL"] = db_url
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        env.pop("DAGSTER_HOME", None)
        engine = None
        before = None
        try:
            with dg.DagsterInstance.ephemeral() as instance:
                for cycle in range(1, cycles + 1):
                    if cycle > 1:  # random edits, deletes and inserts in every system
                        for system in SYSTEMS:
                            e, d, a = rng.randint(0, 3), rng.randint(0, 1), rng.randint(0, 2)
                            sb.changes(system, edit=e, delete=d, add=a, seed=rng.randint(0, 10**6))
                            figures.edits += e
                            figures.deletes += d
                            figures.inserts += a
                    half = fault_rate / 2
                    for system in SYSTEMS:
                        sb.set_faults(
                            system, rate_429=half, rate_5xx=half, seed=rng.randint(0, 10**6)
                        )
                    if cycle == outage_cycle:
                        # Voucherify goes down mid-run: its extraction is answered, then
                        # every request fails (503) through the publish of new customers
                        sb.changes("salesforce", add=OUTAGE_CREATES, seed=cycle)
                        figures.inserts += OUTAGE_CREATES
                        pages = 1 + len(sb.records("voucherify")) // 100
                        sb.set_faults("voucherify", rate_5xx=0.0, rate_429=0.0, fail_after=pages)
                    if cycle == kill_cycle:
                        sb.changes("salesforce", add=12, seed=cycle)
                        figures.inserts += 12
                        _kill_mid_publish(cfg, env, sb, workdir / f"killed_{cycle}.log")
                        figures.failed_runs += 1
                    t_run = time.time()
                    result = materialize_all(instance, raise_on_error=False)
                    t_run = time.time() - t_run
                    run_ok = result.success
                    if not run_ok:
                        figures.failed_runs += 1
                    # faults off to look at the sandbox as it is
                    for system in SYSTEMS:
                        sb.set_faults(system, rate_429=0.0, rate_5xx=0.0, fail_after=-1)
                    if engine is None:
                        engine = StateDB(db_url).engine
                    if cycle == outage_cycle:
                        box = core.load_outbox(engine, "voucherify", statuses=core.QUEUED)
                        figures.outage_queued = len(box)
                    t_check = time.time()
                    bad = _check(sb, engine, cfg, before, cycle, run_ok)
                    t_check = time.time() - t_check
                    figures.violations += bad
                    before = _id_map(engine)
                    n = len(core.load_golden_records(engine))
                    figures.golden_min = min(figures.golden_min, n)
                    figures.golden_max = max(figures.golden_max, n)
                    figures.cycles = cycle
                    if progress:
                        progress(
                            f"cycle {cycle}: run {'ok' if run_ok else 'FAILED'} ({t_run:.1f} s, check "
                            f"{t_check:.1f} s), {n} golden, {bad or 'invariants hold'}"
                        )
            for name in TARGET_ID_FIELD:
                box = core.load_outbox(engine, name)
                figures.writes_acked += int((box["status"] == "acked").sum())
        finally:
            for k, v in env_keep.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            if engine is not None:
                engine.dispose()
    figures.seconds = time.time() - start
    return figures
