"""Golden records v2 on small frames: each merge method and aspect, consents with time,
versions and history events, and ``current_data`` as the source step."""

from __future__ import annotations

import pandas as pd
import pytest

from custsync_pipeline.domain.aspects import ASPECT_COLUMNS, ENTRY_ASPECTS, PARENT_ASPECT
from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.domain.golden import (
    CREATED,
    build_golden,
    diff_golden,
    first_version,
    merge_golden,
)
from custsync_pipeline.domain.plan import FlowStep, SyncPlan
from custsync_pipeline.domain.validate_aspects import check_entries

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def _records(rows: list[dict]) -> pd.DataFrame:
    return conform(pd.DataFrame(rows))


def _idmap(pairs: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["connector", "source_id", "golden_id"])


def _entries(rows: list[dict]) -> pd.DataFrame:
    """Raw entries -> validated, keyed entries (as a lane stores them)."""
    frame = pd.DataFrame(rows)
    out = []
    for conn, group in frame.groupby("connector"):
        checked = check_entries(group, str(conn), group["source_id"])
        assert checked.rejected.empty, checked.rejected["reason"].tolist()
        out.append(checked.valid)
    return pd.concat(out, ignore_index=True)


# --------------------------------------------------------------------------- name


def test_name_is_latest_connector_and_earlier_steps_fill_gaps() -> None:
    steps = [FlowStep("exact", ("name",)), FlowStep("katana", ("name",))]
    recs = _records(
        [
            dict(connector="exact", source_id="e1", first_name="Anna", last_name="Berg"),
            dict(connector="katana", source_id="k1", first_name="Annie", last_name=None),
        ]
    )
    golden = build_golden(recs, _idmap([("exact", "e1", "G"), ("katana", "k1", "G")]), steps)
    row = golden.golden.iloc[0]
    assert row["first_name"] == "Annie"  # the later step has a value: it wins
    assert row["last_name"] == "Berg"  # it has none: the earlier step's stays
    prov = golden.provenance.set_index("field")
    assert prov.loc["first_name", "connector"] == "katana"
    assert prov.loc["last_name", "connector"] == "exact"


# --------------------------------------------------------------------------- multiple connectors

# one (first system's, second system's) pair of entries per aspect: the same entry
# typed two ways, plus one entry only the second system holds
SAME_TWO_WAYS: dict[str, tuple[dict, dict, dict]] = {
    "addresses": (
        dict(type="billing", street="Storgatan 12", postal_code="111 22", city="Sthlm", country="SE"),
        dict(type="Billing", street="STORGATAN  12", postal_code="11122", city="Stockholm", country="Sweden"),
        dict(type="shipping", street="Hamnvägen 3", postal_code="41101", city="Göteborg", country="SE"),
    ),
    "contact_persons": (
        dict(first_name="Åsa", last_name="Lind", role="buyer", email="asa@acme.se"),
        dict(first_name="ASA", last_name="lind", role="CFO", phone="+46701234567"),
        dict(first_name="Bo", last_name="Ek", role="ceo"),
    ),
    "customer_attributes": (
        dict(name="segment", value="retail"),
        dict(name="Segment", value="wholesale"),
        dict(name="vat_exempt", value="yes"),
    ),
    "customer_contact_details": (
        dict(type="email", value="Info@Acme.se"),
        dict(type="email", value="info@acme.se"),
        dict(type="website", value="https://acme.se"),
    ),
    "attachments": (
        dict(name="contract.pdf", reference="https://files.example.org/c/1", content_type="application/pdf"),
        dict(name="Contract", reference="https://files.example.org/c/1", size=1024),
        dict(name="logo.png", reference="https://files.example.org/l/2", content_type="image/png"),
    ),
}  # fmt: skip
# nested aspects: their parents, given by both systems, and the child entries
PARENTS = {
    "addresses": dict(type="billing", street="Storgatan 12", postal_code="11122", country="SE"),
    "contact_persons": dict(first_name="Åsa", last_name="Lind"),
}
NESTED: dict[str, tuple[dict, dict, dict]] = {
    "address_attributes": (dict(name="door_code", value="1234"), dict(name="DOOR_CODE", value="4321"), dict(name="floor", value="3")),
    "address_contact_details": (dict(type="phone", value="+4681234567"), dict(type="phone", value="08-123 45 67"), dict(type="fax", value="+4681234568")),
    "contact_person_attributes": (dict(name="title", value="Dr"), dict(name="title", value="Dr."), dict(name="language", value="sv")),
    "contact_person_contact_details": (dict(type="email", value="asa@acme.se"), dict(type="email", value=" ASA@acme.se "), dict(type="mobile", value="+46701234567")),
}  # fmt: skip


