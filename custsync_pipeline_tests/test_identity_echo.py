"""Echo safety in identity resolution: what custsync wrote to a target and reads back is
no evidence that two records are one person (DESIGN: echo safety).

Over sockets, Salesforce and Voucherify: a steward must-links two records of different
people; the merged golden record's e-mail is written to the members that held another,
and read back. When the steward removes the decision, the records are resolved by their
own word (what they held before the write) and part again — where resolution read the
written e-mail, the wrong merge would cement itself through its own writes — and the next
publish gives each target record back its own e-mail.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store.db import StateDB
from custsync_pipeline.store.identity import remove_decision, set_decision
from custsync_pipeline_tests.e2e import (
    SANDBOX_SECRETS,
    materialize_all,
    metadata_of,
    run_against_sandbox,
)

SYSTEMS = ("salesforce", "voucherify")


def _emails(sb: Sandbox) -> dict[tuple[str, str], str]:
    """(connector, target record id) -> the e-mail the sandbox holds now."""
    sf = pd.DataFrame(sb.records("salesforce"))
    vf = pd.DataFrame(sb.records("voucherify"))
    out = {("salesforce", str(i)): e for i, e in zip(sf["Id"], sf["Email"], strict=True)}
    out |= {("voucherify", str(i)): e for i, e in zip(vf["id"], vf["email"], strict=True)}
    return out


def _golden_of(engine) -> dict[tuple[str, str], str]:  # noqa: ANN001 - an Engine
    ids = pd.read_sql("select connector, source_id, golden_id from identity_map", engine)
    return {(c, s): g for c, s, g in ids.itertuples(index=False)}


def test_a_removed_wrong_link_parts_again_despite_its_own_writes(dagster_env, tmp_path: Path):
    for k, v in SANDBOX_SECRETS.items():
        dagster_env.setenv(k, v)
    with Sandbox(seed=5, people=60, base_port=0, systems=list(SYSTEMS)) as sb:
        db_url, _ = run_against_sandbox(dagster_env, tmp_path, sb.urls, enabled=set(SYSTEMS))
        with dg.DagsterInstance.ephemeral() as instance:
            assert materialize_all(instance).success
            engine = StateDB(db_url).engine
            assert materialize_all(instance).success  # reads back what the first wrote
            before = _emails(sb)
            golden = _golden_of(engine)
            ids = pd.read_sql("select connector, source_id, golden_id from identity_map", engine)
            # two people, each one Salesforce Contact and one Voucherify customer with an
            # e-mail of their own
            sf = ids[ids["connector"] == "salesforce"]
            vf = ids[ids["connector"] == "voucherify"]
            pairs = sf[~sf["golden_id"].duplicated(keep=False)].merge(
                vf[~vf["golden_id"].duplicated(keep=False)], on="golden_id", suffixes=("_sf", "_vf")
            )
            pairs = pairs[
                pairs["source_id_sf"].map(lambda s: before.get(("salesforce", s))).notna()
                & pairs["source_id_vf"].map(lambda s: before.get(("voucherify", s))).notna()
            ]
            sf_emails = pairs["source_id_sf"].map(lambda s: before[("salesforce", s)])
            pairs = pairs[~sf_emails.duplicated(keep=False)].head(2)
            assert len(pairs) == 2
            (s1, v1), (s2, v2) = pairs[["source_id_sf", "source_id_vf"]].itertuples(index=False)
            one, two = ("salesforce", s1), ("voucherify", v2)
            own = {r: before[r] for r in [one, ("voucherify", v1), ("salesforce", s2), two]}
            assert own[one] != own[("salesforce", s2)]

            # the steward's mistake: the two people are one golden record, whose e-mail
            # custsync writes to the members that held the other's
            set_decision(engine, "must_link", one, two, note="a mistake")
            assert materialize_all(instance).success
            merged = _golden_of(engine)
            assert merged[one] == merged[two]
            written = _emails(sb)
            echoed = [r for r in own if written[r] != own[r]]
            assert echoed, "the merge wrote no member another person's e-mail"
            back = materialize_all(instance)  # reads the writes back: an incremental
            assert back.success  # resolution of the records they changed, by their own word
            meta = metadata_of(back, "identity_map")
            assert meta["changed_records"] >= len(echoed), meta
            assert meta["echoed_values_ignored"] >= len(echoed), meta
            assert _golden_of(engine)[one] == _golden_of(engine)[two]

            # the steward takes it back: each record's own e-mail decides again
            assert remove_decision(engine, one, two) == 1
            result = materialize_all(instance)
            assert result.success
            parted = _golden_of(engine)
            assert parted[one] != parted[two], "the wrong link held through its own writes"
            assert parted[one] == parted[("voucherify", v1)]
            assert parted[two] == parted[("salesforce", s2)]
            assert {parted[one], parted[two]} <= set(golden.values()) | {merged[one]}
            assert metadata_of(result, "identity_map")["resolution_skipped"] is False
            # the publish gave each target record its own e-mail back
            assert materialize_all(instance).success
            now = _emails(sb)
            assert {r: now[r] for r in own} == own
            engine.dispose()
