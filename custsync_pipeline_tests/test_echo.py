"""Echo safety (issue 10 item 4): what custsync wrote to a target and reads back is not
fresh evidence, and a target's single name field is read as a full name.

- domain: ``echoed_fields`` flags exactly the values written; ``keep_spelling`` keeps a
  golden entry whose new values differ only in case and spacing;
- Voucherify's ``name`` goes through the name parser: ``"Jensen"`` alone is a surname,
  ``"van der Berg, Anna"`` splits right;
- over sockets, Salesforce and Voucherify of ``CUSTSYNC_ECHO_PEOPLE`` people (default
  5,000): after the first run has filled the targets, consecutive runs with no source
  change (the first of them reads back what custsync wrote) move no golden id, change no
  golden record and send no write; a Contact's two address slots keep a duplicate's own
  entries (``member_views``), so no write takes away the only copy of an address.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pandas as pd

from custsync_pipeline.config import ConnectorConfig
from custsync_pipeline.connectors.salesforce import SalesforceConnector
from custsync_pipeline.connectors.voucherify import VoucherifyConnector
from custsync_pipeline.defs.golden.echo import acked_writes, read_payloads
from custsync_pipeline.domain.aspects import ENTRY_COLUMNS
from custsync_pipeline.domain.echo import (
    echoed_fields,
    held_before,
    keep_spelling,
    names_as_held,
    own_word,
)
from custsync_pipeline.sandbox.server import Sandbox
from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests.e2e import (
    SANDBOX_SECRETS,
    materialize_all,
    metadata_of,
    run_against_sandbox,
)

PEOPLE = int(os.environ.get("CUSTSYNC_ECHO_PEOPLE", "5000"))


def test_echoed_fields_are_the_written_values_only():
    records = pd.DataFrame(
        {
            "connector": ["voucherify", "voucherify", "salesforce"],
            "source_id": ["c1", "c2", "003A"],
            "postal_code": ["411 52", "11122", "411 52"],
            "last_name": ["Sara", "Berg", "Sara"],
        }
    )
    written = pd.DataFrame(
        {
            "connector": ["voucherify", "voucherify"],
            "source_id": ["c1", "c2"],
            "postal_code": ["411  52", "99999"],  # c2 was edited there since: not an echo
            "last_name": ["Sara", None],
        }
    )
    echoed = echoed_fields(records, written, ["postal_code", "last_name"])
    assert echoed.values.tolist() == [[True, True], [False, False], [False, False]]
    written["created"] = [True, True]  # records custsync created: an echo is left out
    clean, _, n = own_word(
        records, pd.DataFrame(), written, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(),
        ["postal_code", "last_name"],
    )  # fmt: skip
    assert clean["postal_code"].tolist() == [None, "11122", "411 52"] and n == 2


def _voucherify() -> VoucherifyConnector:
    """A Voucherify connector for reading payloads (it never connects)."""
    return VoucherifyConnector(
        "voucherify",
        ConnectorConfig(type="voucherify", base_url="http://127.0.0.1:9",
                        credentials={"app_id": "A", "app_token": "T"}),
        {"A": "x", "T": "y"},
    )  # fmt: skip


def _addresses(rows: list[tuple]) -> pd.DataFrame:
    """Address entries (connector, source_id, slot, street, city)."""
    frame = pd.DataFrame(
        [
            {"connector": c, "source_id": s, "aspect": "addresses", "local_id": slot,
             "type": slot, "street": street, "city": city, "entry_key": f"{slot}:{street}"}
            for c, s, slot, street, city in rows
        ]
    )  # fmt: skip
    return frame.reindex(columns=list(ENTRY_COLUMNS))


def _round_trip(own, own_entries, sent, sent_entries, read_back, read_entries, fields):
    """What the golden step sees of ``read_back`` after custsync updated ``own`` with
    ``sent`` (the held values stored with the update as the outbox does)."""
    held, held_entries = held_before(own, own_entries, sent, sent_entries, fields)
    sent = sent.assign(created=False)
    return own_word(read_back, read_entries, sent, sent_entries, held, held_entries, fields)


def test_an_updated_record_read_back_as_written_keeps_its_own_word():
    """Three echoes of writes to records custsync did not create (seen at 50,000 people):
    a name written to Voucherify's single field and parsed back as a surname, a
    duplicate's second address moved to the Other slot by the golden primary one, and an
    address given to a twin whose own was quarantined. Each is the record's word as it
    was before the write; a hand edit after the write is the record's word."""
    fields = ["first_name", "last_name", "city"]
    t0, t1 = pd.Timestamp("2026-01-01", tz="UTC"), pd.Timestamp("2026-12-04", tz="UTC")
    own = pd.DataFrame(
        {"connector": ["voucherify", "salesforce", "voucherify"],
         "source_id": ["v1", "s2", "v3"],
         "first_name": [None, "Mikael", "Julia"], "last_name": [None, "Eriksson", "Ek"],
         "city": ["Uppsala", "København", None], "updated_at": [t0, t0, t0]}
    )  # fmt: skip
    # written: the golden values; Voucherify's "Mikael" reads back as a surname
    sent = own.drop(columns="updated_at").assign(
        first_name=[None, "Mikael", "Julia"], last_name=["Mikael", "Eriksson", "Ek"],
        city=["Uppsala", "København", "Aarhus"],
    )  # fmt: skip
    own_entries = _addresses(
        [("salesforce", "s2", "mailing", "Main Street 70", "Göteborg")]  # its only address
    )
    sent_entries = _addresses(
        [
            ("salesforce", "s2", "mailing", "Storgatan 93", "København"),  # golden primary
            ("salesforce", "s2", "other", "Main Street 70", "Göteborg"),  # its own, moved
            ("voucherify", "v3", "address", None, "Aarhus"),  # the twin's was quarantined
        ]
    )
    read_back = sent.assign(updated_at=[t1, t1, t1])
    records, entries, n = _round_trip(
        own, own_entries, sent, sent_entries, read_back, sent_entries, fields
    )
    assert records["last_name"].tolist()[0] is None  # not "Mikael Mikael"
    assert records["city"].tolist() == ["Uppsala", "København", None]
    assert records["updated_at"].tolist() == [t0, t0, t0]  # as recent as before the write
    assert entries[["source_id", "local_id", "street"]].values.tolist() == [
        ["s2", "mailing", "Main Street 70"]  # in its own slot, as it held it
    ]
    assert n == 2 + 3  # the surname and the twin's city; three entries

    # edited there after the write: the record's own word, and as recent as it is
    edited = read_back.assign(last_name=["Schmidt", "Eriksson", "Ek"])
    edited_entries = sent_entries.copy()
    edited_entries.loc[1, "street"] = "Main Street 72"
    records, entries, _ = _round_trip(
        own, own_entries, sent, sent_entries, edited, edited_entries, fields
    )
    assert records["last_name"].tolist()[0] == "Schmidt"
    assert records["updated_at"].tolist()[0] == t1
    assert sorted(entries["street"].dropna()) == ["Main Street 70", "Main Street 72"]

    # a field the write did not send, edited there since: fresh, as recent as it is
    fields = [*fields, "company_name"]
    own, sent = own.assign(company_name=None), sent.assign(company_name=None)
    edited = read_back.assign(company_name=[None, "Acme (edited)", None])
    records, _, _ = _round_trip(own, own_entries, sent, sent_entries, edited, sent_entries, fields)
    assert records["updated_at"].tolist() == [t0, t1, t0]


