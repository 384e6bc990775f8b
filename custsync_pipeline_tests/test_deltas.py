"""Delta computation: creates, updates, no-ops and the acknowledged ledger."""

import json

import pandas as pd

from custsync_pipeline.domain.deltas import DELTA_COLUMNS, compute_deltas, hold_back
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


def test_acknowledged_create_is_not_sent_again() -> None:
    first = compute_deltas(GOLDEN, _members(), FIELDS, pd.DataFrame())
    acked = first[["entity_key", "payload_hash"]].rename(columns={"payload_hash": "acked_hash"})
    assert list(first["entity_key"]) == ["new:G3"]
    assert compute_deltas(GOLDEN, _members(), FIELDS, acked).empty
    # the golden record changes after the ack -> sent again
    changed = GOLDEN.copy()
    changed.loc[2, "first_name"] = "Cyd"
    again = compute_deltas(changed, _members(), FIELDS, acked)
    assert list(again["entity_key"]) == ["new:G3"]
    assert again["payload_hash"].iloc[0] == row_hash(changed, FIELDS).iloc[2]


def test_drift_is_corrected_whatever_the_ledger_says() -> None:
    # T1 was updated to the golden values and acknowledged; then someone changed it by
    # hand in the target: the same payload hash is sent again, because T1 differs
    first = compute_deltas(GOLDEN, _members(first_name=["Ann", "Bo"]), FIELDS, pd.DataFrame())
    acked = first[["entity_key", "payload_hash"]].rename(columns={"payload_hash": "acked_hash"})
    again = compute_deltas(GOLDEN, _members(first_name=["Ann", "Bo"]), FIELDS, acked)
    assert list(again["entity_key"]) == ["T1"]
    assert again["payload_hash"].iloc[0] == acked.set_index("entity_key").loc["T1", "acked_hash"]
    # once the target holds the golden values, nothing is sent
    assert compute_deltas(GOLDEN, _members(), FIELDS, acked)["entity_key"].tolist() == []


def test_each_delta_carries_the_golden_version() -> None:
    golden = GOLDEN.assign(version=[4, 1, 2])
    deltas = compute_deltas(golden, _members(first_name=["Ann", "Bo"]), FIELDS, pd.DataFrame())
    assert deltas.set_index("entity_key")["golden_version"].to_dict() == {"T1": 4, "new:G3": 2}


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


def test_members_of_another_object_type_are_left_alone_and_not_created_again() -> None:
    # Salesforce writes Contacts: T1 is a Lead of G1 (differs, but is not a Contact),
    # T2 a Contact of G2 that differs -> only T2 is updated, G1 gets no Contact beside its Lead
    members = _members(first_name=["Ann", "Bob"], email=["a@x.se", "b@x.se"])
    members["object_type"] = ["Lead", "Contact"]
    deltas = compute_deltas(GOLDEN, members, FIELDS, pd.DataFrame(), writable_types=["Contact"])
    assert sorted(deltas["entity_key"]) == ["T2", "new:G3"]


def test_hold_back_by_kind_and_required_field_with_counts() -> None:
    golden = pd.DataFrame(
        {
            "golden_id": ["G1", "G2", "G3", "G4"],
            "kind": ["person", "company", "person", pd.NA],
            "last_name": ["Ek", pd.NA, pd.NA, "Berg"],
        }
    )
    takes, why = hold_back(golden, ["person"], ["last_name"])
    assert list(takes["golden_id"]) == ["G1"]
    assert why == {"kind_not_taken": 2, "missing_last_name": 1}
    everything, none = hold_back(golden, None, [])
    assert len(everything) == 4 and none == {}


def test_member_views_keep_a_members_own_entries_in_the_targets_slots() -> None:
    """Two duplicates of one person in a target with two address slots: each keeps its own
    addresses first, so the write does not trade one's second address for the other's."""
    from custsync_pipeline.domain.deltas import member_views

    a, b, c = ({"entry_key": k, "street": s} for k, s in (("k1", "A"), ("k2", "B"), ("k3", "C")))
    golden = pd.DataFrame({"golden_id": ["G1"], "first_name": ["Ann"], "addresses": [[a, b, c]]})
    members = pd.DataFrame(
        {
            "source_id": ["m1", "m2", "m3"],
            "golden_id": ["G1", "G1", "G1"],
            "addresses": [[a, b], [a, c], None],
        }
    )
    views = member_views(golden, members, ["addresses"])
    streets = {s: [e["street"] for e in v] for s, v in views["addresses"].items()}
    assert streets == {"m1": ["A", "B", "C"], "m2": ["A", "C", "B"], "m3": ["A", "B", "C"]}
    assert views.loc["m2", "first_name"] == "Ann"
    # the golden record's own address (its flat street) leads: the target's flat fields
    # and first slot agree with the golden record; the member's own come next
    views = member_views(golden.assign(street=["b"]), members, ["addresses"])
    streets = {s: [e["street"] for e in v] for s, v in views["addresses"].items()}
    assert streets == {"m1": ["B", "A", "C"], "m2": ["B", "A", "C"], "m3": ["A", "B", "C"]}
    # two entries at the golden address (mailing and visiting): only the first leads, so
    # the second slot keeps what it held
    d = {"entry_key": "k4", "street": "B", "type": "visiting"}
    golden = golden.assign(street=["b"], addresses=[[a, b, c, d]])
    members = members.assign(addresses=[[b, c], [b, c], None])
    views = member_views(golden, members, ["addresses"])
    assert [e["entry_key"] for e in views.loc["m1", "addresses"]] == ["k2", "k3", "k1", "k4"]


