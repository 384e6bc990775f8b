"""Delta computation: creates, updates, no-ops and the acknowledged ledger."""

import pandas as pd

from custsync_pipeline.domain.deltas import DELTA_COLUMNS, compute_deltas
from custsync_pipeline.domain.golden import row_hash

FIELDS = ["first_name", "email"]
GOLDEN = pd.DataFrame(
    {
        "golden_id": ["G1", "G2", "G3"],
        "first_name": ["Anna", "Bo", "Cy"],
        "email": ["a@x.se", None, "c@x.se"],
    }
)


def _members(**overrides) -> pd.DataFrame:
    m = pd.DataFrame(
        {
            "golden_id": ["G1", "G2"],
            "source_id": ["T1", "T2"],
            "first_name": ["Anna", "Bo"],
            "email": ["a@x.se", "bo@old.se"],
        }
    )
    for k, v in overrides.items():
        m[k] = v
    return m


def test_only_missing_and_different_records_become_deltas() -> None:
    deltas = compute_deltas(GOLDEN, _members(), FIELDS, pd.DataFrame())
    # G1 matches, G2's empty golden email is never sent so T2 keeps its own: no-op;
    # G3 has no member -> create
    assert deltas[["entity_key", "golden_id", "target_id"]].values.tolist() == [
        ["new:G3", "G3", None]
    ]


def test_member_that_differs_is_updated() -> None:
    deltas = compute_deltas(GOLDEN, _members(first_name=["Ann", "Bo"]), FIELDS, pd.DataFrame())
    assert sorted(deltas["entity_key"]) == ["T1", "new:G3"]
    assert deltas.set_index("entity_key").loc["T1", "target_id"] == "T1"


def test_acknowledged_payload_is_not_sent_again() -> None:
    first = compute_deltas(GOLDEN, _members(first_name=["Ann", "Bo"]), FIELDS, pd.DataFrame())
    acked = first[["entity_key", "payload_hash"]].rename(columns={"payload_hash": "acked_hash"})
    assert compute_deltas(GOLDEN, _members(first_name=["Ann", "Bo"]), FIELDS, acked).empty
    # the golden record changes after the ack -> sent again
    changed = GOLDEN.copy()
    changed.loc[0, "first_name"] = "Anne"
    again = compute_deltas(changed, _members(first_name=["Ann", "Bo"]), FIELDS, acked)
    assert list(again["entity_key"]) == ["T1"]
    assert again["payload_hash"].iloc[0] == row_hash(changed, FIELDS).iloc[0]


def test_nothing_to_do_gives_an_empty_frame_with_columns() -> None:
    members = pd.DataFrame(
        {
            "golden_id": ["G1", "G2", "G3"],
            "source_id": ["T1", "T2", "T3"],
            "first_name": ["Anna", "Bo", "Cy"],
            "email": ["a@x.se", "b@x.se", "c@x.se"],
        }
    )
    deltas = compute_deltas(GOLDEN, members, FIELDS, pd.DataFrame())
    assert deltas.empty and list(deltas.columns) == DELTA_COLUMNS