def _two_systems(aspect: str) -> pd.DataFrame:
    rows = []
    if aspect in NESTED:
        parent = PARENT_ASPECT[aspect]
        first, second, only_b = NESTED[aspect]
        for conn in ("exact", "katana"):
            rows.append(
                dict(
                    connector=conn,
                    source_id=conn[0] + "1",
                    aspect=parent,
                    local_id="p",
                    **PARENTS[parent],
                )
            )
        rows += [
            dict(connector="exact", source_id="e1", aspect=aspect, parent_local_id="p", **first),
            dict(connector="katana", source_id="k1", aspect=aspect, parent_local_id="p", **second),
            dict(connector="katana", source_id="k1", aspect=aspect, parent_local_id="p", **only_b),
        ]
    else:
        first, second, only_b = SAME_TWO_WAYS[aspect]
        rows = [
            dict(connector="exact", source_id="e1", aspect=aspect, **first),
            dict(connector="katana", source_id="k1", aspect=aspect, **second),
            dict(connector="katana", source_id="k1", aspect=aspect, **only_b),
        ]
    for r in rows:
        r["seen_at"] = T0 if r["connector"] == "exact" else T0 + pd.Timedelta(days=1)
    return _entries(rows)  # fmt: skip


@pytest.mark.parametrize("aspect", ENTRY_ASPECTS)
def test_multiple_connectors_union_deduplicated_with_provenance(aspect: str) -> None:
    entries = _two_systems(aspect)
    aspects = (aspect, PARENT_ASPECT.get(aspect, aspect))
    steps = [FlowStep("exact", aspects), FlowStep("katana", aspects)]
    recs = _records(
        [dict(connector="exact", source_id="e1"), dict(connector="katana", source_id="k1")]
    )
    idmap = _idmap([("exact", "e1", "G"), ("katana", "k1", "G")])
    res = build_golden(recs, idmap, steps, entries=entries)
    mine = res.entries[res.entries["aspect"] == aspect]
    # the same entry typed two ways is one entry, held by both; the other is katana's alone
    assert len(mine) == 2, mine[list(ASPECT_COLUMNS[aspect])]
    assert sorted(mine["providers"]) == ["exact,katana", "katana"]
    both = mine[mine["providers"] == "exact,katana"].iloc[0]
    # the values of the later step (katana) win for the shared entry
    assert both["connector"] == "katana"
    # every holder is listed with when it last saw the entry
    held = res.entry_sources[
        (res.entry_sources["aspect"] == aspect)
        & (res.entry_sources["entry_key"] == both["entry_key"])
    ]
    assert held.set_index("connector")["seen_at"].to_dict() == {
        "exact": T0,
        "katana": T0 + pd.Timedelta(days=1),
    }
    if aspect in NESTED:
        parents = res.entries[res.entries["aspect"] == PARENT_ASPECT[aspect]]
        assert set(mine["parent_key"]) == set(parents["entry_key"])


def test_entry_only_from_steps_that_contribute_the_aspect() -> None:
    entries = _two_systems("addresses")
    steps = [FlowStep("exact", ("addresses",)), FlowStep("katana", ("name",))]
    recs = _records(
        [dict(connector="exact", source_id="e1"), dict(connector="katana", source_id="k1")]
    )
    res = build_golden(
        recs, _idmap([("exact", "e1", "G"), ("katana", "k1", "G")]), steps, entries=entries
    )
    assert list(res.entries["providers"]) == ["exact"]
    assert res.entries.iloc[0]["street"] == "Storgatan 12"