def test_a_value_the_update_did_not_change_stays_the_records_word():
    """A record whose own value custsync wrote back unchanged (beside another field it
    changed) keeps it: taking it out would drop the only copy of the value, and the
    next run would write it again."""
    fields = ["phone", "city"]
    own = pd.DataFrame(
        {"connector": ["salesforce"], "source_id": ["s1"], "phone": ["+4670123"],
         "city": ["Lund"]}
    )  # fmt: skip
    sent = own.assign(city=["Malmö"])
    records, _, _ = _round_trip(
        own, pd.DataFrame(), sent, pd.DataFrame(), sent, pd.DataFrame(), fields
    )
    assert records["phone"].tolist() == ["+4670123"]  # its own, written back as it was
    assert records["city"].tolist() == ["Lund"]  # the write's echo: what it held


def test_a_write_waiting_to_be_sent_leaves_the_acknowledged_one_in_force():
    """While a newer update of a record waits (the target is down), the target still holds
    the last acknowledged payload: that, and what the record held before it, is what its
    read-back is compared with."""
    conn = _voucherify()
    box = pd.DataFrame(
        {"target": ["voucherify"], "entity_key": ["c1"], "golden_id": ["G1"],
         "target_id": ["c1"], "op": ["upsert"], "status": ["failed"],
         "payload": ['{"name": "Sara Lind"}'], "payload_hash": ["h2"], "held": [None],
         "acked_hash": ["h1"], "acked_payload": ['{"name": "Sara Berg"}'],
         "acked_held": ['{"fields": {"last_name": "Ek"}}'],
         "updated_at": [pd.Timestamp("2026-12-04", tz="UTC")]}
    )  # fmt: skip
    written, _, held, _ = acked_writes(box, conn, "voucherify")
    assert written["last_name"].tolist() == ["Berg"] and not written["created"].iloc[0]
    assert held[["field", "value"]].values.tolist() == [["last_name", "Ek"]]


