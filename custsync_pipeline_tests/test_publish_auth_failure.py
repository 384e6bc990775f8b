"""A target credential the target refuses (HTTP 401/403) strands nothing: a real sync
against the sandbox over real sockets.

Run 1: Voyado's API key is wrong. Every delta to Voyado is a verdict on the key, not on
its payload: none is dead-lettered, the publish stops at the first batch refused whole
(the probe's 20 writes) instead of sending every delta against it, and its step fails once, naming the target and the
status (never the key). Run 2: the key is fixed; the deltas are sent and acknowledged,
and the sandbox holds the contacts created.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml

from custsync_pipeline import cli_run
from custsync_pipeline.connectors.http import auth_failure_status
from custsync_pipeline.defs.publish.assets import PUBLISH_PROBE, publish_chunks
from custsync_pipeline.sandbox.server import CREDENTIALS, Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import write_sync_config

WRONG = "WrongSecretXYZ"
# the sandbox accepts VOYADO_API_KEY's value: the connector reads its key from another
# variable, so the two can differ in one process
KEY_VAR = "CUSTSYNC_TEST_VOYADO_KEY"


def _wrong_key_env(env, tmp_path: Path) -> tuple[str, Path]:  # noqa: ANN001 - a monkeypatch
    """A state DB, a config path and Voyado's key wrong, set in ``env``: (DB URL, config)."""
    db_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    env.setenv("CUSTSYNC_STATE_DB_URL", db_url)
    cfg = tmp_path / "sync.yaml"
    env.setenv("CUSTSYNC_CONFIG", str(cfg))
    env.setenv(KEY_VAR, WRONG)
    return db_url, cfg


def _config(path: Path, sb: Sandbox, db_url: str) -> None:
    write_sync_config(path, sb.urls, db_url, enabled={"salesforce", "voyado"})
    data = yaml.safe_load(path.read_text())
    data["connectors"]["voyado"]["credentials"] = {"api_key": KEY_VAR}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_refused_credential_dead_letters_nothing_and_a_fixed_one_sends_the_deltas(
    dagster_env, tmp_path, capsys
) -> None:
    db_url, cfg = _wrong_key_env(dagster_env, tmp_path)
    with Sandbox(seed=5, people=40, base_port=0) as sb:
        _config(cfg, sb, db_url)
        assert cli_run.run(argparse.Namespace(config=None)) == 1
        out = capsys.readouterr().out
        assert WRONG not in out

        engine = StateDB(db_url).engine
        box = core.load_outbox(engine, "voyado")
        queued = box[box["status"].isin(core.QUEUED)]
        assert len(queued) > 1
        # a refused key is no verdict on any payload: nothing dead, everything still queued
        assert not (box["status"] == "dead").any(), box["status"].value_counts()
        assert len(queued) == len(box)
        # the publish stopped at the first batch refused whole: the lone first write and
        # the rest of the probe (one refusal alone could be that record's), no more
        sent = box[box["attempts"] > 0]
        assert len(sent) == min(PUBLISH_PROBE, len(box)) < len(box)
        assert (sent["status"] == "failed").all()
        assert (sent["last_error"].map(auth_failure_status) == 401).all()
        assert (box.loc[box["attempts"] == 0, "status"] == "pending").all()
        # one failure of the publish step, naming the target and the status
        lines = [x for x in out.splitlines() if x.startswith("  voyado: voyado__published")]
        assert len(lines) == 1, out
        assert "not authorized (HTTP 401)" in lines[0]
        assert lines[0].count("HTTP 401") <= 2  # the reason and the error it quotes, once
        assert f"{len(box)} deltas left queued, not dead-lettered" in lines[0]
        # the other target was not held up by Voyado's key
        assert not any(
            x.startswith("  salesforce: salesforce__published") for x in out.splitlines()
        )

        # the key is fixed: the next run sends what was queued
        dagster_env.setenv(KEY_VAR, CREDENTIALS["VOYADO_API_KEY"])
        cli_run.run(argparse.Namespace(config=None))
        out = capsys.readouterr().out
        assert not any(x.startswith("  voyado: voyado__published") for x in out.splitlines()), out

        box = core.load_outbox(engine, "voyado")
        engine.dispose()
        assert not (box["status"] == "dead").any(), box["status"].value_counts()
        assert not box["status"].isin(core.QUEUED).any(), box["status"].value_counts()
        acked = box[box["status"] == "acked"]
        assert len(acked) > 0
        # the sandbox holds the contacts custsync created for the deltas run 1 left queued
        created = acked.loc[acked["entity_key"].str.startswith("new:"), "golden_id"]
        assert len(created) > 0
        contacts = pd.DataFrame(sb.records("voyado"))
        assert set(created) <= set(contacts["custsyncId"].dropna())
        assert set(created) <= set(queued["golden_id"])


