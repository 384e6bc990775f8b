"""The Dagster UI in a real browser: Debian's ``chromium`` driven by Playwright.

A demo instance (a temporary ``DAGSTER_HOME`` with the demo's ``dagster.yaml``, every asset
materialized once against the sandbox) is served by ``dagster-webserver`` with
``dagster-daemon`` beside it (backfills are launched by the daemon). The test opens the
lineage, the catalog, the golden asset and its checks, a lane's checks and the automation
page, and asserts that every asset, the checks, schedules and sensors of the definitions
are listed; then it launches a two-day backfill of ``voucherify/changes`` from the asset's
*Materialize…* dialog and waits on the backfill's page until it succeeded; the pulled
window is checked against the sandbox's own records.

Screenshots are saved under ``test-artifacts/ui/`` (gitignored; README "Tests"). The
browser is ``$CUSTSYNC_CHROMIUM`` or ``/usr/bin/chromium``, installed by
``scripts/test.sh`` (``scripts/ensure-chromium.sh``) when absent: Playwright never
downloads one. Deselect with ``-m "not browser"``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import requests

from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline_tests.e2e import run_against_sandbox

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = os.environ.get("CUSTSYNC_CHROMIUM", "/usr/bin/chromium")
BIN = Path(sys.executable).parent
BACKFILLED = "voucherify"
SCREEN = {"width": 1600, "height": 1000}
TALL = {"width": 1600, "height": 3200}
# assets whose Checks tab is opened: one lane (extract and publish), identity, golden
SHOWN_CHECKS = (BACKFILLED, "golden_customers", "identity_map")
# the daemon picks the backfill up on its next tick and launches its run in a new process;
# on a 2-core machine busy with the rest of the suite that has taken over two minutes
BACKFILL_WAIT_S = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(cmd: list[str], home: Path, log: Path) -> subprocess.Popen:
    # its own process group: the code servers it spawns are stopped with it
    return subprocess.Popen(
        cmd,
        cwd=home,  # not the repository root: no "dagster.yaml in the current folder" warning
        env=os.environ.copy(),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def ui(tmp_path: Path, dagster_env) -> Iterator[tuple[str, Sandbox, dg.Definitions]]:
    """(webserver URL, sandbox, definitions) of a demo instance materialized once."""
    from custsync_pipeline.definitions import defs
    from custsync_pipeline_tests.e2e import materialize_all

    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"the browser test needs Debian's chromium at {CHROMIUM}: scripts/test.sh installs "
            "it (scripts/ensure-chromium.sh); or deselect the test with -m 'not browser'"
        )
    home = Path(os.environ["DAGSTER_HOME"])
    shutil.copy(ROOT / "scripts" / "demo_dagster.yaml", home / "dagster.yaml")
    with Sandbox(seed=7, people=80, base_port=0) as sb:
        run_against_sandbox(dagster_env, tmp_path, sb.urls)
        # materialized before the webserver and the daemon start: all three would create
        # the instance's SQLite tables at once ("table secondary_indexes already exists")
        with dg.DagsterInstance.get() as instance:
            assert materialize_all(instance, raise_on_error=False).success
        port = _free_port()
        workspace = str(ROOT / "workspace.yaml")
        web = _start(
            [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)],
            home,
            tmp_path / "webserver.log",
        )
        daemon = _start(
            [str(BIN / "dagster-daemon"), "run", "-w", workspace], home, tmp_path / "daemon.log"
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if requests.get(f"{url}/server_info", timeout=2).ok:
                        break
                except requests.ConnectionError:
                    pass
                assert web.poll() is None, (tmp_path / "webserver.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "dagster-webserver did not answer in 60 s"
                time.sleep(0.5)
            # the "join the Dagster community" card would cover the page on a new instance
            requests.post(f"{url}/graphql", json={"query": "mutation { setNuxSeen }"}, timeout=10)
            yield url, sb, defs()
        finally:
            _stop(web)
            _stop(daemon)


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.is_file() else "(no log)"


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _open(page, url: str, expect: str) -> None:
    page.goto(url)
    page.get_by_text(expect, exact=True).first.wait_for(timeout=30_000)


def _listed(page, texts: list[str], what: str, timeout_s: float = 30) -> str:
    """Waits until every one of ``texts`` stands alone on a line of the page (they load
    after the page does); fails naming those still missing. Returns the page's text."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = page.inner_text("body")
        missing = [t for t in texts if not re.search(rf"^{re.escape(t)}$", text, re.M)]
        if not missing:
            return text
        assert time.monotonic() < deadline, f"{what} not listed: {missing}"
        time.sleep(0.5)


def _path(key: dg.AssetKey) -> str:
    return "/".join(key.path)


def _label(key: dg.AssetKey) -> str:
    return " / ".join(key.path)  # how the UI writes a key with a prefix


