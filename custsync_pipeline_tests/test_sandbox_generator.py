"""The generator: determinism, overlap, truth and defects consistency."""

from __future__ import annotations

import pandas as pd
import phonenumbers
import pytest

from custsync_pipeline.sandbox.generator import FORMULA_INJECTION, SYSTEMS, generate


@pytest.fixture(scope="module")
def data():
    return generate(seed=11, people=2000)


def test_same_seed_same_data_and_other_seed_differs():
    a, b, c = generate(3, 400), generate(3, 400), generate(4, 400)
    for system in SYSTEMS:
        pd.testing.assert_frame_equal(a.frames[system], b.frames[system])
    pd.testing.assert_frame_equal(a.truth, b.truth)
    pd.testing.assert_frame_equal(a.defects, b.defects)
    assert a.records("voucherify") == b.records("voucherify")
    assert not a.frames["salesforce"].equals(c.frames["salesforce"])


def test_truth_covers_every_record_once(data):
    truth = data.truth
    assert not truth.duplicated(["system", "source_id"]).any()
    for key, frame in data.frames.items():
        system = key.split(".")[0]
        obj = {"salesforce": "Contact", "exact": "Account"}.get(key, key.split(".")[-1])
        in_truth = truth[(truth["system"] == system)]
        if "." in key or system in ("salesforce", "exact"):
            in_truth = in_truth[in_truth["object_type"] == obj]
        id_col = {"salesforce": "Id", "exact": "ID"}.get(system, "id")
        if system == "icomm":
            got = set(frame["UserId"] + "|" + frame["StoreCode"])
        else:
            got = set(frame[id_col])
        assert got == set(in_truth["source_id"]), key
    people = truth[~truth["person_id"].str.startswith("ORG")]
    assert set(people["person_id"]) <= set(data.people["person_id"])
    orgs = truth[(truth["object_type"] == "Account") & (truth["system"] == "salesforce")]
    assert len(orgs) > 0 and orgs["person_id"].str.startswith("ORG").all()


def test_salesforce_leads_and_accounts(data):
    truth = data.truth
    leads = truth[(truth["system"] == "salesforce") & (truth["object_type"] == "Lead")]
    contacts = truth[(truth["system"] == "salesforce") & (truth["object_type"] == "Contact")]
    assert len(leads) > 0 and len(set(leads["person_id"]) & set(contacts["person_id"])) > 0
    assert data.frames["salesforce.Lead"]["Id"].str.startswith("00Q").all()
    acc = data.frames["salesforce.Account"]
    linked = data.frames["salesforce"].dropna(subset=["AccountId"])
    assert len(linked) > 0 and set(linked["AccountId"]) <= set(acc["Id"])
    exact_c = data.frames["exact.Contact"]
    assert set(exact_c["Account"]) <= set(data.frames["exact"]["ID"])
    assert set(data.systems) == set(SYSTEMS)


def test_people_overlap_across_systems(data):
    per_person = (
        data.truth[~data.truth["person_id"].str.startswith("ORG")]
        .groupby("person_id")["system"]
        .nunique()
    )
    assert (per_person >= 2).mean() > 0.4
    assert len(per_person) == len(data.people)  # nobody is left out of every system


def test_defects_point_at_real_records_and_really_break_them(data):
    d = data.defects
    truth_keys = set(zip(data.truth["system"], data.truth["source_id"], strict=True))
    assert set(zip(d["system"], d["source_id"], strict=True)) <= truth_keys
    sf = data.frames["salesforce"].set_index("Id")
    for row in d[(d["system"] == "salesforce") & (d["object_type"] == "Contact")].itertuples():
        rec = sf.loc[row.source_id]
        if row.defect == "formula_injection":
            assert rec["LastName"] == FORMULA_INJECTION
        elif row.defect == "bad_email_syntax":
            assert "@@" in rec["Email"]
        elif row.defect == "unknown_country":
            assert rec["MailingCountry"] == "XX"
        elif row.defect == "missing_name_and_email":
            assert rec["LastName"] is None and rec["Email"] is None
        elif row.defect == "control_chars":
            assert "\x07" in rec["FirstName"]
        elif row.defect == "future_date":
            assert rec["CreatedDate"] > "2100"
        elif row.defect == "email_whitespace":
            assert rec["Email"] != rec["Email"].strip()
    # every deliberate invalid kind is present somewhere
    kinds = set(d.loc[d["expect"] == "reject", "defect"])
    assert kinds == {
        "bad_email_syntax",
        "unknown_country",
        "missing_name_and_email",
        "formula_injection",
        "control_chars",
        "future_date",
    }