def test_entry_every_source_dropped_leaves_and_is_an_event() -> None:
    steps = [FlowStep("exact", ("addresses",))]
    recs = _records([dict(connector="exact", source_id="e1", last_name="Berg")])
    idmap = _idmap([("exact", "e1", "G")])
    first = build_golden(
        recs, idmap, steps, entries=_two_systems("addresses").query("connector == 'exact'")
    )
    stored, ev1, _ = diff_golden(
        first.golden, pd.DataFrame(), first.provenance, T0, first.entries, None
    )
    assert ev1["field"].tolist() == [CREATED]  # the entry is the record's until it changes
    second = build_golden(recs, idmap, steps, entries=None)
    second_entries = second.entries
    changed, ev2, _ = diff_golden(
        second.golden, stored, second.provenance, T0, second_entries, first.entries
    )
    assert second_entries.empty
    assert list(changed["version"]) == [2]
    removed = ev2[ev2["field"].str.startswith("addresses[")]
    assert len(removed) == 1 and removed["new_value"].isna().all()
    assert "street=Storgatan 12" in removed["old_value"].iloc[0]
    # and the history's first version still shows the entry, from the removal's old value
    history = pd.concat([ev1, ev2], ignore_index=True)
    first_v = first_version(history, changed, second_entries, second.provenance)
    added = first_v[(first_v["version"] == 1) & first_v["field"].str.startswith("addresses[")]
    assert len(added) == 1 and "street=Storgatan 12" in added["new_value"].iloc[0]


# --------------------------------------------------------------------------- consents


def _consent_rows(rows: list[tuple[str, str, str | None, str | None]]) -> pd.DataFrame:
    return _records(
        [
            dict(
                connector=c,
                source_id=s,
                email_consent=v,
                email_consent_at=pd.Timestamp(at, tz="UTC") if at else None,
                updated_at=T0,
            )
            for c, s, v, at in rows
        ]
    )


CONSENT_STEPS = [FlowStep("crm", ("name", "consents")), FlowStep("voyado", ("consents",))]


def test_consent_owner_newest_timestamp_wins_and_non_owner_is_ignored_and_counted() -> None:
    recs = _consent_rows(
        [
            ("voyado", "v1", "yes", "2024-01-01"),
            ("voyado", "v2", "no", "2024-02-01"),  # a duplicate in the owner, newer: wins
            ("crm", "c1", "yes", "2024-03-01"),  # newest of all, but not the owner
        ]
    )
    idmap = _idmap([("voyado", "v1", "G"), ("voyado", "v2", "G"), ("crm", "c1", "G")])
    res = build_golden(recs, idmap, CONSENT_STEPS, ownership={"email_consent": "voyado"})
    row = res.golden.iloc[0]
    assert row["email_consent"] == "no"
    assert row["email_consent_at"] == pd.Timestamp("2024-02-01", tz="UTC")
    assert res.refused["email_consent"] == 1
    assert res.provenance.set_index("field").loc["email_consent", "source_id"] == "v2"


def test_known_consent_never_returns_to_not_set() -> None:
    idmap = _idmap([("voyado", "v1", "G")])
    own = {"email_consent": "voyado"}
    first = build_golden(
        _consent_rows([("voyado", "v1", "yes", "2024-01-01")]), idmap, CONSENT_STEPS, own
    )
    stored, _, _ = diff_golden(first.golden, pd.DataFrame(), first.provenance, T0)
    # the owner stops sending the consent: the stored one stays, with its time
    later = build_golden(
        _consent_rows([("voyado", "v1", None, None)]), idmap, CONSENT_STEPS, own, previous=stored
    )
    assert later.golden.iloc[0]["email_consent"] == "yes"
    assert later.golden.iloc[0]["email_consent_at"] == pd.Timestamp("2024-01-01", tz="UTC")
    changed, _, _ = diff_golden(later.golden, stored, later.provenance, T0)
    assert changed.empty
    # a withdrawal by the owner is a change like any other
    withdrawn = build_golden(
        _consent_rows([("voyado", "v1", "no", "2024-05-01")]),
        idmap,
        CONSENT_STEPS,
        own,
        previous=stored,
    )
    assert withdrawn.golden.iloc[0]["email_consent"] == "no"


