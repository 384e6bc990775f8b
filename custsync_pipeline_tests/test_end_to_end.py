"""The whole graph against the sandbox over real sockets, on SQLite and on PostgreSQL.

Every connector of the packaged config runs; asserts what lands in the sandbox's Salesforce
and Voucherify after a publish, and
that a second run with no change in the sources publishes nothing.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store import core
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import (
    materialize_all,
    metadata_of,
    postgres_instance,
    write_sync_config,
)

TARGETS = ("salesforce", "voucherify")


@pytest.fixture
def sandbox():
    with Sandbox(seed=11, people=120, base_port=0) as sb:
        yield sb


def _configure(dagster_env, tmp_path: Path, sandbox: Sandbox, state_db_url: str) -> None:
    # the packaged config as it is: every connector's lane, against the sandbox
    cfg = write_sync_config(tmp_path / "sync.yaml", sandbox.urls, state_db_url)
    dagster_env.setenv("CUSTSYNC_CONFIG", str(cfg))


def _run_twice_and_check(sandbox: Sandbox, instance: dg.DagsterInstance, state_db_url: str) -> None:
    first = materialize_all(instance)
    assert first.success
    for name in ("salesforce", "voucherify", "voyado", "exact", "icomm", "katana"):
        assert metadata_of(first, f"{name}/customers")["dagster/row_count"] > 0, name
    golden = metadata_of(first, "golden_customers")
    assert golden["dagster/row_count"] > 0
    published = {t: metadata_of(first, f"{t}/published") for t in TARGETS}
    for t in TARGETS:
        assert published[t]["published"] > 0, (t, published[t])

    engine = StateDB(state_db_url).engine
    golden_df = core.load_golden_records(engine).set_index("golden_id")
    # what Salesforce would refuse (no last name) or cannot hold as a Contact (a company)
    # is held back, not sent to be dead-lettered
    for t in TARGETS:
        assert core.load_outbox(engine, t, ["dead"]).empty, t
        assert published[t]["dead_lettered"] == 0, t
    sf_deltas = metadata_of(first, "salesforce/outbound_deltas")
    not_person = int((golden_df["kind"] != "person").sum())
    no_last_name = int(((golden_df["kind"] == "person") & golden_df["last_name"].isna()).sum())
    assert sf_deltas["held_back_kind_not_taken"] == not_person
    assert sf_deltas["held_back_missing_last_name"] == no_last_name
    assert sf_deltas["held_back"] == not_person + no_last_name > 0
    n_golden = len(golden_df)
    with engine.connect() as conn:
        id_map = pd.DataFrame(
            conn.execute(
                sa.text("select connector, source_id, golden_id from identity_map")
            ).fetchall()
        )

    # Voucherify: every golden person has a customer there now (a member or one we created)
    vc = pd.DataFrame(sandbox.records("voucherify"))
    created = vc[vc["source_id"].isin(golden_df.index)]
    members = set(id_map.loc[id_map["connector"] == "voucherify", "golden_id"])
    assert len(created) > 0
    people = set(golden_df.index[golden_df["kind"] == "person"])
    assert set(created["source_id"]) | members >= people
    # what we created carries the golden values
    sample = created.iloc[0]
    assert sample["email"] == golden_df.loc[sample["source_id"], "email"]

    # Salesforce: golden records without a Contact were created, keyed by Custsync_Id__c
    sf = pd.DataFrame(sandbox.records("salesforce"))
    sf_created = sf[sf["Custsync_Id__c"].isin(golden_df.index)]
    assert len(sf_created) > 0
    row = sf_created.iloc[0]
    g = golden_df.loc[row["Custsync_Id__c"]]
    assert row["LastName"] == g["last_name"]

    # second run, nothing changed at the sources: nothing is published
    second = materialize_all(instance)
    assert second.success
    for t in TARGETS:
        assert metadata_of(second, f"{t}/outbound_deltas")["dagster/row_count"] == 0, t
        assert metadata_of(second, f"{t}/published")["published"] == 0, t
    # and the golden ids did not move
    golden_again = core.load_golden_records(engine)
    assert len(golden_again) == n_golden
    engine.dispose()


def test_end_to_end_sqlite(sandbox, dagster_env, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    _configure(dagster_env, tmp_path, sandbox, url)
    with dg.DagsterInstance.ephemeral() as instance:
        _run_twice_and_check(sandbox, instance, url)


def test_end_to_end_postgres(sandbox, dagster_env, tmp_path, pg_url) -> None:
    """State DB and Dagster instance both on PostgreSQL, the instance from the repo's dagster.yaml."""
    _configure(dagster_env, tmp_path, sandbox, pg_url)
    with postgres_instance(dagster_env, tmp_path, pg_url) as instance:
        _run_twice_and_check(sandbox, instance, pg_url)
        assert len(instance.get_runs()) == 2