def test_a_refused_credential_is_told_from_a_refused_payload() -> None:
    """401/403 (a request's or the OAuth2 token fetch's) are the credential; 400, 404 and
    422 are verdicts on the payload, dead-lettered as before."""
    assert auth_failure_status("[voyado] POST http://h/api -> HTTP 401: Missing apikey") == 401
    assert auth_failure_status("[salesforce] token endpoint http://h/t -> HTTP 403: no") == 403
    for status in (400, 404, 422):
        assert auth_failure_status(f"[katana] POST http://h/x -> HTTP {status}: bad") is None
    assert auth_failure_status(None) is None
    assert auth_failure_status("REQUIRED_FIELD_MISSING: LastName") is None
    # the first write of a publish goes alone: a refused credential costs one write
    assert publish_chunks(389)[0] == (0, 1)
    assert publish_chunks(1) == [(0, 1)]


def test_rows_dead_lettered_for_a_refused_credential_are_sent_once_it_works(
    dagster_env, tmp_path, capsys
) -> None:
    """What publishes before the fix left behind: every delta of a run with a wrong key
    ``dead`` with its 401. Those are no verdict on their payloads: once the key works the
    next run queues and sends them; a payload the API refused (422) stays dead."""
    db_url, cfg = _wrong_key_env(dagster_env, tmp_path)
    with Sandbox(seed=5, people=40, base_port=0) as sb:
        _config(cfg, sb, db_url)
        cli_run.run(argparse.Namespace(config=None))
        capsys.readouterr()
        engine = StateDB(db_url).engine
        box = core.load_outbox(engine, "voyado")
        assert len(box) > 1
        # the state an earlier publish left: every row dead with the 401, one with a 422
        url = f"{sb.urls['voyado']}/api/v3/contacts/bulk?source=***"
        stranded = f"[voyado] POST {url} -> HTTP 401: Missing or invalid apikey header"
        refused_key = box["entity_key"].iloc[0]
        with engine.begin() as conn:
            conn.execute(
                core.outbox.update()
                .where(core.outbox.c.target == "voyado")
                .values(status="dead", attempts=1, last_error=stranded)
            )
            conn.execute(
                core.outbox.update()
                .where(core.outbox.c.target == "voyado", core.outbox.c.entity_key == refused_key)
                .values(last_error=f"[voyado] POST {url} -> HTTP 422: InvalidEmail")
            )

        dagster_env.setenv(KEY_VAR, CREDENTIALS["VOYADO_API_KEY"])
        cli_run.run(argparse.Namespace(config=None))
        capsys.readouterr()
        after = core.load_outbox(engine, "voyado").set_index("entity_key")
        engine.dispose()
    still_dead = after.index[after["status"] == "dead"].tolist()
    assert still_dead == [refused_key]
    assert not after["status"].isin(core.QUEUED).any(), after["status"].value_counts()
    healed = after.loc[after.index.isin(box["entity_key"]) & (after.index != refused_key)]
    assert (healed["status"].isin(["acked", "superseded"])).all()
    assert (healed["status"] == "acked").sum() > 0