def test_a_withdrawal_on_a_deleted_duplicate_stays_withdrawn() -> None:
    """The owner holds two contacts of one person: the newer withdraws consent (golden:
    no). The owner then deletes that duplicate (its consent's record is gone): the older
    contact's "yes" — dated before the withdrawal, or not dated — does not bring it back;
    a newer "yes" from the owner is a change like any other. A consent whose record moved
    to another golden record (a wrong merge split) is that record's, not kept."""
    own = {"email_consent": "voyado"}
    both = _idmap([("voyado", "v1", "G"), ("voyado", "v2", "G")])
    first = build_golden(
        _consent_rows([("voyado", "v1", "yes", "2024-01-01"), ("voyado", "v2", "no", "2024-05-01")]),
        both, CONSENT_STEPS, own,
    )  # fmt: skip
    assert first.golden.iloc[0]["email_consent"] == "no"
    stored, _, _ = diff_golden(first.golden, pd.DataFrame(), first.provenance, T0)
    gone = pd.DataFrame({"golden_id": ["G"], "field": ["email_consent"]})
    one = _idmap([("voyado", "v1", "G")])

    def later(at: str | None, gone_consents: pd.DataFrame | None = gone) -> pd.Series:
        return build_golden(
            _consent_rows([("voyado", "v1", "yes", at)]), one, CONSENT_STEPS, own,
            previous=stored, gone_consents=gone_consents,
        ).golden.iloc[0]  # fmt: skip

    kept = later("2024-01-01")
    assert kept["email_consent"] == "no"
    assert kept["email_consent_at"] == pd.Timestamp("2024-05-01", tz="UTC")
    assert later(None)["email_consent"] == "no"  # an undated "yes" is no newer
    assert later("2024-06-01")["email_consent"] == "yes"
    # v2 moved to another golden record (not deleted): G takes v1's own consent
    assert later("2024-01-01", gone_consents=None)["email_consent"] == "yes"


# --------------------------------------------------------------------------- versions / history


def test_versions_and_events_for_fields_and_entries() -> None:
    steps = [FlowStep("exact", ("name", "addresses"))]
    idmap = _idmap([("exact", "e1", "G")])
    recs = _records([dict(connector="exact", source_id="e1", last_name="Berg")])
    entries = _two_systems("addresses").query("connector == 'exact'")
    r1 = build_golden(recs, idmap, steps, entries=entries)
    s1, ev1, _ = diff_golden(r1.golden, pd.DataFrame(), r1.provenance, T0, r1.entries, None)
    assert list(s1["version"]) == [1]
    # the new record: one event; its first values, field and entry, read back from it
    assert ev1["field"].tolist() == [CREATED]
    first = first_version(ev1, s1, r1.entries, r1.provenance)
    assert set(first["field"].str.replace(r"\[.*", "", regex=True)) == {"last_name", "addresses"}
    assert (first["connector"] == "exact").all() and first["old_value"].isna().all()
    # rerun on the same input: no new version, no event
    s_same, ev_same, _ = diff_golden(r1.golden, s1, r1.provenance, T0, r1.entries, r1.entries)
    assert s_same.empty and ev_same.empty
    # the city of the address changes (not part of its natural key): one changed entry
    moved = entries.assign(city="Solna")
    r2 = build_golden(recs, idmap, steps, entries=moved)
    s2, ev2, _ = diff_golden(r2.golden, s1, r2.provenance, T0, r2.entries, r1.entries)
    assert list(s2["version"]) == [2]
    assert len(ev2) == 1 and "city=Solna" in ev2["new_value"].iloc[0]
    assert "city=Sthlm" in ev2["old_value"].iloc[0]


