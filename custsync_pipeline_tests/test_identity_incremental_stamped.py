"""Incremental identity after custsync has published: targets read back records that carry
custsync's stamp (the golden id it wrote), which are attached by the stamp and take no part
in resolution. The resolution still keeps its match parameters, so the next change is
resolved incrementally with them — not every record again with m and u estimated anew on
each run (what happened once a stamped record existed: a pair in review could turn into a
link with nothing changed at any source). Real sandbox over sockets, a real SQLite file."""

from __future__ import annotations

import dagster as dg

from custsync_pipeline.config import current_plan
from custsync_pipeline.defs.identity.assets import resolution_basis
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store.db import make_engine
from custsync_pipeline.store.identity import load_identity_state, load_match_params
from custsync_pipeline_tests.e2e import materialize_all, metadata_of, run_against_sandbox


def test_the_resolution_after_a_publish_keeps_its_parameters_and_goes_incremental(
    dagster_env, tmp_path
) -> None:
    with Sandbox(seed=5, people=60, base_port=0) as sb:
        db_url, _ = run_against_sandbox(dagster_env, tmp_path, sb.urls)
        with dg.DagsterInstance.ephemeral() as instance:
            first = materialize_all(instance)  # publishes: the targets hold stamped copies
            second = materialize_all(instance)  # reads them back
            engine = make_engine(db_url)
            stamped = metadata_of(second, "identity_map")["stamped_records"]
            _, _, decisions = load_identity_state(engine)
            same_basis, params, known = load_match_params(
                engine, resolution_basis(current_plan(), decisions)
            )
            sb.changes("salesforce", edit=3, seed=4)
            third = materialize_all(instance)
    assert metadata_of(first, "identity_map")["dagster/row_count"] > 0
    assert stamped > 0
    assert same_basis and params is not None and known is not None and len(known)
    resolved = metadata_of(third, "identity_map")
    assert resolved["changed_records"] > 0  # an incremental resolution, not all again
    assert 0 < resolved["resolved_records"] < resolved["dagster/row_count"]