def test_a_record_the_key_may_not_touch_is_dead_lettered_and_blocks_nothing(
    dagster_env, tmp_path, capsys
) -> None:
    """A 403 beside writes the target takes is about that record (Voucherify refuses
    customers the key may not modify): a verdict, dead-lettered; the publish goes on and
    the next run does not stop at it (a refusal taken for the credential would stop every
    publish at the same first row, run after run)."""
    db_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    dagster_env.setenv("CUSTSYNC_STATE_DB_URL", db_url)
    with Sandbox(seed=5, people=40, base_port=0) as sb:
        cfg = write_sync_config(
            tmp_path / "sync.yaml", sb.urls, db_url, enabled={"salesforce", "voucherify"}
        )
        dagster_env.setenv("CUSTSYNC_CONFIG", str(cfg))
        held = sorted(r["id"] for r in sb.records("voucherify"))
        sb.set_faults("voucherify", forbid=held[::2])  # every other customer held there
        first = cli_run.run(argparse.Namespace(config=None))
        out = capsys.readouterr().out
        second = cli_run.run(argparse.Namespace(config=None))
        again = capsys.readouterr().out
        acked = sb.records("voucherify")
    engine = StateDB(db_url).engine
    rows = core.load_outbox(engine, "voucherify")
    forbidden = rows["target_id"].isin(held[::2])
    assert first == 1 and "not authorized" not in out  # failed writes named, no stop
    assert (rows.loc[forbidden, "status"] == "dead").all() and forbidden.any()
    assert rows.loc[forbidden, "last_error"].str.contains("HTTP 403").all()
    assert (rows.loc[~forbidden, "status"] == "acked").all() and (~forbidden).sum() > 0
    assert not rows["status"].isin(["pending", "failed"]).any()  # nothing left behind
    assert len(acked) > len(held)  # creates went through beside the refusals
    assert second == 0 and "not authorized" not in again  # the dead rows are not re-sent


def test_a_refused_credential_holds_the_orders_back_after_one_request(
    dagster_env, tmp_path, capsys
) -> None:
    """Transactions: Voyado's key turns wrong after its contacts exist. The receipts of new
    orders are sent once it is right again; meanwhile each run's first receipt finds the key
    refused, none is counted failed, and the transactions step names Voyado and the status."""
    from custsync_pipeline.sandbox.transactions import voyado_receipts
    from custsync_pipeline.store.transactions import load_ledger

    db_url, cfg = _wrong_key_env(dagster_env, tmp_path)
    dagster_env.setenv(KEY_VAR, CREDENTIALS["VOYADO_API_KEY"])
    with Sandbox(seed=5, people=40, base_port=0) as sb:
        write_sync_config(cfg, sb.urls, db_url, enabled={"salesforce", "voyado", "shop"})
        data = yaml.safe_load(cfg.read_text())
        data["connectors"]["voyado"]["credentials"] = {"api_key": KEY_VAR}
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        assert cli_run.run(argparse.Namespace(config=None)) == 0
        capsys.readouterr()
        engine = StateDB(db_url).engine
        sent_before = load_ledger(engine, "voyado")
        # five Voyado contacts with an e-mail of their own buy something
        contacts = pd.DataFrame(sb.records("voyado"))
        emails = contacts["email"].dropna()
        emails = emails[~emails.duplicated(keep=False)].head(5)
        shop = sb.emulators["shop"]
        for i, email in enumerate(emails):
            shop.add_order({"email": email}, order_id=f"SN-KEY-{i}")
        receipts_before = len(voyado_receipts(sb.emulators["voyado"]).by_id)

        dagster_env.setenv(KEY_VAR, WRONG)
        for _ in range(2):
            assert cli_run.run(argparse.Namespace(config=None)) == 1
            out = capsys.readouterr().out
            assert WRONG not in out
            lines = [x for x in out.splitlines() if "transactions" in x and "voyado" in x]
            assert any("not authorized (HTTP 401)" in x for x in lines), out
            ledger = load_ledger(engine, "voyado")
            assert not (ledger["status"] == "failed").any()  # no receipt is at fault
            assert len(ledger) == len(sent_before)
        assert len(voyado_receipts(sb.emulators["voyado"]).by_id) == receipts_before

        dagster_env.setenv(KEY_VAR, CREDENTIALS["VOYADO_API_KEY"])
        assert cli_run.run(argparse.Namespace(config=None)) == 0
        ledger = load_ledger(engine, "voyado")
        engine.dispose()
        new = ledger[ledger["transaction_id"].str.contains("SN-KEY-")]
        assert len(new) == len(emails) and (new["status"] == "sent").all()
        receipts = voyado_receipts(sb.emulators["voyado"]).by_id
        assert {f"shop:SN-KEY-{i}" for i in range(len(emails))} <= set(receipts)