def test_current_data_source_uses_the_stored_golden_state() -> None:
    plan = SyncPlan(
        connectors={},
        identifiers=(),
        source="current_data",
        steps=(FlowStep("katana", ("customer_attributes",)),),
    )
    stored = pd.DataFrame(
        {"golden_id": ["G"], "last_name": ["Berg"], "version": [3], "record_hash": ["x"]}
    )
    stored_entries = build_golden(
        _records([dict(connector="exact", source_id="e1")]),
        _idmap([("exact", "e1", "G")]),
        [FlowStep("exact", ("addresses",))],
        entries=_two_systems("addresses").query("connector == 'exact'"),
    ).entries
    recs = _records([dict(connector="katana", source_id="k1", last_name="Other")])
    attrs = _two_systems("customer_attributes").query("connector == 'katana'")
    res = merge_golden(plan, recs, _idmap([("katana", "k1", "G")]), attrs, stored, stored_entries)
    row = res.golden.set_index("golden_id").loc["G"]
    assert row["last_name"] == "Berg"  # katana does not give names: the stored one stays
    assert set(res.entries["aspect"]) == {"addresses", "customer_attributes"}
    addr = res.entries[res.entries["aspect"] == "addresses"].iloc[0]
    assert addr["providers"] == "current_data"


# --------------------------------------------------------------------------- checks


def test_check_measures_nameless_records_and_entries_without_provenance() -> None:
    from custsync_pipeline.domain.quality import entries_without_provenance, nameless_golden

    golden = pd.DataFrame(
        {
            "golden_id": ["A", "B", "C"],
            "first_name": [None, "Bo", None],
            "last_name": [None, None, None],
            "company_name": [None, None, "Acme AB"],
        }
    )
    assert nameless_golden(golden).tolist() == [True, False, False]
    steps = [FlowStep("exact", ("addresses",)), FlowStep("katana", ("addresses",))]
    recs = _records(
        [dict(connector="exact", source_id="e1"), dict(connector="katana", source_id="k1")]
    )
    res = build_golden(
        recs,
        _idmap([("exact", "e1", "G"), ("katana", "k1", "G")]),
        steps,
        entries=_two_systems("addresses"),
    )
    assert entries_without_provenance(res.entries, res.entry_sources) == 0
    # an entry whose holders were lost is caught
    lost = res.entry_sources[res.entry_sources["entry_key"] != res.entries["entry_key"].iloc[0]]
    assert entries_without_provenance(res.entries, lost) == 1


def test_checks_count_in_the_state_db_as_on_frames(engine) -> None:
    """The asset checks count in SQL what the domain functions count on frames."""
    from custsync_pipeline.domain.quality import entries_without_provenance, nameless_golden
    from custsync_pipeline.store import core
    from custsync_pipeline.store import golden as golden_store

    steps = [FlowStep("exact", ("name", "addresses")), FlowStep("katana", ("addresses",))]
    recs = _records(
        [
            dict(connector="exact", source_id="e1", first_name="Anna"),
            dict(connector="katana", source_id="k1"),
            dict(connector="katana", source_id="k2"),
        ]
    )
    res = build_golden(
        recs,
        _idmap([("exact", "e1", "G"), ("katana", "k1", "G"), ("katana", "k2", "H")]),
        steps,
        entries=_two_systems("addresses"),
    )
    changed, events, _ = diff_golden(
        res.golden, res.golden.iloc[:0], res.provenance, pd.Timestamp("2026-01-01", tz="UTC")
    )
    core.save_golden_records(engine, changed, events.iloc[:0])
    lost = res.entry_sources[res.entry_sources["entry_key"] != res.entries["entry_key"].iloc[0]]
    golden_store.save_golden_aspects(engine, ["G", "H"], res.entries, lost, res.provenance)
    assert nameless_golden(res.golden).tolist() == [False, True]  # H has no name
    assert golden_store.nameless_count(engine) == (1, 2)
    assert golden_store.entries_without_provenance_count(engine) == 1
    assert entries_without_provenance(res.entries, lost) == 1