def _salesforce(**options) -> SalesforceConnector:
    """A Salesforce connector for reading payloads (it never connects)."""
    return SalesforceConnector(
        "salesforce",
        ConnectorConfig(type="salesforce", base_url="http://127.0.0.1:9",
                        credentials={"access_token": "SF_T"}, options=options),
        {"SF_T": "x"},
    )  # fmt: skip


def test_payloads_read_back_as_the_written_object():
    """With Accounts read beside Contacts, a payload written to a Contact reads back as one
    (a payload names no type; read as an Account its names and address were lost, and
    with them echo safety and the withdrawal of values custsync wrote)."""
    sf = _salesforce(objects=["Account", "Contact"], write_object="Contact")
    payload = {"FirstName": "Åsa", "LastName": "Berg", "MailingCity": "Lund"}
    canon, entries = read_payloads(sf, "salesforce", [json.dumps(payload)], ["003A"])
    assert canon[["object_type", "kind", "first_name", "last_name"]].values.tolist() == [
        ["Contact", "person", "Åsa", "Berg"]
    ]
    assert entries.loc[entries["aspect"] == "addresses", "city"].tolist() == ["Lund"]


def test_lifting_an_opt_out_is_an_echo_through_what_an_empty_consent_holds():
    """custsync lifts its own opt-out on a Contact (golden consent back to yes): the payload
    sends HasOptedOutOfEmail=false, which Salesforce reads back as no consent at all. That
    is the write's echo: the Contact keeps its word from before the write (the opt-out)
    and its time, so it does not beat a twin Contact with the write's time. A payload
    that leaves the flag out sends no consent."""
    sf = _salesforce()
    assert sf.empty_reads_as == {"email_consent": "yes"}
    fields = ["first_name", "email_consent"]
    t0, t1 = pd.Timestamp("2026-01-01", tz="UTC"), pd.Timestamp("2026-12-04", tz="UTC")
    before = pd.DataFrame(
        {"connector": "salesforce", "source_id": ["003A", "003B"], "first_name": ["Åsaa", "Ola"],
         "email_consent": ["no", None], "updated_at": [t0, t0]}
    )  # fmt: skip
    payloads = [
        json.dumps({"FirstName": "Åsa", "HasOptedOutOfEmail": False}),
        json.dumps({"FirstName": "Olle"}),  # no consent sent
    ]
    sent, _ = read_payloads(sf, "salesforce", payloads, ["003A", "003B"])
    assert sent["email_consent"].tolist()[0] == "yes" and pd.isna(sent["email_consent"][1])
    reads_as = {"salesforce": sf.empty_reads_as}
    held, _ = held_before(before, pd.DataFrame(), sent, pd.DataFrame(), fields, reads_as)
    changed = held[held["field"].isin(fields)]
    assert sorted(zip(changed["source_id"], changed["field"], strict=True)) == [
        ("003A", "email_consent"), ("003A", "first_name"), ("003B", "first_name")
    ]  # fmt: skip
    after = before.assign(first_name=["Åsa", "Olle"], email_consent=[None, None])
    after["updated_at"] = [t1, t1]
    own, _, n = own_word(
        after, pd.DataFrame(), sent.assign(created=False), pd.DataFrame(), held, pd.DataFrame(),
        fields, reads_as,
    )  # fmt: skip
    assert own["first_name"].tolist() == ["Åsaa", "Ola"]
    assert own["email_consent"].tolist()[0] == "no" and pd.isna(own["email_consent"][1])
    assert own["updated_at"].tolist() == [t0, t0] and n == 3
    # an opt-out made in Salesforce after the write is the Contact's own, and fresh
    edited = after.assign(email_consent=[None, "no"])
    own, _, _ = own_word(
        edited, pd.DataFrame(), sent.assign(created=False), pd.DataFrame(), held, pd.DataFrame(),
        fields, reads_as,
    )  # fmt: skip
    assert own["email_consent"].tolist() == ["no", "no"]
    assert own["updated_at"].tolist() == [t0, t1]
    # what an update stored before consents were compared this way (no ``reads_as``) still
    # restores the time of a Contact its payload sent no consent
    legacy, _ = held_before(before, pd.DataFrame(), sent, pd.DataFrame(), fields)
    own, _, _ = own_word(
        after, pd.DataFrame(), sent.assign(created=False), pd.DataFrame(), legacy,
        pd.DataFrame(), fields, reads_as,
    )  # fmt: skip
    assert own["updated_at"].tolist()[1] == t0
    # a Contact custsync created reads back empty as written: nothing is set aside
    _, _, n = own_word(
        after.iloc[[0]], pd.DataFrame(), sent.iloc[[0]].assign(created=True), pd.DataFrame(),
        held, pd.DataFrame(), ["email_consent"], reads_as,
    )  # fmt: skip
    assert n == 0