def test_reject_records_carry_one_reject_kind(data):
    rej = data.defects[data.defects["expect"] == "reject"]
    assert rej.groupby(["system", "source_id"])["defect"].nunique().max() == 1
    # a rejected record gets no clean-able phone/e-mail mess that could fail on its own
    clean = data.defects[data.defects["expect"] == "clean"]
    both = rej.merge(clean, on=["system", "source_id"])
    assert both.empty


def test_identity_traps_exist(data):
    d = data.defects
    for trap in (
        "shared_family_email",
        "role_email",
        "placeholder_email",
        "guest_checkout",
        "in_system_duplicate",
    ):
        assert (d["defect"] == trap).sum() > 0, trap
    # shared family e-mail: two different persons, same address
    fam = data.people[data.people["shared_email"] == "family"]
    assert (fam.groupby("email")["person_id"].nunique() == 2).all()
    # in-system duplicates: the same person twice in Salesforce
    sf_truth = data.truth[data.truth["system"] == "salesforce"]
    assert (sf_truth.groupby("person_id").size() > 1).sum() > 0


def test_cross_references_point_at_the_right_person(data):
    truth = data.truth.set_index(["system", "source_id"])["person_id"]
    sf = data.frames["salesforce"]
    sf_person = truth.loc["salesforce"]
    voy = sf.dropna(subset=["Voyado_Id__c"])
    assert len(voy) > 0
    assert (
        voy["Id"].map(sf_person).to_numpy()
        == voy["Voyado_Id__c"].map(truth.loc["voyado"]).to_numpy()
    ).all()
    exact = data.frames["exact"]
    code_person = pd.Series(
        exact["ID"].map(truth.loc["exact"]).to_numpy(), index=exact["Code"].str.strip()
    )
    cn = sf.dropna(subset=["Customer_Number__c"])
    assert (
        cn["Id"].map(sf_person).to_numpy() == cn["Customer_Number__c"].map(code_person).to_numpy()
    ).all()
    assert (exact["Code"].str.len() == 18).all()  # Exact pads Code to 18 characters
    vf = data.frames["voucherify"]
    via_sf = vf[vf["source_id"].isin(sf["Id"])]
    assert len(via_sf) > 0
    assert (
        via_sf["id"].map(truth.loc["voucherify"]).to_numpy()
        == via_sf["source_id"].map(sf_person).to_numpy()
    ).all()


def test_true_phones_are_valid_numbers(data):
    sample = data.people["phone"].drop_duplicates().head(300)
    assert all(phonenumbers.is_valid_number(phonenumbers.parse(p)) for p in sample)
    national = data.defects[
        (data.defects["defect"] == "phone_national")
        & (data.defects["system"] == "salesforce")
        & (data.defects["object_type"] == "Contact")
    ]
    sf = data.frames["salesforce"].set_index("Id")
    for sid in national["source_id"].head(50):
        rec = sf.loc[sid]
        parsed = phonenumbers.parse(rec["Phone"], rec["MailingCountry"].upper())
        assert phonenumbers.is_valid_number(parsed), rec["Phone"]


def test_wire_shapes(data):
    vf = data.records("voucherify")[0]
    assert vf["object"] == "customer" and vf["id"].startswith("cust_")
    assert set(vf["address"]) == {"city", "state", "line_1", "line_2", "country", "postal_code"}
    sf = data.records("salesforce")[0]
    assert len(sf["Id"]) == 18 and sf["Id"].startswith("003")
    assert sf["LastModifiedDate"].endswith("+0000")
    icomm = data.records("icomm")[0]
    assert all(set(f) == {"Key", "Value"} for f in icomm["CustomFields"])
