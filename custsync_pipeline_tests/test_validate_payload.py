"""The full per-connector payload model (``schemas.PAYLOAD_SCHEMAS``) applied in validation.

Every column of the vendor's model is checked lazily: a bad id or object type
rejects the record; a bad value elsewhere (over the vendor's length limit, a
timestamp not in the API's format, a malformed reference) drops only the
canonical value it maps to, or is recorded under ``payload.<column>``. The
large-frame path (once per distinct value) must find exactly what the plain
path finds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.domain.normalize import normalize_customers
from custsync_pipeline.domain.validate import payload_failures, validate_customers

NOW = pd.Timestamp("2026-06-01T00:00:00Z")
GOOD_TS = "2026-01-22T23:50:36.000+0000"


def _sf_contacts(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "attributes.type": "Contact",
            "Id": [f"003Hp{i:010d}IAA" for i in range(n)],
            "FirstName": "Anna",
            "LastName": [f"Berg{i}" for i in range(n)],
            "Email": [f"anna{i}@gmail.com" for i in range(n)],
            "LastModifiedDate": GOOD_TS,
            "CreatedDate": GOOD_TS,
        }
    )


def _canonical(raw: pd.DataFrame) -> pd.DataFrame:
    return normalize_customers(
        conform(
            pd.DataFrame(
                {
                    "connector": "crm",
                    "source_id": raw["Id"],
                    "first_name": raw["FirstName"],
                    "last_name": raw["LastName"],
                    "email": raw["Email"],
                    "updated_at": pd.to_datetime(
                        raw["LastModifiedDate"], utc=True, errors="coerce", format="mixed"
                    ),
                }
            )
        )
    )


def test_every_payload_column_is_checked_and_mapped_to_its_field() -> None:
    raw = _sf_contacts(4)
    raw.loc[0, "FirstName"] = "A" * 41  # Salesforce FirstName holds 40
    raw.loc[1, "LastModifiedDate"] = "22/01/2026 10:00"  # not the API's format
    raw.loc[2, "Id"] = "001Hp0000000001IAA"  # an Account id in the Contact feed
    raw.loc[3, "Custsync_Id__c"] = "G" * 300  # lazy: also the 4th row's own failure
    res = validate_customers(_canonical(raw), "crm", raw, connector_type="salesforce", now=NOW)
    rej = res.rejected.set_index("source_id")
    first = rej.loc[raw.loc[0, "Id"]]
    assert (first["field"], first["check"], first["severity"]) == (
        "first_name",
        "max_length",
        "field",
    )
    assert "(payload FirstName)" in first["reason"] and "A" * 41 not in first["reason"]
    second = rej.loc[raw.loc[1, "Id"]]
    assert (second["field"], second["check"]) == ("updated_at", "api_timestamp")
    third = rej.loc[[raw.loc[2, "Id"]]]
    assert list(third["check"]) == ["salesforce_id"] and (third["severity"] == "row").all()
    fourth = rej.loc[raw.loc[3, "Id"]]
    assert (fourth["field"], fourth["check"]) == ("custsync_id", "max_length")
    # field failures keep the record and drop only that value; the bad id drops the record
    valid = res.valid.set_index("source_id")
    assert raw.loc[2, "Id"] not in valid.index and len(valid) == 3
    assert pd.isna(valid.loc[raw.loc[0, "Id"], "first_name"])
    assert pd.isna(valid.loc[raw.loc[1, "Id"], "updated_at"])
    assert valid.loc[raw.loc[0, "Id"], "last_name"] == "Berg0"


def test_unmapped_payload_column_is_recorded_masked_and_nothing_is_dropped() -> None:
    raw = pd.DataFrame(
        {
            "__resource": "Contacts",
            "ID": ["3f2504e0-4f89-11d3-9a0c-0305e82c3301", "3f2504e0-4f89-11d3-9a0c-0305e82c3302"],
            "Account": ["not-a-guid-anna.berg", "3f2504e0-4f89-11d3-9a0c-0305e82c3399"],
            "Modified": ["/Date(1767225600000)/", "/Date(1767225600000)/"],
        }
    )
    frame = normalize_customers(
        conform(pd.DataFrame({"source_id": raw["ID"], "last_name": ["Berg", "Lind"]}))
    )
    res = validate_customers(frame, "erp", raw, connector_type="exact", now=NOW)
    assert len(res.valid) == 2
    row = res.rejected.iloc[0]
    assert (row["field"], row["check"], row["severity"]) == (
        "payload.Account",
        "exact_account_id",
        "field",
    )
    assert "anna" not in row["reason"]  # a vendor column without a mapping is masked


def test_wrong_object_type_rejects_the_record() -> None:
    raw = pd.DataFrame(
        {
            "id": ["cust_abcdefgh1", "cust_abcdefgh2"],
            "source_id": ["s1", "s2"],
            "email": ["a@x.se", "b@x.se"],
            "object": ["customer", "voucher"],
        }
    )
    frame = normalize_customers(
        conform(pd.DataFrame({"source_id": raw["id"], "email": raw["email"]}))
    )
    res = validate_customers(frame, "vf_eu", raw, connector_type="voucherify", now=NOW)
    assert list(res.valid["source_id"]) == ["cust_abcdefgh1"]
    assert list(res.rejected["check"]) == ["object_type"]


def test_large_path_finds_exactly_what_the_small_path_finds() -> None:
    rng = np.random.default_rng(3)
    n = 12_000  # above the once-per-distinct-value threshold
    raw = _sf_contacts(n)
    bad_name = rng.random(n) < 0.01
    bad_ts = rng.random(n) < 0.01
    bad_id = rng.random(n) < 0.01
    raw.loc[bad_name, "FirstName"] = "B" * 50
    raw.loc[bad_ts, "LastModifiedDate"] = "yesterday"
    raw.loc[bad_id, "Id"] = "xyz"
    big = payload_failures(raw, "salesforce")
    # the same rows validated in chunks small enough for the plain path
    parts = []
    for start in range(0, n, 3000):
        chunk = raw.iloc[start : start + 3000].reset_index(drop=True)
        part = payload_failures(chunk, "salesforce")
        parts.append(part.assign(pos=part["pos"] + start))
    small = pd.concat(parts, ignore_index=True)

    def as_set(frame: pd.DataFrame) -> set[tuple]:
        return set(map(tuple, frame[["pos", "column", "check", "severity", "field"]].to_numpy()))

    assert as_set(big) == as_set(small)
    expected = int(bad_name.sum() + bad_ts.sum() + bad_id.sum())
    assert len(big) == expected
    assert set(big.loc[big["column"] == "Id", "pos"]) == set(np.flatnonzero(bad_id))