def test_an_address_saying_less_than_another_of_the_same_record_leaves() -> None:
    rows = [
        # a shop's city-and-postal-code address beside the CRM's full one
        dict(connector="crm", source_id="c1", aspect="addresses", type="mailing", street="Storgatan 1", postal_code="111 22", country="SE"),
        dict(connector="shop", source_id="s1", aspect="addresses", type="mailing", postal_code="11122", city="Stockholm", country="SE"),
        # the CRM's spare "other" slot holding the ERP's billing address
        dict(connector="erp", source_id="e1", aspect="addresses", type="billing", street="Hamnvägen 3", postal_code="41101", country="SE"),
        dict(connector="crm", source_id="c1", aspect="addresses", type="other", local_id="o", street="HAMNVÄGEN 3", postal_code="411 01", country="SE"),
        # another person whose own "other" address is the same street: kept
        dict(connector="crm", source_id="c2", aspect="addresses", type="other", local_id="o", street="Hamnvägen 3", postal_code="41101", country="SE"),
    ]  # fmt: skip
    steps = [FlowStep(c, ("addresses",)) for c in ("crm", "erp", "shop")]
    recs = _records(
        [dict(connector=r["connector"], source_id=r["source_id"]) for r in rows]
    ).drop_duplicates()
    idmap = _idmap(
        [("crm", "c1", "G"), ("shop", "s1", "G"), ("erp", "e1", "G"), ("crm", "c2", "H")]
    )
    res = build_golden(recs, idmap, steps, entries=_entries(rows))
    mine = res.entries[res.entries["golden_id"] == "G"]
    assert sorted(mine["type"]) == ["billing", "mailing"]
    assert mine["street"].notna().all()
    assert list(res.entries.loc[res.entries["golden_id"] == "H", "type"]) == ["other"]
    assert set(res.entry_sources["golden_id"] + res.entry_sources["entry_key"]) == set(
        res.entries["golden_id"] + res.entries["entry_key"]
    )


def test_one_number_is_one_contact_detail_whether_mobile_or_phone() -> None:
    rows = [
        dict(connector="loyalty", source_id="l1", aspect="customer_contact_details", type="mobile", value="+46701234567"),
        dict(connector="shop", source_id="s1", aspect="customer_contact_details", type="phone", value="070-123 45 67"),
    ]  # fmt: skip
    steps = [FlowStep(c, ("customer_contact_details",)) for c in ("loyalty", "shop")]
    recs = _records(
        [
            dict(connector="loyalty", source_id="l1"),
            dict(connector="shop", source_id="s1", country="SE"),
        ]
    )
    entries = pd.concat(
        [
            check_entries(pd.DataFrame(rows[:1]), "loyalty", pd.Series(["l1"])).valid,
            check_entries(
                pd.DataFrame(rows[1:]), "shop", pd.Series(["s1"]), pd.Series({"s1": "SE"})
            ).valid,
        ]
    )
    res = build_golden(
        recs, _idmap([("loyalty", "l1", "G"), ("shop", "s1", "G")]), steps, entries=entries
    )
    assert len(res.entries) == 1
    assert res.entries.iloc[0]["providers"] == "loyalty,shop"


def test_field_origins_are_stored_per_source_and_read_back_per_field(engine) -> None:
    """Which record gave each golden field: one stored row per golden record and source
    (a record's fields mostly come from one or two), read back one row per field."""
    import sqlalchemy as sa

    from custsync_pipeline.store import golden as golden_store
    from custsync_pipeline.store.db import StateDB

    steps = [FlowStep("exact", ("name",)), FlowStep("crm", ("name", "customer_contact_details"))]
    recs = _records(
        [
            dict(connector="exact", source_id="e1", first_name="Anna", last_name="Berg"),
            dict(connector="crm", source_id="c1", email="anna@x.se", phone="+46701234567"),
            dict(connector="crm", source_id="c2", first_name="Bo", email="bo@x.se"),
        ]
    )
    res = build_golden(
        recs, _idmap([("exact", "e1", "G"), ("crm", "c1", "G"), ("crm", "c2", "H")]), steps
    )
    golden_store.save_golden_aspects(engine, ["G", "H"], res.entries, None, res.provenance)
    with engine.connect() as conn:
        stored = conn.execute(sa.select(golden_store.golden_field_origins)).all()
    assert len(stored) == 3  # (G, exact, e1), (G, crm, c1), (H, crm, c2)
    for gid in ("G", "H"):
        fields, _ = golden_store.golden_sources(engine, gid)
        want = res.provenance[res.provenance["golden_id"] == gid]
        got = {(r.field, r.connector, r.source_id) for r in fields.itertuples(index=False)}
        assert got == set(zip(want["field"], want["connector"], want["source_id"], strict=True))
    assert {("first_name", "exact", "e1"), ("email", "crm", "c1")} <= {
        (r.field, r.connector, r.source_id)
        for r in golden_store.golden_sources(engine, "G")[0].itertuples(index=False)
    }
    # the per-field table of an older release is dropped when the state DB is brought up
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE golden_field_sources (golden_id TEXT)"))
    StateDB(engine.url.render_as_string(hide_password=False)).create_all()
    assert "golden_field_sources" not in sa.inspect(engine).get_table_names()


