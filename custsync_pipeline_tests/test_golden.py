"""Survivorship: flow order, ownership, versions and change events."""

import pandas as pd

from custsync_pipeline.domain.canonical import GOLDEN_FIELDS, conform
from custsync_pipeline.domain.golden import (
    CREATED,
    FlowStep,
    build_golden,
    diff_golden,
    first_version,
    row_hash,
)

STEPS = [
    FlowStep("crm", ("name", "customer_contact_details", "addresses")),
    FlowStep("shop", ("customer_contact_details",)),
    FlowStep("loyalty", ("loyalty",)),
]


def _records() -> pd.DataFrame:
    return conform(
        pd.DataFrame(
            {
                "connector": ["crm", "crm", "shop", "loyalty", "shop"],
                "source_id": ["c1", "c2", "s1", "l1", "s2"],
                "first_name": ["Anna", "Ana", "Annie", None, "Bo"],
                "email": ["anna@crm.se", "old@crm.se", "anna@shop.se", None, "bo@shop.se"],
                "phone": [None, "+46701111111", None, "+46709999999", None],
                "loyalty_tier": [None, None, None, "gold", None],
                "city": ["Lund", None, "Malmö", None, None],
                "updated_at": pd.to_datetime(
                    ["2024-01-02", "2024-01-01", "2024-01-01", "2024-01-05", "2024-01-03"], utc=True
                ),
            }
        )
    )


IDMAP = pd.DataFrame(
    {
        "connector": ["crm", "crm", "shop", "loyalty", "shop"],
        "source_id": ["c1", "c2", "s1", "l1", "s2"],
        "golden_id": ["G1", "G1", "G1", "G1", "G2"],
    }
)


def test_later_step_wins_and_name_only_from_steps_that_give_it() -> None:
    golden = build_golden(_records(), IDMAP, STEPS).golden.set_index("golden_id")
    # shop enriches contact details, so its email wins over the CRM's
    assert golden.loc["G1", "email"] == "anna@shop.se"
    # shop does not give names: the CRM's newest record wins the name
    assert golden.loc["G1", "first_name"] == "Anna"
    # the loyalty step does not give phones; the CRM's phone survives
    assert golden.loc["G1", "phone"] == "+46701111111"
    assert golden.loc["G1", "loyalty_tier"] == "gold"
    # addresses only from the CRM: shop's city is not taken
    assert golden.loc["G1", "city"] == "Lund"
    # a golden record with only a shop member gets no name (shop gives none)
    assert pd.isna(golden.loc["G2", "first_name"])
    assert golden.loc["G2", "email"] == "bo@shop.se"


def test_ownership_pins_a_field_to_one_connector() -> None:
    golden = build_golden(_records(), IDMAP, STEPS, ownership={"phone": "loyalty"}).golden
    g1 = golden.set_index("golden_id").loc["G1"]
    assert g1["phone"] == "+46709999999"


def test_diff_versions_and_events() -> None:
    now = pd.Timestamp("2024-02-01", tz="UTC")
    res = build_golden(_records(), IDMAP, STEPS)
    changed, events, gone = diff_golden(res.golden, pd.DataFrame(), res.provenance, now)
    assert set(changed["golden_id"]) == {"G1", "G2"}
    assert (changed["version"] == 1).all()
    assert gone == []
    # a new record: one event, its values are the record's own until a change
    assert sorted(events["golden_id"]) == ["G1", "G2"] and (events["field"] == CREATED).all()
    assert events["new_value"].isna().all()

    stored = changed.copy()
    # unchanged input -> nothing changes
    again, ev2, _ = diff_golden(res.golden, stored, res.provenance, now)
    assert again.empty and ev2.empty

    recs = _records()
    recs.loc[recs["source_id"] == "s1", "email"] = "anna.new@shop.se"
    res3 = build_golden(recs, IDMAP[IDMAP["golden_id"] == "G1"], STEPS)
    changed3, ev3, gone3 = diff_golden(res3.golden, stored, res3.provenance, now)
    assert list(changed3["golden_id"]) == ["G1"]
    assert int(changed3["version"].iloc[0]) == 2
    assert ev3[["golden_id", "version", "field", "old_value", "new_value"]].values.tolist() == [
        ["G1", 2, "email", "anna@shop.se", "anna.new@shop.se"],
        # G2 retired: its history keeps what it held, cleared, in a version of its own
        ["G2", 2, "email", "bo@shop.se", None],
    ]
    assert gone3 == ["G2"]


def test_row_hash_is_stable_and_sensitive() -> None:
    a = pd.DataFrame({"x": ["1", None], "y": [2.0, 3.0]})
    b = a.copy()
    assert row_hash(a, ["x", "y"]).tolist() == row_hash(b, ["x", "y"]).tolist()
    b.loc[1, "y"] = 4.0
    assert row_hash(a, ["x", "y"])[1] != row_hash(b, ["x", "y"])[1]


