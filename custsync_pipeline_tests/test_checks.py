"""The extraction asset checks: pure measures on small frames, checks invoked directly, and blocking in a run."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from custsync_pipeline.defs.extract.checks import (
    build_duplicate_ids_check,
    build_extract_checks,
    build_freshness_check,
    build_schema_drift_check,
    build_valid_rate_check,
)
from custsync_pipeline.defs.extract.pulls import PULL_ATTR
from custsync_pipeline.defs.io import ParquetIOManager
from custsync_pipeline.defs.resources import StateDBResource
from custsync_pipeline.domain import quality
from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.domain.normalize import normalize_customers
from custsync_pipeline.domain.validate import validate_customers

NOW = pd.Timestamp("2026-06-01T00:00:00Z")


def _validated(emails: list[str | None], ids: list[str] | None = None):  # noqa: ANN202
    ids = ids or [f"c{i}" for i in range(len(emails))]
    raw = pd.DataFrame({"id": ids, "email": emails})
    frame = normalize_customers(
        conform(pd.DataFrame({"source_id": ids, "email": emails, "last_name": ["Berg"] * len(ids)}))
    )
    return raw, validate_customers(
        frame, "voyado", raw, connector_type="file", now=NOW
    )  # no id format


# ---------------------------------------------------------------- pure measures


def test_validation_metrics_numeric() -> None:
    _, res = _validated(["a@x.se", "bad", "c@x.se", "d@x.se"], ids=["a", "b", "a", ""])
    m = quality.validation_metrics(res)
    assert m["received"] == 4 and m["valid"] == 2 and m["rejected_records"] == 2
    assert (
        m["check/email_syntax"] == 1
        and m["check/unique_source_id"] == 1
        and m["check/not_null"] == 1
    )
    assert m["valid_rate"] == 0.5
    assert all(isinstance(v, int | float) for v in m.values())


def test_schema_drift_measure() -> None:
    assert quality.schema_drift(None, ["a"]).baseline
    d = quality.schema_drift(["id", "email", "phone"], ["id", "phone", "emailAddress"])
    assert d.added == ("emailAddress",) and d.removed == ("email",) and d.drifted
    assert not quality.schema_drift(["b", "a"], ["a", "b"]).drifted


def test_duplicates_and_freshness_measures() -> None:
    dup = quality.duplicate_ids(pd.Series(["a", "a", "a", "b", None, None]))
    assert (dup.ids, dup.extra_rows, dup.rows) == (1, 2, 6)
    fr = quality.freshness(pd.Series(["2026-05-31T00:00:00Z", None, "2020-01-01T00:00:00Z"]), NOW)
    assert fr.age_hours == 24.0 and fr.newest == pd.Timestamp("2026-05-31T00:00:00Z")
    assert quality.freshness(pd.Series([None, None]), NOW).age_hours is None


# ---------------------------------------------------------------- checks invoked
# on the lane's outputs as the run stores them (Parquet files the checks read a footer
# or a column of)


def lane_outputs(folder, connector: str, **outputs: pd.DataFrame) -> ParquetIOManager:  # noqa: ANN001
    """An IO manager in ``folder`` holding ``outputs`` (name -> frame) of ``connector``'s
    lane, stored as a run stores them."""
    io = ParquetIOManager(base_dir=str(folder))
    for name, frame in outputs.items():
        io.handle_output(dg.build_output_context(asset_key=dg.AssetKey([connector, name])), frame)
    return io


def _stored(tmp_path, **outputs: pd.DataFrame) -> dict:  # noqa: ANN001
    """Resources of a check run after the voyado lane stored ``outputs``."""
    return {
        "io_manager": lane_outputs(tmp_path / "storage", "voyado", **outputs),
        "state_db": StateDBResource(url=f"sqlite:///{tmp_path / 'state.sqlite'}"),
    }


def _run(check: dg.AssetChecksDefinition, resources: dict, **inputs) -> dg.AssetCheckResult:
    return check(dg.build_asset_check_context(resources=resources), **inputs)


def test_valid_rate_check_threshold(tmp_path) -> None:  # noqa: ANN001
    raw, res = _validated(["a@x.se", "b@x.se", "c@x.se", "d@x.se"], ids=["a", "b", "c", ""])
    stored = _stored(tmp_path, customers=res.valid, raw_customers=raw)
    result = _run(build_valid_rate_check("voyado", min_valid_rate=0.8), stored)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    assert (
        result.metadata["valid_rate"].value == 0.75
        and result.metadata["rejected_records"].value == 1
    )
    assert _run(build_valid_rate_check("voyado", min_valid_rate=0.7), stored).passed
    # an empty feed passes unless rows are required; an empty incremental pull always
    empty = _stored(tmp_path / "e", customers=res.valid.iloc[0:0], raw_customers=raw.iloc[0:0])
    assert _run(build_valid_rate_check("voyado"), empty).passed
    assert not _run(build_valid_rate_check("voyado", min_rows=1), empty).passed
    quiet = raw.iloc[0:0].copy()
    quiet.attrs[PULL_ATTR] = {"mode": "incremental"}
    changes = _stored(tmp_path / "i", customers=res.valid.iloc[0:0], raw_customers=quiet)
    assert _run(build_valid_rate_check("voyado", min_rows=1), changes).passed
    with pytest.raises(dg.Failure, match="voyado/raw_customers has no readable stored output"):
        _run(build_valid_rate_check("voyado"), _stored(tmp_path / "n", customers=res.valid))


def test_duplicate_check(tmp_path) -> None:  # noqa: ANN001
    _, res = _validated(["a@x.se", "b@x.se", "c@x.se"], ids=["a", "a", "b"])
    stored = _stored(tmp_path, customers=res.valid)
    result = _run(build_duplicate_ids_check("voyado"), stored, rejected=res.rejected)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["duplicated_ids"].value == 1 and result.metadata["extra_rows"].value == 1
    _, clean = _validated(["a@x.se"], ids=["a"])
    clean_stored = _stored(tmp_path / "c", customers=clean.valid)
    assert _run(build_duplicate_ids_check("voyado"), clean_stored, rejected=clean.rejected).passed


def test_freshness_check(tmp_path) -> None:  # noqa: ANN001
    frame = conform(
        pd.DataFrame(
            {
                "source_id": ["a", "b"],
                "updated_at": [pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=2), None],
            }
        )
    )
    stored = _stored(tmp_path, customers=frame)
    result = _run(build_freshness_check("voyado", max_age_hours=1), stored)
    assert not result.passed and 1.9 < result.metadata["age_hours"].value < 2.5
    assert _run(build_freshness_check("voyado", max_age_hours=3), stored).passed
    no_stamps = _stored(tmp_path / "n", customers=pd.DataFrame({"source_id": ["a"]}))
    result = _run(build_freshness_check("voyado"), no_stamps)
    assert not result.passed and result.metadata["records"].value == 1


def test_schema_drift_check_remembers_columns(tmp_path) -> None:  # noqa: ANN001
    check = build_schema_drift_check("voyado")

    def raw(n: int, frame: pd.DataFrame) -> dict:  # one state DB, each run's own output
        return {
            "io_manager": lane_outputs(tmp_path / str(n), "voyado", raw_customers=frame),
            "state_db": StateDBResource(url=f"sqlite:///{tmp_path / 'state.sqlite'}"),
        }

    first = _run(check, raw(1, pd.DataFrame({"id": [1], "email": ["x"]})))
    assert first.passed and first.metadata["columns"].value == 2
    same = _run(check, raw(2, pd.DataFrame({"email": ["y"], "id": [2]})))
    assert same.passed and same.metadata["columns_added"].value == 0
    renamed = _run(check, raw(3, pd.DataFrame({"id": [1], "emailAddress": ["x"]})))
    assert not renamed.passed
    assert (
        renamed.metadata["columns_added"].value == 1
        and renamed.metadata["columns_removed"].value == 1
    )
    assert "emailAddress" in renamed.description and "email" in renamed.description


# ---------------------------------------------------------------- blocking in a real run


@pytest.mark.parametrize(("bad_ids", "downstream_runs"), [(0, True), (3, False)])
def test_valid_rate_blocks_downstream(tmp_path, bad_ids: int, downstream_runs: bool) -> None:  # noqa: ANN001
    ids = [f"c{i}" for i in range(10)]
    ids[:bad_ids] = [""] * bad_ids
    raw, res = _validated([f"u{i}@x.se" for i in range(10)], ids=ids)

    @dg.asset(key=["voyado", "raw_customers"])
    def raw_customers() -> pd.DataFrame:
        return raw

    @dg.multi_asset(
        outs={
            "customers": dg.AssetOut(key=["voyado", "customers"]),
            "rejected_customers": dg.AssetOut(key=["voyado", "rejected_customers"]),
        },
        deps=[raw_customers],
    )
    def customers():  # noqa: ANN202
        yield dg.Output(res.valid, "customers")
        yield dg.Output(res.rejected, "rejected_customers")

    @dg.asset(key=["golden_customers"], deps=[dg.AssetKey(["voyado", "customers"])])
    def golden() -> pd.DataFrame:
        return pd.DataFrame()

    checks = build_extract_checks("voyado", min_valid_rate=0.9)
    result = dg.materialize(
        [raw_customers, customers, golden, *checks],
        instance=dg.DagsterInstance.ephemeral(),
        resources={
            "state_db": StateDBResource(url=f"sqlite:///{tmp_path / 'state.sqlite'}"),
            "io_manager": ParquetIOManager(base_dir=str(tmp_path / "storage")),
        },
        raise_on_error=False,
    )
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evals) == {
        "valid_row_rate",
        "duplicate_source_ids",
        "newest_record_freshness",
        "schema_drift",
    }
    assert evals["valid_row_rate"].passed is downstream_runs
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert dg.AssetKey(["voyado", "customers"]) in materialized
    # a failed blocking check stops everything downstream of the lane
    assert (dg.AssetKey(["golden_customers"]) in materialized) is downstream_runs