@pytest.mark.parametrize("fields", [5, 62, 100])
def test_field_origins_spell_each_sources_fields_sorted(fields: int) -> None:
    """One row per golden id and source with its fields sorted and comma-separated — by
    bit sets up to 62 field names, by a sort beyond (both paths, one answer; bits past
    the 64th would spell fields a source never gave)."""
    import numpy as np

    from custsync_pipeline.store.golden import field_origins

    rng = np.random.default_rng(fields)
    n = 400 if fields > 62 else 4_000  # sparse: no source gives every field
    names = [f"f{i:02d}" for i in range(fields)]
    rows = pd.DataFrame(
        {
            "golden_id": rng.choice(["G1", "G2", "G3"], n),
            "field": rng.choice(names, n),
            "connector": rng.choice(["crm", "shop"], n),
            "source_id": rng.choice(["a", "b", "c", "d"], n),
        }
    ).drop_duplicates()
    got = field_origins(rows)
    key = ["golden_id", "connector", "source_id"]
    want = (
        rows.sort_values("field").groupby(key)["field"].agg(",".join).rename("fields").reset_index()
    )
    got = got.astype(str).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want.astype(str), check_dtype=False)
    assert got["fields"].str.count(",").max() >= min(fields, 5) - 1


def test_the_flat_address_comes_whole_from_the_record_that_wins_it() -> None:
    """Salesforce (the source) holds Nya Gatan 1, 41101 Göteborg; Voucherify, a later
    addresses step, holds Malmö 211 22 with no street: never Göteborg's street in Malmö —
    and a later step's partial address does not take a whole one away: Salesforce's wins
    whole. Where the later step holds a street, its address wins whole. Where no record
    holds a street, the later step's parts win."""
    steps = [FlowStep("crm", ("name", "addresses")), FlowStep("vf", ("name", "addresses"))]
    recs = _records(
        [
            dict(connector="crm", source_id="c1", street="Nya Gatan 1", postal_code="41101",
                 city="Göteborg", updated_at=T0),
            dict(connector="vf", source_id="v1", postal_code="211 22", city="Malmö",
                 updated_at=T0),
            dict(connector="crm", source_id="c2", street="Storgatan 2", postal_code="11122",
                 city="Stockholm", updated_at=T0),
            dict(connector="vf", source_id="v2", street="Lilla torg 3", city="Lund",
                 updated_at=T0),
            dict(connector="crm", source_id="c3", city="Umeå", updated_at=T0),
            dict(connector="vf", source_id="v3", postal_code="90326", updated_at=T0),
        ]
    )  # fmt: skip
    idmap = _idmap(
        [("crm", "c1", "G1"), ("vf", "v1", "G1"), ("crm", "c2", "G2"), ("vf", "v2", "G2"),
         ("crm", "c3", "G3"), ("vf", "v3", "G3")]
    )  # fmt: skip
    res = build_golden(recs, idmap, steps)
    got = res.golden.set_index("golden_id")[["street", "postal_code", "city"]]
    got = got.astype(object).where(got.notna(), None)
    assert got.loc["G1"].tolist() == ["Nya Gatan 1", "41101", "Göteborg"]
    assert got.loc["G2"].tolist() == ["Lilla torg 3", None, "Lund"]
    assert got.loc["G3"].tolist() == [None, "90326", None]
    prov = res.provenance.set_index(["golden_id", "field"])["source_id"]
    assert prov.loc[("G1", "city")] == "c1" and prov.loc[("G2", "street")] == "v2"
    assert ("G2", "postal_code") not in prov.index