def _changed_days(sb: Sandbox) -> tuple[list[str], int]:
    """Two days in a row ending on the newest past day (today has no partition yet, and
    custsync's own writes of the first run land today) with a changed record of the
    backfilled connector, and how many records changed on them (counted at the sandbox)."""
    served = pd.DataFrame(sb.records(BACKFILLED))
    when = pd.to_datetime(served["updated_at"], utc=True).dt.normalize()
    last = when[when < pd.Timestamp.now(tz="UTC").normalize()].max()
    days = [last - pd.Timedelta(days=1), last]
    return [d.strftime("%Y-%m-%d") for d in days], int(when.isin(days).sum())


def test_the_ui_lists_everything_and_backfills_two_days(ui, tmp_path: Path) -> None:
    from dagster._core.execution.backfill import BulkActionStatus
    from playwright.sync_api import sync_playwright

    from custsync_pipeline.defs.extract.changes import changes_key

    url, sb, d = ui
    graph = d.resolve_asset_graph()
    keys = sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())
    checks: dict[dg.AssetKey, list[str]] = {}
    for ck in graph.asset_check_keys:
        checks.setdefault(ck.asset_key, []).append(ck.name)
    groups = {graph.get(k).group_name for k in keys}
    days, changed = _changed_days(sb)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport=SCREEN)
        page.set_default_timeout(30_000)
        try:
            _open(page, f"{url}/asset-groups", "Global asset lineage")
            _listed(page, sorted(groups), "groups")  # a group per connector: lanes apart
            _shot(page, "01-lineage")

            page.set_viewport_size(TALL)  # the catalog renders the rows in view only
            _open(page, f"{url}/assets", "Asset name")
            _listed(page, [_label(k) for k in keys], "assets in the catalog")
            _shot(page, "02-catalog")
            page.set_viewport_size(SCREEN)

            _open(page, f"{url}/assets/golden_customers", "golden_customers")
            # the column schema, the owner (team:custsync) and the kind
            _listed(page, ["golden_id", "first_name", "entries_hash", "custsync"], "golden")
            _shot(page, "03-golden-asset")

            for key in sorted(checks, key=lambda k: k.to_user_string()):
                if key.path[0] not in SHOWN_CHECKS:
                    continue
                _open(page, f"{url}/assets/{_path(key)}?view=checks", "Checks")
                _listed(page, sorted(checks[key]), f"checks of {key.to_user_string()}")
                _shot(page, f"04-checks-{'-'.join(key.path)}")

            _open(page, f"{url}/automation", "Automation")
            names = [s.name for s in d.schedules or []] + [s.name for s in d.sensors or []]
            _listed(page, sorted(names), "schedules and sensors")
            _shot(page, "05-automation")

            # a two-day backfill of the changes windows, launched from the asset's page
            key = changes_key(BACKFILLED)
            _open(page, f"{url}/assets/{_path(key)}", "changes")
            page.get_by_role("button", name="Materialize…").click()
            dialog = page.get_by_role("dialog")
            box = page.locator("input[placeholder='No matching partitions']")
            box.fill(f"[{days[0]}...{days[1]}]")
            box.press("Enter")
            dialog.get_by_text("2 partitions", exact=True).wait_for()
            _shot(page, "06-backfill-dialog")
            dialog.get_by_role("button", name="Launch backfill").click()
            toast = page.get_by_text(re.compile(r"Created backfill \w+")).first
            toast.wait_for()
            backfill_id = toast.inner_text().split()[-1]

            deadline = time.monotonic() + BACKFILL_WAIT_S
            while True:
                _open(page, f"{url}/runs/b/{backfill_id}", "Partition selection")
                text = _listed(page, ["Status"], "the backfill's status")
                status = re.search(r"^Status\n(.+)$", text, re.M)
                state = status.group(1).strip() if status else ""
                if state == "Succeeded" and "100% completed" in text:
                    break
                assert state not in ("Failed", "Canceled", "Canceling"), text[-1500:]
                assert time.monotonic() < deadline, (
                    f"the backfill did not finish in {BACKFILL_WAIT_S} s (status {state!r}); "
                    f"the daemon's log ends:\n{_tail(tmp_path / 'daemon.log')}"
                )
                time.sleep(3)
            _shot(page, "07-backfill-succeeded")
        except BaseException:
            _shot(page, "99-failure")  # what the page showed when the test failed
            raise
        finally:
            browser.close()

    with dg.DagsterInstance.get() as instance:
        backfill = instance.get_backfill(backfill_id)
        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
        events = instance.fetch_materializations(key, limit=10).records
    parts = sorted(e.asset_materialization.partition for e in events)
    assert parts == days  # exactly those two windows, one run (the backfill policy)
    meta = events[0].asset_materialization.metadata
    assert meta["records_in_window"].value == changed  # what the sandbox changed on them