def test_a_member_field_read_empty_compares_as_what_the_target_holds() -> None:
    """A Salesforce Contact not opted out reads as no consent, and holds what "yes"
    writes: golden yes is no update, golden no is, an unset golden consent never is."""
    golden = pd.DataFrame(
        {"golden_id": ["G1", "G2", "G3", "G4"], "email_consent": ["yes", "no", None, "yes"]}
    )
    members = pd.DataFrame(
        {
            "golden_id": ["G1", "G2", "G3", "G4"],
            "source_id": ["T1", "T2", "T3", "T4"],
            "email_consent": [None, None, "no", "no"],
        }
    )
    plain = compute_deltas(golden, members, ["email_consent"], pd.DataFrame())
    assert sorted(plain["entity_key"]) == ["T1", "T2", "T4"]
    held = compute_deltas(
        golden, members, ["email_consent"], pd.DataFrame(), empty_reads_as={"email_consent": "yes"}
    )
    assert sorted(held["entity_key"]) == ["T2", "T4"]


def test_only_values_custsync_wrote_and_the_golden_record_lost_are_withdrawn() -> None:
    from custsync_pipeline.domain.deltas import clear_withdrawn, withdrawn_values

    golden = pd.DataFrame(
        {"golden_id": ["G1", "G2", "G3"], "tier": [None, None, "Gold"], "points": [None, None, 5.0]}
    )
    members = pd.DataFrame(
        {
            "golden_id": ["G1", "G2", "G3"],
            "source_id": ["T1", "T2", "T3"],
            "tier": ["gold ", "Silver", "Gold"],  # T2: changed there since custsync wrote
            "points": [1250.0, 80.0, 5.0],
        }
    )
    written = pd.DataFrame(
        {"source_id": ["T1", "T2", "T3"], "tier": ["Gold", "Gold", "Gold"], "points": [1250, 80, 5]}
    )
    out = withdrawn_values(golden, members, written, ["tier", "points"])
    assert sorted(map(tuple, out.values.tolist())) == [
        ("T1", "points"),
        ("T1", "tier"),
        ("T2", "points"),
    ]
    deltas = compute_deltas(golden, members, ["tier", "points"], pd.DataFrame(), withdrawn=out)
    assert sorted(deltas["entity_key"]) == ["T1", "T2"]
    deltas = deltas.assign(payload='{"Keep": 1}')
    cleared = clear_withdrawn(deltas, out, {"tier": "Tier__c", "points": None}.get, json.dumps)
    bodies = dict(zip(cleared["entity_key"], cleared["payload"].map(json.loads), strict=True))
    assert bodies == {"T1": {"Keep": 1, "Tier__c": None}, "T2": {"Keep": 1}}


def test_an_opt_out_custsync_did_not_write_is_kept_for_review() -> None:
    from custsync_pipeline.domain.conflicts import foreign_opt_outs

    ids = ["G1", "G2", "G3", "G4", "G5"]
    golden = pd.DataFrame({"golden_id": ids, "email_consent": ["yes"] * 4 + ["no"]})
    members = pd.DataFrame(
        {"golden_id": ids, "source_id": ["T1", "T2", "T3", "T4", "T5"], "email_consent": "no"}
    )
    # custsync's last writes: T2 and T3 sent the "no", T2's write changed it there, T3's
    # only carried it (an update of loyalty points: every payload sends the consent), T4
    # was created by custsync with it
    written = pd.DataFrame(
        {
            "source_id": ["T2", "T3", "T4"],
            "created": [False, False, True],
            "email_consent": ["no", "no", "no"],
        }
    )
    held = pd.DataFrame({"source_id": ["T2"], "field": ["email_consent"], "value": ["yes"]})
    kept = foreign_opt_outs(golden, members, written, held, ["email_consent"])
    assert kept[["source_id", "field", "target_value", "golden_value"]].values.tolist() == [
        ["T1", "email_consent", "no", "yes"],
        ["T3", "email_consent", "no", "yes"],
    ]
    nothing = pd.DataFrame(columns=["source_id", "field"])
    assert foreign_opt_outs(golden, members, pd.DataFrame(), nothing, ["email_consent"])[
        "source_id"
    ].tolist() == ["T1", "T2", "T3", "T4"]


def test_a_withdrawn_value_never_blanks_a_key_the_payload_fills() -> None:
    """An address block an entry gives (Mailing* from the golden address) keeps its value
    though the flat field it shares a key with was withdrawn."""
    from custsync_pipeline.domain.deltas import clear_withdrawn

    deltas = pd.DataFrame({"entity_key": ["T1"], "payload": ['{"MailingCountry": "SE"}']})
    withdrawn = pd.DataFrame({"source_id": ["T1", "T1"], "field": ["country", "loyalty_tier"]})
    keys = {"country": "MailingCountry", "loyalty_tier": "Loyalty_Tier__c"}.get
    out = clear_withdrawn(deltas, withdrawn, keys, json.dumps)
    assert json.loads(out["payload"].iloc[0]) == {"MailingCountry": "SE", "Loyalty_Tier__c": None}