def test_keep_spelling_holds_the_previous_entry_values():
    prev = pd.DataFrame(
        {"golden_id": ["G1"], "entry_key": ["k"], "aspect": ["addresses"],
         "street": ["KUNGSVÄGEN 87"], "postal_code": ["41152"], "city": ["Göteborg"]}
    )  # fmt: skip
    new = prev.assign(postal_code=["411 52"], street=["Kungsvägen 87"])
    kept = keep_spelling(new, prev)
    assert kept[["street", "postal_code"]].values.tolist() == [["KUNGSVÄGEN 87", "41152"]]
    moved = prev.assign(postal_code=["41153"])
    assert keep_spelling(moved, prev)["postal_code"].tolist() == ["41153"]
    # among many: the unchanged stay, the respelt take the old spelling, the rest move
    many_prev = pd.DataFrame(
        {"golden_id": ["G1", "G2", "G3"], "entry_key": ["k", "k", "k"],
         "aspect": ["addresses"] * 3, "street": ["A 1", "B 2", "C 3"],
         "postal_code": ["111 22", None, "33344"], "city": ["Lund", "Umeå", "Visby"]}
    )  # fmt: skip
    many_new = pd.DataFrame(
        {"golden_id": ["G1", "G2", "G3", "G4"], "entry_key": ["k"] * 4,
         "aspect": ["addresses"] * 4, "street": ["A 1", "b  2", "C 3", "D 4"],
         "postal_code": ["111 22", None, "33345", "44455"], "city": ["Lund", "UMEÅ", "Visby", "Ed"]}
    )  # fmt: skip
    got = keep_spelling(many_new, many_prev)
    assert got["street"].tolist() == ["A 1", "B 2", "C 3", "D 4"]
    assert got["city"].tolist() == ["Lund", "Umeå", "Visby", "Ed"]
    assert got["postal_code"].tolist()[2:] == ["33345", "44455"]


def test_voucherify_name_is_read_as_a_full_name():
    conn = _voucherify()
    raw = pd.DataFrame(
        {
            "id": ["c1", "c2", "c3"],
            "name": ["Jensen", "van der Berg, Anna", "Sara Ström"],
            "created_at": ["2024-01-01T00:00:00Z"] * 3,
        }
    )
    canon = conn.to_canonical(raw)
    assert canon["first_name"].tolist()[1:] == ["Anna", "Sara"]
    assert pd.isna(canon["first_name"].iloc[0])
    assert canon["last_name"].tolist() == ["Jensen", "van der Berg", "Ström"]


def test_no_source_change_no_golden_change_no_write(dagster_env, tmp_path: Path):
    for k, v in SANDBOX_SECRETS.items():
        dagster_env.setenv(k, v)
    with Sandbox(seed=7, people=PEOPLE, base_port=0, systems=["salesforce", "voucherify"]) as sb:
        db_url, _ = run_against_sandbox(
            dagster_env, tmp_path, sb.urls, enabled={"salesforce", "voucherify"}
        )
        with dg.DagsterInstance.ephemeral() as instance:
            assert materialize_all(instance).success  # the first sync fills the targets
            engine = StateDB(db_url).engine
            ids = pd.read_sql("select connector, source_id, golden_id from identity_map", engine)
            for run in (2, 3):  # the first reads back what it wrote: no change either
                again = materialize_all(instance)
                assert again.success
                golden = metadata_of(again, "golden_customers")
                assert golden["changed_records"] == 0, golden
                assert golden["retired_ids"] == 0
                for t in ("salesforce", "voucherify"):
                    assert metadata_of(again, f"{t}/outbound_deltas")["dagster/row_count"] == 0, t
                    assert metadata_of(again, f"{t}/published")["published"] == 0, t
                now = pd.read_sql(
                    "select connector, source_id, golden_id from identity_map", engine
                )
                both = ids.merge(now, on=["connector", "source_id"], suffixes=("_a", "_b"))
                assert len(both) == len(ids), "a record left the map"
                assert (both["golden_id_a"] == both["golden_id_b"]).all(), "a golden id moved"
                if run == 3:  # the records custsync created joined in run 2, and stay
                    assert len(now) == len(ids)
                ids = now
            engine.dispose()


def test_a_single_name_field_compares_as_the_golden_split():
    members = pd.DataFrame(
        {"golden_id": ["G1", "G2"], "source_id": ["a", "b"], "full_name": ["Sara", "Anna Berg"],
         "first_name": [None, "Anna"], "last_name": ["Sara", "Berg"]}
    )  # fmt: skip
    golden = pd.DataFrame(
        {"golden_id": ["G1", "G2"], "first_name": ["Sara", "Anna"], "last_name": [None, "Lind"]}
    )
    held = names_as_held(members, golden)
    assert held["first_name"].tolist() == ["Sara", "Anna"]
    assert pd.isna(held["last_name"].iloc[0]) and held["last_name"].iloc[1] == "Berg"
