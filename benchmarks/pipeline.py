"""The sync job end to end through Dagster: what the user waits for, per stage.

Two sources:

- ``file``: the sandbox generator's people (six systems, messy and overlapping)
  written as one CSV export per system, read through the file connector
  (``type: file``, ``updated_field`` for incremental reads) with the packaged
  identity rules and flow; no publish targets (the issue's scenario);
- ``sandbox``: the packaged config against the sandbox APIs over real sockets
  (every connector, publishing to Salesforce and Voucherify).

For each size and state DB (SQLite file, PostgreSQL database made for the run)
a fresh child process runs ``custsync run`` three times on a fresh Dagster
instance (``$DAGSTER_HOME`` in a temporary folder):

1. **full**: the first run (empty state DB; every record new),
2. **rerun**: nothing changed,
3. **incremental**: 1% of each export's rows changed (a new city and a newer
   ``updated_at``; for the sandbox the change knob ``POST /_sandbox/changes``).

A sampler thread reads the process's CPU time and resident memory every 50 ms;
each step's window comes from the run's step stats in the Dagster instance, so
per stage the script reports wall time, CPU time and the peak resident memory
seen inside the window (the whole run's peak is ``ru_maxrss``). Stages group
the steps: ``extract`` (``<c>/raw_customers``), ``validate+store``
(``<c>/customers``, ``<c>/rejected_customers``), ``identity``, ``golden``,
``publish`` (deltas and writes), ``checks``; ``start`` is the run's wall time
outside any step (process start, definitions, the instance).

``--executor multiprocess`` runs the sync job on Dagster's multiprocess executor
(``max_concurrent`` = the cores; each step a process of its own) instead of
``custsync run``'s in-process one: the sampler then adds up every process below
the child (CPU time and resident memory of the step processes alive at each
sample, and of those that ended), so peak MB is the machine-wide sum.

Writes ``benchmarks/RESULTS.md`` (``--out``) and prints the same tables.

Usage::

    PYTHONPATH=. python benchmarks/pipeline.py --sizes 10000 100000 1000000 --db sqlite postgres
    PYTHONPATH=. python benchmarks/pipeline.py --source sandbox --sizes 10000 --db sqlite
    PYTHONPATH=. python benchmarks/pipeline.py --sizes 1000000 --db postgres --executor multiprocess

Where a stage's time goes: ``CUSTSYNC_BENCH_TIMERS=module:function,...`` adds each named
function's wall seconds and calls per run to the JSON output (``"timers"``; name a module
that others import from first, so they import the timed function), without cProfile's
overhead; ``CUSTSYNC_BENCH_PROFILE=out.prof`` runs each scenario under cProfile. E.g.::

    CUSTSYNC_BENCH_TIMERS=custsync_pipeline.store.bulk:insert_frame,\
    custsync_pipeline.domain.identity_scope:resolve_changes \
    PYTHONPATH=. python benchmarks/pipeline.py --sizes 1000000 --db sqlite

PostgreSQL comes from ``$CUSTSYNC_TEST_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``); a database is created per
run and dropped after.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECORDS_PER_PERSON = 2.45  # what the sandbox generator yields per person
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
SCENARIOS = tuple(os.environ.get("CUSTSYNC_BENCH_SCENARIOS", "full,rerun,incremental").split(","))
# CUSTSYNC_BENCH_PROFILE=out.prof: each run of the child under cProfile, written to
# out.prof.<scenario> (slower; for finding hot spots)
PROFILE = os.environ.get("CUSTSYNC_BENCH_PROFILE")
# CUSTSYNC_BENCH_TIMERS=module:function,...: the wall seconds and calls of each named
# function per run, in the JSON's "timers" (no profiler overhead: what a step spends where)
TIMERS = [t for t in os.environ.get("CUSTSYNC_BENCH_TIMERS", "").split(",") if t]
STAGES = ("start", "extract", "validate+store", "identity", "golden", "publish", "orders", "checks")


# -- data ---------------------------------------------------------------------


def build_exports(size: int, folder: Path, seed: int) -> dict[str, int]:
    """One CSV export per system (canonical column names) for about ``size`` records."""
    sys.path.insert(0, str(HERE))
    from identity_quality import to_canonical

    from custsync_pipeline.sandbox.generator import generate

    data = generate(seed=seed, people=max(1, int(size / RECORDS_PER_PERSON)))
    by_system: dict[str, list[pd.DataFrame]] = {}
    for key, raw in data.frames.items():
        frame, _ = to_canonical(key, raw)
        by_system.setdefault(key.partition(".")[0], []).append(frame)
    counts = {}
    folder.mkdir(parents=True, exist_ok=True)
    for system, frames in by_system.items():
        frame = pd.concat(frames, ignore_index=True).drop(columns=["connector"])
        frame = frame.dropna(axis=1, how="all")
        frame["is_deleted"] = frame.get("is_deleted", pd.Series(False, index=frame.index))
        frame["is_deleted"] = frame["is_deleted"].fillna(False).astype(bool)
        frame.to_csv(folder / f"{system}.csv", index=False)
        counts[system] = len(frame)
    return counts


def change_exports(folder: Path, share: float, seed: int) -> int:
    """Change ``share`` of every export's rows (city and updated_at, now); rows changed."""
    rng = np.random.default_rng(seed)
    now = pd.Timestamp.now(tz="UTC").isoformat()
    changed = 0
    for path in sorted(folder.glob("*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        pick = rng.random(len(frame)) < share
        if "city" in frame.columns:
            frame.loc[pick, "city"] = "Changedby"
        frame.loc[pick, "updated_at"] = now
        frame.to_csv(path, index=False)
        changed += int(pick.sum())
    return changed


def file_config(folder: Path, state_db_url: str) -> dict:
    """The packaged (or ``$CUSTSYNC_CONFIG``'s) identity rules and flow over one file
    connector per export."""
    from custsync_pipeline.config import DEFAULT_CONFIG_PATH

    packaged = yaml.safe_load(
        Path(os.environ.get("CUSTSYNC_CONFIG") or DEFAULT_CONFIG_PATH).read_text()
    )
    connectors = {}
    for path in sorted(folder.glob("*.csv")):
        system = path.stem
        header = path.read_text(encoding="utf-8").split("\n", 1)[0].split(",")
        mapping = {c: c for c in header if c not in ("source_id", "is_deleted")}
        connectors[system] = {
            "type": "file",
            "role": "source" if system == "salesforce" else "enrichment",
            "options": {
                "path": str(path),
                "id_field": "source_id",
                "updated_field": "updated_at",
                "created_field": "created_at",
                "deleted_field": "is_deleted",
                "mapping": mapping,
            },
        }
    steps = [s for s in packaged["flow"].get("enrichments", []) if s["connector"] in connectors]
    return {
        "state_db_url": state_db_url,
        "connectors": connectors,
        "identity": packaged["identity"],
        "flow": {
            "source": "salesforce",
            "enrichments": [{"connector": s["connector"]} for s in steps],
            "ownership": packaged["flow"].get("ownership", {}),
        },
        "publish": [],
    }


# -- measuring (child process) ------------------------------------------------


class Sampler(threading.Thread):
    """(time, process CPU seconds, resident MB) every ``every`` seconds."""

    def __init__(self, every: float = 0.05, descendants: bool = False) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.descendants = descendants  # add up the processes below this one
        self.samples: list[tuple[float, float, float]] = []
        self._halt = threading.Event()
        self._page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        self._tick_s = 1 / os.sysconf("SC_CLK_TCK")

    def sample(self) -> None:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        with open("/proc/self/statm") as fh:
            rss = int(fh.read().split()[1]) * self._page_mb
        cpu = ru.ru_utime + ru.ru_stime
        if self.descendants:
            ended = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu += ended.ru_utime + ended.ru_stime
            for pid in descendant_pids(os.getpid()):
                try:
                    with open(f"/proc/{pid}/stat") as fh:
                        fields = fh.read().rsplit(")", 1)[1].split()
                    with open(f"/proc/{pid}/statm") as fh:
                        rss += int(fh.read().split()[1]) * self._page_mb
                except (OSError, IndexError):
                    continue  # ended between the listing and the read
                # utime, stime, and the ended children it waited for (cutime, cstime): a
                # step process forked by the multiprocess executor's forkserver is its child
                cpu += sum(int(f) for f in fields[11:15]) * self._tick_s
        self.samples.append((time.time(), cpu, rss))

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            time.sleep(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()

    def window(self, start: float, end: float) -> tuple[float, float]:
        """(CPU seconds, peak resident MB) between two wall-clock times."""
        arr = np.array(self.samples)
        t = arr[:, 0]
        inside = (t >= start) & (t <= end)
        before = np.searchsorted(t, start) - 1
        after = min(np.searchsorted(t, end), len(t) - 1)
        cpu = arr[after, 1] - arr[max(before, 0), 1]
        peak = arr[inside, 2].max() if inside.any() else arr[after, 2]
        return float(cpu), float(peak)


def descendant_pids(root: int) -> list[int]:
    """Every process below ``root`` (children, theirs, ...), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                parent = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def sync_job():
    """The project's sync job, rebuilt in every step process (multiprocess executor)."""
    from custsync_pipeline.definitions import defs

    return defs().resolve_job_def("sync_job")


def run_multiprocess(config: str) -> int:
    """One run of the sync job on the multiprocess executor, a step process per core."""
    import dagster as dg

    from custsync_pipeline.definitions import multiprocess_run_config

    # read by the definitions in every step process (the forkserver keeps the environment
    # of the first run in this process: every run here uses the same config)
    os.environ["CUSTSYNC_CONFIG"] = config
    run_config = {
        **multiprocess_run_config(os.cpu_count() or 1),
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    }
    with dg.execute_job(
        dg.reconstructable(sync_job), instance=dg.DagsterInstance.get(), run_config=run_config
    ) as result:
        return 0 if result.success else 1


def stage_of(step_key: str) -> str:
    if "transaction" in step_key:  # the order sync (sandbox: every shop's and ERP's orders)
        return "orders"
    if step_key.endswith("raw_customers") or step_key.endswith("changes"):
        return "extract"
    if step_key.endswith(("__customers", "rejected_customers")) or step_key.endswith(
        "_customers_lane"
    ):
        return "validate+store"
    if "identity" in step_key or "identities" in step_key:
        return "identity"
    if "golden" in step_key:
        return "golden"
    if "deltas" in step_key or "published" in step_key or "publish" in step_key:
        return "publish"
    if "check" in step_key or "drift" in step_key or "fresh" in step_key:
        return "checks"
    return "validate+store" if step_key.endswith("customers") else "checks"


def measure_run(label: str, sampler: Sampler, run_cli) -> dict:
    import dagster as dg

    instance = dg.DagsterInstance.get()
    before = {r.run_id for r in instance.get_runs()}
    t0 = time.time()
    rc = run_cli()
    t1 = time.time()
    runs = [r for r in instance.get_runs() if r.run_id not in before]
    stages = {s: {"wall_s": 0.0, "cpu_s": 0.0, "peak_mb": 0.0} for s in STAGES}
    inside = 0.0
    steps = []
    for run in runs:
        for stat in instance.get_run_step_stats(run.run_id):
            if stat.start_time is None or stat.end_time is None:
                continue
            cpu, peak = sampler.window(stat.start_time, stat.end_time)
            wall = stat.end_time - stat.start_time
            stage = stages[stage_of(stat.step_key)]
            stage["wall_s"] += wall
            stage["cpu_s"] += cpu
            stage["peak_mb"] = max(stage["peak_mb"], peak)
            inside += wall
            steps.append((stat.step_key, round(wall, 2), round(cpu, 2), round(peak)))
    cpu_all, peak_all = sampler.window(t0, t1)
    stages["start"]["wall_s"] = max(0.0, (t1 - t0) - inside)
    stages["start"]["cpu_s"] = max(0.0, cpu_all - sum(s["cpu_s"] for s in stages.values()))
    return {
        "scenario": label,
        "rc": rc,
        "wall_s": t1 - t0,
        "cpu_s": cpu_all,
        "peak_mb": peak_all,
        "stages": stages,
        "steps": sorted(steps, key=lambda s: -s[1])[:8],
    }


def install_timers(names: list[str]) -> dict[str, list[float]]:
    """Wrap each ``module:function`` (``module:Class.method``) with a wall clock before the
    job imports it: name -> [seconds, calls], added up until reset."""
    import importlib

    totals: dict[str, list[float]] = {}
    for name in names:
        module, _, attr = name.partition(":")
        owner = importlib.import_module(module)
        *path, last = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        inner = getattr(owner, last)
        totals[name] = [0.0, 0]

        def timed(*args, _inner=inner, _slot=totals[name], **kwargs):
            t0 = time.perf_counter()
            try:
                return _inner(*args, **kwargs)
            finally:
                _slot[0] += time.perf_counter() - t0
                _slot[1] += 1

        functools.update_wrapper(timed, inner)
        setattr(owner, last, timed)
    return totals


def child(spec: dict) -> dict:
    """Run the three scenarios in this process (env already set by the parent)."""
    multiprocess = spec.get("executor") == "multiprocess"
    timers = install_timers(TIMERS)
    sampler = Sampler(every=0.2, descendants=True) if multiprocess else Sampler()
    sampler.start()
    from custsync_pipeline import cli_run

    def run_cli() -> int:
        if multiprocess:
            return run_multiprocess(spec["config"])
        with open(os.devnull, "w") as devnull:
            saved = sys.stdout
            sys.stdout = devnull
            try:
                return cli_run.run(SimpleNamespace(config=spec["config"]))
            finally:
                sys.stdout = saved

    out = []
    for scenario in SCENARIOS:
        if scenario == "incremental":
            if spec["source"] == "file":
                change_exports(Path(spec["folder"]), 0.01, seed=3)
            else:
                mutate_sandbox(spec["urls"], 0.01, spec["counts"])
        if PROFILE:
            import cProfile

            profiler = cProfile.Profile()
            out.append(measure_run(scenario, sampler, functools.partial(profiler.runcall, run_cli)))
            profiler.dump_stats(f"{PROFILE}.{scenario}")
        else:
            out.append(measure_run(scenario, sampler, run_cli))
        if timers:
            out[-1]["timers"] = {k: [round(v[0], 2), v[1]] for k, v in timers.items()}
            for v in timers.values():
                v[:] = [0.0, 0]
        if scenario == "full":
            out[-1]["table_rows"] = table_rows(os.environ["CUSTSYNC_STATE_DB_URL"])
    sampler.stop()
    return {"runs": out, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def table_rows(url: str) -> dict[str, int]:
    """Rows per state-DB table: what a run wrote (a full run writes every row once)."""
    import sqlalchemy as sa

    from custsync_pipeline.store.db import make_engine

    engine = make_engine(url)
    with engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
        counts = {
            n: int(conn.execute(sa.text(f'SELECT COUNT(*) FROM "{n}"')).scalar()) for n in names
        }
    engine.dispose()
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def mutate_sandbox(urls: dict[str, str], share: float, records: dict[str, int]) -> None:
    """Edit ``share`` of every sandbox system's records through its change knob."""
    import requests

    for system, url in urls.items():
        count = max(1, int(records.get(system, 0) * share))
        resp = requests.post(
            f"{url}/_sandbox/changes", json={"edit": count, "seed": 3}, timeout=600
        )
        resp.raise_for_status()


# -- orchestration (parent) ---------------------------------------------------


def pg_database(base_url: str) -> tuple[str, callable]:
    """A new database on the server of ``base_url``: (its URL, a function that drops it)."""
    import sqlalchemy as sa

    name = f"custsync_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(base_url).set(database=name)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.render_as_string(hide_password=False), drop


def one(
    source: str, size: int, db: str, seed: int, keep: Path | None, executor: str = "in_process"
) -> dict:
    with tempfile.TemporaryDirectory(prefix="custsync-bench-") as tmp:
        tmp_path = Path(tmp)
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        drop = None
        if db == "postgres":
            url, drop = pg_database(os.environ.get("CUSTSYNC_TEST_PG_URL", PG_DEFAULT))
        else:
            url = f"sqlite:///{tmp_path / 'state.sqlite'}"
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "CUSTSYNC_STATE_DB_URL": url,
            "CUSTSYNC_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        spec: dict = {
            "source": source,
            "people": int(size / RECORDS_PER_PERSON),
            "executor": executor,
        }
        sandbox = None
        try:
            if source == "file":
                folder = (keep or tmp_path) / f"exports-{size}-{seed}"
                fresh = tmp_path / "exports"
                if not (folder / "salesforce.csv").exists():
                    counts = build_exports(size, folder, seed)
                    (folder / "counts.json").write_text(json.dumps(counts))
                # the incremental scenario edits the files: work on a copy
                subprocess.run(["cp", "-r", str(folder), str(fresh)], check=True)
                counts = json.loads((fresh / "counts.json").read_text())
                (fresh / "counts.json").unlink()
                cfg_path = tmp_path / "bench_config.yaml"
                cfg_path.write_text(yaml.safe_dump(file_config(fresh, url)))
                spec |= {"folder": str(fresh), "config": str(cfg_path)}
                records = sum(counts.values())
            else:
                from custsync_pipeline.sandbox.server import Sandbox
                from custsync_pipeline_tests.e2e import SANDBOX_SECRETS

                sandbox = Sandbox(seed=seed, people=spec["people"], base_port=0).start()
                counts = {s: len(sandbox.records(s)) for s in sandbox.urls}
                records = sum(counts.values())
                env |= SANDBOX_SECRETS
                cfg_path = sandbox_config(sandbox, tmp_path / "bench_config.yaml", url)
                spec |= {"urls": sandbox.urls, "counts": counts, "config": str(cfg_path)}
            spec_path = tmp_path / "spec.json"
            spec_path.write_text(json.dumps(spec))
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(spec_path)],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"child failed:\n{proc.stderr[-4000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            if sandbox is not None:
                sandbox.stop()
            if drop is not None:
                drop()
    label = db if executor == "in_process" else f"{db}, {executor}"
    return {"source": source, "size": size, "records": records, "db": label, **result}


def sandbox_config(sandbox, path: Path, state_db_url: str) -> Path:
    """The packaged config pointed at a running sandbox (every connector, both targets)."""
    from custsync_pipeline_tests.e2e import write_sync_config

    return write_sync_config(path, sandbox.urls, state_db_url)


# -- report -------------------------------------------------------------------


def table(results: list[dict]) -> str:
    lines = [
        "| source | records | state DB | run | wall s | CPU s | peak MB | "
        + " | ".join(f"{s} s" for s in STAGES)
        + " |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | "
        + " | ".join("---:" for _ in STAGES)
        + " |",
    ]
    for res in results:
        for run in res["runs"]:
            stages = " | ".join(f"{run['stages'][s]['wall_s']:.1f}" for s in STAGES)
            lines.append(
                f"| {res['source']} | {res['records']:,} | {res['db']} | {run['scenario']} | "
                f"{run['wall_s']:.1f} | {run['cpu_s']:.1f} | {run['peak_mb']:,.0f} | {stages} |"
            )
    return "\n".join(lines)


def stage_detail(results: list[dict]) -> str:
    lines = [
        "| source | records | state DB | run | stage | wall s | CPU s | peak MB in stage |",
        "| --- | ---: | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for res in results:
        for run in res["runs"]:
            for name in STAGES:
                st = run["stages"][name]
                if st["wall_s"] < 0.05:
                    continue
                peak = f"{st['peak_mb']:,.0f}" if st["peak_mb"] else "-"
                lines.append(
                    f"| {res['source']} | {res['records']:,} | {res['db']} | {run['scenario']} | "
                    f"{name} | {st['wall_s']:.1f} | {st['cpu_s']:.1f} | {peak} |"
                )
    return "\n".join(lines)


def write_results(results: list[dict], out: Path, command: str) -> None:
    text = [
        "# Pipeline benchmark: the sync job end to end",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}. Each row is one "
        "`custsync run` (the sync job through Dagster on a file-backed instance, the state DB "
        "reads and writes included); `full` is the first run, `rerun` the same data again, "
        "`incremental` after 1% of the records changed. Stage columns are wall seconds; "
        "`start` is the time outside any step. Peak MB is the process's resident memory.",
        "",
        table(results),
        "",
        "## Per stage: wall, CPU and peak memory",
        "",
        stage_detail(results),
        "",
        "## Slowest steps (full run)",
        "",
    ]
    for res in results:
        full = res["runs"][0]
        steps = ", ".join(f"`{k}` {w} s" for k, w, _c, _p in full["steps"][:5])
        text.append(f"- {res['source']} {res['records']:,} {res['db']}: {steps}")
    text += [
        "",
        "## State DB rows after the full run",
        "",
        "What the first run wrote, per table (the largest ten): a bulk insert costs a few "
        "µs a row in SQLite through Python's driver, whatever the work around it.",
        "",
    ]
    for res in results:
        rows = res["runs"][0].get("table_rows") or {}
        top = ", ".join(f"`{t}` {n:,}" for t, n in list(rows.items())[:10])
        total = sum(rows.values())
        text.append(f"- {res['source']} {res['records']:,} {res['db']}: {total:,} rows: {top}")
    out.write_text("\n".join(text) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("file", "sandbox"), default="file")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--db", nargs="+", choices=("sqlite", "postgres"), default=["sqlite"])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--append", action="store_true", help="keep earlier results in --out")
    parser.add_argument("--keep", type=Path, help="keep generated exports here (reused)")
    parser.add_argument(
        "--executor",
        choices=("in_process", "multiprocess"),
        default="in_process",
        help="in_process: `custsync run`; multiprocess: a step process per core",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child.read_text()))))
        return
    store = args.out.with_suffix(".json")
    results = json.loads(store.read_text()) if args.append and store.exists() else []
    for size in args.sizes:
        for db in args.db:
            res = one(args.source, size, db, args.seed, args.keep, args.executor)
            results = [
                r
                for r in results
                if (r["source"], r["size"], r["db"]) != (res["source"], res["size"], res["db"])
            ] + [res]
            print(table([res]), flush=True)
            store.write_text(json.dumps(results, indent=1))
            write_results(results, args.out, "PYTHONPATH=. python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