def test_a_placeholder_never_beats_a_real_value_but_fills_an_empty_field() -> None:
    from custsync_pipeline.config import IdentifierRule

    rules = [
        IdentifierRule(
            name="email",
            columns=["email"],
            priority=3,
            blocked_values=["none@none.com"],
            blocked_patterns=["^info@"],
        ),
        IdentifierRule(
            name="phone", columns=["phone"], priority=4, blocked_patterns=[r"^\+\d{1,3}0{6,}$"]
        ),
    ]
    records = _records()
    # the shop (later in the flow) typed placeholders for G1 and holds only placeholders for G2
    records.loc[records["source_id"] == "s1", ["email", "phone"]] = [
        "None@none.com",
        "+46000000000",
    ]
    records.loc[records["source_id"] == "s2", "email"] = "info@bo.se"
    plain = build_golden(records, IDMAP, STEPS).golden.set_index("golden_id")
    assert plain.loc["G1", "email"] == "None@none.com"  # what flow order alone would do
    golden = build_golden(records, IDMAP, STEPS, placeholder_rules=rules).golden.set_index(
        "golden_id"
    )
    assert golden.loc["G1", "email"] == "anna@crm.se"
    assert golden.loc["G1", "phone"] == "+46701111111"
    assert golden.loc["G2", "email"] == "info@bo.se"  # nothing better: the value is kept


def test_hex_digests_are_the_sixteen_digit_hex_of_each_hash() -> None:
    """Entry keys and record hashes are stored as text: the vectorized formatting must give
    exactly ``format(h, "016x")`` (leading zeros, the top bit, across chunk borders)."""
    import numpy as np

    from custsync_pipeline.domain import hashing

    rng = np.random.default_rng(3)
    values = rng.integers(0, 2**63, 2 * hashing._CHUNK + 7, dtype=np.int64).view(np.uint64)
    values = values * np.uint64(2) + np.uint64(1)
    values[:4] = [0, 1, 2**63, 2**64 - 1]
    got = hashing.hex16(values)
    assert got.tolist() == [format(int(v), "016x") for v in values]
    assert hashing.hex16(np.zeros(0, dtype=np.uint64)).tolist() == []


def test_a_consent_time_is_credited_to_the_record_that_gave_the_consent() -> None:
    """``email_consent_at`` has no provenance row of its own: its history event names the
    connector of the consent it came with (``custsync history`` showed ``from -``)."""
    recs = _records()
    recs["email_consent"] = pd.Series([None, None, None, "yes", None], dtype="string")
    recs["email_consent_at"] = pd.to_datetime([None, None, None, "2024-01-04", None], utc=True)
    steps = [*STEPS[:2], FlowStep("loyalty", ("loyalty", "consents"))]
    res = build_golden(recs, IDMAP, steps)
    now = pd.Timestamp("2024-02-01", tz="UTC")
    _, events, _ = diff_golden(res.golden, pd.DataFrame(), res.provenance, now)
    g1_row = res.golden[res.golden["golden_id"] == "G1"]
    prov = res.provenance[res.provenance["golden_id"] == "G1"]
    hist = first_version(events[events["golden_id"] == "G1"], g1_row, pd.DataFrame(), prov)
    g1 = hist.set_index("field")["connector"]
    assert g1["email_consent"] == "loyalty"
    assert g1["email_consent_at"] == "loyalty"


def test_change_counts_count_a_new_records_values_and_not_a_retired_ones() -> None:
    from custsync_pipeline.domain.golden import change_counts

    now = pd.Timestamp("2024-02-01", tz="UTC")
    res = build_golden(_records(), IDMAP, STEPS)
    changed, events, gone = diff_golden(res.golden, pd.DataFrame(), res.provenance, now)
    entries = pd.DataFrame({"golden_id": ["G1", "G1", "G2"]})
    fields = int(changed[[c for c in GOLDEN_FIELDS if c in changed]].notna().to_numpy().sum())
    assert change_counts(changed, events, gone, entries) == (fields, 3)
    # G2 retired, G1's e-mail changed: one field change; G2's cleared values are no change
    recs = _records()
    recs.loc[recs["source_id"] == "s1", "email"] = "anna.new@shop.se"
    res2 = build_golden(recs, IDMAP[IDMAP["golden_id"] == "G1"], STEPS)
    changed2, events2, gone2 = diff_golden(res2.golden, changed, res2.provenance, now)
    assert gone2 == ["G2"] and (events2["golden_id"] == "G2").sum() > 0
    assert change_counts(changed2, events2, gone2, pd.DataFrame()) == (1, 0)


def test_history_of_an_id_created_again_after_it_was_retired() -> None:
    """Each life of a golden id reads back its own first values: the first from the events
    that retired it, the second from the record as it is."""
    at = pd.Timestamp("2024-01-01", tz="UTC")

    def ev(version: int, field: str, old: str | None, new: str | None) -> dict:
        return dict(golden_id="G", version=version, field=field, old_value=old, new_value=new,
                    connector=None, at=at)  # fmt: skip

    events = pd.DataFrame(
        [
            ev(1, CREATED, None, None),
            ev(2, "email", "a@x.se", "b@x.se"),
            ev(3, "email", "b@x.se", None),  # retired
            ev(1, CREATED, None, None),  # created again
        ]
    )
    current = pd.DataFrame([dict.fromkeys(GOLDEN_FIELDS) | {"golden_id": "G", "email": "c@x.se"}])
    origins = pd.DataFrame({"field": ["email"], "connector": ["shop"]})
    hist = first_version(events, current, pd.DataFrame(), origins)
    assert hist[["version", "field", "new_value", "connector"]].values.tolist() == [
        [1, "email", "a@x.se", None],
        [2, "email", "b@x.se", None],
        [3, "email", None, None],
        [1, "email", "c@x.se", "shop"],
    ]
    # nothing to read back (no record, no later event): the history is what it is
    lone = first_version(events.iloc[3:], current.iloc[:0], pd.DataFrame(), origins.iloc[:0])
    assert lone.empty
