"""Unit tests of domain.validate: the row/field policy, reasons, raw payloads, shape errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from custsync_pipeline.domain.canonical import VALIDATED_COLUMNS, conform
from custsync_pipeline.domain.normalize import normalize_customers
from custsync_pipeline.domain.validate import REJECTED_COLUMNS, SchemaShapeError, validate_customers

NOW = pd.Timestamp("2026-06-01T00:00:00Z")


def _prep(**cols: list) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    cols.setdefault(
        "last_name", ["Berg"] * n
    )  # a record must name someone (tested on its own below)
    return normalize_customers(conform(pd.DataFrame(cols)))


def _rej(result, field: str) -> pd.DataFrame:  # noqa: ANN001
    return result.rejected[result.rejected["field"] == field]


def test_clean_rows_pass_untouched() -> None:
    frame = _prep(
        source_id=["a", "b"],
        email=["a@x.se", "b@x.se"],
        phone=["+46701234567", None],
        country=["SE", "SE"],
    )
    res = validate_customers(frame, "voyado", now=NOW)
    assert len(res.valid) == 2 and len(res.rejected) == 0
    assert list(res.valid.columns) == list(VALIDATED_COLUMNS)
    assert res.valid["connector"].tolist() == ["voyado", "voyado"]
    assert res.valid_rate == 1.0


def test_bad_email_keeps_record_nulls_field_with_reason() -> None:
    frame = _prep(source_id=["a", "b"], email=["anna@", "b@x.se"], first_name=["Anna", "Bo"])
    res = validate_customers(frame, "voyado", now=NOW)
    assert res.valid["source_id"].tolist() == ["a", "b"]  # nothing good lost
    assert pd.isna(res.valid["email"].iloc[0]) and res.valid["email_raw"].iloc[0] == "anna@"
    rej = _rej(res, "email")
    assert rej[["source_id", "check", "severity"]].values.tolist() == [
        ["a", "email_syntax", "field"]
    ]
    reason = rej["reason"].iloc[0]
    assert "@-sign" in reason and "anna@" not in reason  # library's reason, address masked


def test_bad_phone_and_country_field_level() -> None:
    frame = _prep(source_id=["a", "b"], phone=["12", "070-123 45 67"], country=["Atlantis", "SE"])
    res = validate_customers(frame, "exact", now=NOW)
    assert len(res.valid) == 2
    assert pd.isna(res.valid["country"].iloc[0]) and pd.isna(res.valid["phone"].iloc[0])
    assert res.valid["phone"].iloc[1] == "+46701234567"
    checks = set(zip(res.rejected["field"], res.rejected["check"], strict=True))
    assert checks == {("phone", "e164"), ("country", "iso_country")}
    assert (res.rejected["severity"] == "field").all()
    assert res.rejected["reason"].str.len().gt(10).all()


def test_missing_source_id_rejects_row() -> None:
    frame = _prep(source_id=["a", None, "  "], email=["a@x.se", "b@x.se", "c@x.se"])
    res = validate_customers(frame, "voucherify", now=NOW)
    assert res.valid["source_id"].tolist() == ["a"]
    rows = res.rejected[res.rejected["severity"] == "row"]
    assert len(rows) == 2 and set(rows["check"]) == {"not_null"}
    assert res.rows_rejected == 1 or res.rows_rejected == 2  # both have NA source ids
    assert res.valid_rate == pytest.approx(1 / 3)


def test_duplicate_source_id_keeps_newest() -> None:
    frame = _prep(
        source_id=["a", "a", "b"],
        updated_at=["2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "2024-01-01T00:00:00Z"],
        first_name=["Old", "New", "Bo"],
    )
    res = validate_customers(frame, "voyado", now=NOW)
    assert res.valid.sort_values("source_id")["first_name"].tolist() == ["New", "Bo"]
    dup = res.rejected[res.rejected["check"] == "unique_source_id"]
    assert len(dup) == 1 and dup["severity"].iloc[0] == "row"
    assert "Old" in dup["raw_payload"].iloc[0]


def test_timestamps_out_of_range_are_nulled() -> None:
    frame = conform(pd.DataFrame({"source_id": ["a", "b", "c"], "last_name": ["Ek"] * 3}))
    frame = normalize_customers(frame)
    frame["updated_at"] = ["2030-01-01T00:00:00Z", "1850-01-01T00:00:00Z", "9999-12-31T00:00:00Z"]
    res = validate_customers(frame, "voyado", now=NOW)
    assert len(res.valid) == 3 and res.valid["updated_at"].isna().all()
    assert sorted(res.rejected["check"]) == ["not_before_1900", "not_in_future", "timestamp"]


def test_formula_injection_and_long_text() -> None:
    frame = _prep(
        source_id=["a", "b", "c"],
        first_name=["=cmd|' /C calc'!A0", "x" * 10_000, "Robert'); DROP TABLE x;--"],
    )
    res = validate_customers(frame, "voyado", now=NOW)
    assert len(res.valid) == 3
    assert pd.isna(res.valid["first_name"].iloc[0]) and pd.isna(res.valid["first_name"].iloc[1])
    # SQL text is just a (strange) name: parameterized SQL stores it harmlessly
    assert res.valid["first_name"].iloc[2] == "Robert'); DROP TABLE x;--"
    assert sorted(res.rejected["check"]) == ["max_length", "no_formula"]
    assert all(len(r) < 300 for r in res.rejected["reason"])


def test_raw_payload_is_vendor_row_json_aligned_by_position() -> None:
    v1, v2 = "cust_" + "a" * 24, "cust_" + "b" * 24
    raw = pd.DataFrame(
        {"id": [v1, v2], "source_id": ["s1", "s2"], "email": ["ok@x.se", "broken"]},
        index=[7, 3],
    )
    frame = _prep(source_id=raw["id"].tolist(), email=raw["email"].tolist())
    res = validate_customers(frame, "voucherify", raw)
    assert len(res.rejected) == 1
    assert list(res.rejected.columns) == list(REJECTED_COLUMNS)
    assert json.loads(res.rejected["raw_payload"].iloc[0]) == {
        "id": v2,
        "source_id": "s2",
        "email": "broken",
    }
    assert res.rejected_positions.tolist() == [1] and res.valid_positions.tolist() == [0, 1]


def test_vendor_id_format_rejects_the_record() -> None:
    ids = ["003Hp0000000001IAA", "003Hp0000000002", "001Hp0000000003IAA", "not-an-id"]
    raw = pd.DataFrame(
        {
            "Id": ids,
            "attributes.type": ["Contact", "Contact", "Contact", "Contact"],
            "Email": ["a@x.se"] * 4,
            "LastModifiedDate": ["2025-01-01T00:00:00.000+0000"] * 4,
        }
    )
    frame = _prep(source_id=ids, email=raw["Email"].tolist())
    res = validate_customers(frame, "crm", raw, connector_type="salesforce", now=NOW)
    # a 15-character id is fine; an Account id (001) among Contacts and garbage are not
    assert res.valid["source_id"].tolist() == ids[:2]
    rej = res.rejected
    assert rej[["source_id", "field", "check", "severity"]].values.tolist() == [
        [ids[2], "source_id", "salesforce_id", "row"],
        [ids[3], "source_id", "salesforce_id", "row"],
    ]


def test_check_payload_before_mapping() -> None:
    from custsync_pipeline.domain.validate import check_payload

    good = pd.DataFrame(
        {"ID": ["x"], "Modified": ["/Date(1)/"], "Name": ["A"], "__resource": ["Accounts"]}
    )
    check_payload(good, "erp", "exact")
    with pytest.raises(SchemaShapeError, match=r"\['Modified'\].*ModifiedDate"):
        check_payload(good.rename(columns={"Modified": "ModifiedDate"}), "erp", "exact")
    check_payload(pd.DataFrame(), "erp", "exact")  # an empty page says nothing about the shape
    check_payload(
        pd.DataFrame({"anything": [1]}), "shop", "rest"
    )  # no model for generic connectors


def test_shape_error_names_missing_or_renamed_column() -> None:
    raw = pd.DataFrame({"id": ["v1"], "sourceId": ["s1"], "email": ["a@x.se"]})
    frame = _prep(source_id=["v1"], email=["a@x.se"])
    with pytest.raises(SchemaShapeError, match="source_id") as info:
        validate_customers(frame, "voucherify", raw)
    assert "sourceId" in str(info.value)  # the likely rename is named too
    with pytest.raises(SchemaShapeError, match="source_id"):
        validate_customers(pd.DataFrame({"sourceId": ["x"]}), "voyado")


def test_wrong_types_are_coerced_or_reported() -> None:
    frame = pd.DataFrame(
        {
            "source_id": [1, 2, 3],
            "last_name": ["Ek", "Ek", "Ek"],
            "first_name": ["Ann", {"nested": 1}, 42],
            "loyalty_points": ["10", "lots", -5],
            "is_deleted": ["false", "true", "perhaps"],
        }
    )
    # validated as the connector typed it (conform() would already stringify the dict)
    res = validate_customers(frame, "voyado", now=NOW)
    assert res.valid["source_id"].tolist() == ["1", "2", "3"]
    assert res.valid["first_name"].tolist()[::2] == ["Ann", "42"]
    assert res.valid["loyalty_points"].iloc[0] == 10.0
    assert res.valid["is_deleted"].tolist() == [False, True, False]
    got = set(zip(res.rejected["field"], res.rejected["check"], strict=True))
    assert got == {
        ("first_name", "coerce"),
        ("loyalty_points", "coerce"),
        ("loyalty_points", "not_negative"),
        ("is_deleted", "coerce"),
    }


def test_empty_frame() -> None:
    res = validate_customers(
        conform(pd.DataFrame({"source_id": []})), "voyado", pd.DataFrame({"id": [], "email": []})
    )
    assert len(res.valid) == 0 and len(res.rejected) == 0 and res.valid_rate == 1.0


def test_dedupe_and_arrow_paths_find_exactly_what_direct_validation_finds() -> None:
    from custsync_pipeline.domain.schemas import canonical_schema
    from custsync_pipeline.domain.validate import coerce_canonical, schema_failures

    n = 6000
    base = pd.DataFrame(
        {
            "connector": ["voyado"] * n,
            "source_id": [f"id{i}" if i % 97 else f"bad\x00{i}" for i in range(n)],
            "first_name": [
                ["Anna", "=SUM(A1)", "x" * 300, "Bo\u202eb", None][i % 5] for i in range(n)
            ],
            "email": [f"u{i}@x.se" if i % 7 else f"U{i}@x.se\n" for i in range(n)],
            "phone": [f"+4670{i:07d}" if i % 11 else "+٤٦70123" for i in range(n)],
            "country": [["SE", "NO", "Atlantis", None][i % 4] for i in range(n)],
            "updated_at": pd.to_datetime(
                ["2025-01-01T00:00:00Z", "2200-01-01T00:00:00Z"] * (n // 2), utc=True
            ),
        }
    )
    df, _ = coerce_canonical(conform(base))
    schema = canonical_schema(NOW)

    def as_set(fc: pd.DataFrame) -> set[tuple[int, str, str]]:
        return {
            (int(p), str(c), str(k))
            for p, c, k in zip(fc["pos"], fc["column"], fc["check"], strict=True)
        }

    direct = as_set(schema_failures(df, schema, dedupe_min_rows=10**9))
    fast = as_set(schema_failures(df, schema, dedupe_min_rows=1000))
    assert direct == fast
    checks = {k for _, _, k in direct}
    assert {
        "printable",
        "no_formula",
        "max_length",
        "email_syntax",
        "lower_case",
        "e164",
        "iso_country",
        "not_in_future",
    } <= checks


def _pandera_cases(schema, df: pd.DataFrame) -> set[tuple[int, str, str]]:
    """Plain Pandera's failure cases of single rows: what ``schema_failures`` must find."""
    import pandera.pandas as pa

    try:
        schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as err:
        fc = err.failure_cases[err.failure_cases["index"].notna()]
        return {
            (int(i), str(c), str(k))
            for i, c, k in zip(fc["index"], fc["column"], fc["check"], strict=True)
        }
    return set()


def test_the_fast_paths_find_what_plain_pandera_finds_frame_wide_rules_included() -> None:
    """Empty columns and columns already typed skip Pandera, repetitive ones are checked
    once per value; an aspect's ``unique`` entry key (a frame-wide rule) is checked whole."""
    from custsync_pipeline.domain.schemas import ASPECT_SCHEMAS, canonical_schema
    from custsync_pipeline.domain.validate import coerce_canonical, schema_failures

    n = 3000
    canon, _ = coerce_canonical(
        conform(
            pd.DataFrame(
                {
                    "connector": ["voyado"] * n,
                    "source_id": [f"id{i}" for i in range(n)],
                    "first_name": [["Anna", "=1+1", None][i % 3] for i in range(n)],
                    "country": [["SE", "XX"][i % 2] for i in range(n)],
                }
            )
        )
    )
    entries = pd.DataFrame(
        {
            "connector": "voyado",
            "source_id": [f"id{i // 2}" for i in range(n)],  # two entries a record
            # the same key twice in every tenth record: the rule, not a value, fails
            "entry_key": [f"k{i % 2 if (i // 2) % 10 else 0}" for i in range(n)],
            "type": [["billing", "delivery", "castle"][i % 3] for i in range(n)],
            "street": [["Storgatan 1", None][i % 2] for i in range(n)],
            "postal_code": pd.Series([None] * n, dtype="string"),
            "city": "Lund",
            "country": [["SE", "XX"][i % 2] for i in range(n)],
        }
    ).astype("string")
    # object columns keep their dtype check and a coercing schema's coercion (5 -> "5")
    attributes = pd.DataFrame(
        {
            "connector": "voyado",
            "source_id": [f"id{i}" for i in range(n)],
            "entry_key": "k",
            "name": pd.Series([["tier", 1, ""][i % 3] for i in range(n)], dtype=object),
            "value": pd.Series([[5, "=1+1", None][i % 3] for i in range(n)], dtype=object),
        }
    )
    found: dict[str, set[tuple[int, str, str]]] = {}
    for schema, df in (
        (canonical_schema(NOW), canon),
        (ASPECT_SCHEMAS["addresses"], entries),
        (ASPECT_SCHEMAS["customer_attributes"], attributes),
    ):
        want = _pandera_cases(schema, df)
        assert want, schema.name
        found[schema.name] = want
        for dedupe in (10**9, 100):
            fc = schema_failures(df, schema, dedupe_min_rows=dedupe)
            fc = fc[fc["pos"].notna()]
            got = {
                (int(p), str(c), str(k))
                for p, c, k in zip(fc["pos"], fc["column"], fc["check"], strict=True)
            }
            assert got == want, (schema.name, dedupe, sorted(got ^ want)[:5])
    assert any("unique" in k for _, _, k in found["aspect_addresses"])
    assert {"no_formula", "not_empty"} <= {k for _, _, k in found["aspect_customer_attributes"]}


def test_record_must_name_someone() -> None:
    frame = _prep(
        source_id=["p1", "p2", "p3", "c1", "c2", "d1"],
        kind=["person", "person", "person", "company", "company", "person"],
        first_name=["Anna", "Anna", "Anna", None, None, None],
        last_name=[None, None, "Berg", None, None, None],
        company_name=[None, None, None, "Acme AB", None, None],
        email=["a@x.se", "broken@", None, None, "info@acme.se", None],
        is_deleted=[False, False, False, False, False, True],
    )
    res = validate_customers(frame, "exact", now=NOW)
    # p2's only contact is an invalid email: with it nulled, nobody is named
    assert sorted(res.valid["source_id"]) == ["c1", "c2", "d1", "p1", "p3"]
    rule = res.rejected[res.rejected["check"] == "name_or_email"]
    assert sorted(zip(rule["source_id"], rule["field"], strict=True)) == [
        ("p2", "email"),
        ("p2", "last_name"),
    ]
    assert (rule["severity"] == "row").all()


def test_a_name_split_from_a_quarantined_full_name_is_quarantined_with_it() -> None:
    """Voucherify's one ``name`` field, split by its connector: a full name that fails a
    check takes its first and last name with it (a formula's tail never becomes a
    surname that reaches the golden record and the targets); a clean one keeps them."""
    from custsync_pipeline.config import ConnectorConfig
    from custsync_pipeline.connectors.voucherify import VoucherifyConnector

    cfg = ConnectorConfig(
        type="voucherify",
        base_url="http://127.0.0.1:9",
        credentials={"app_id": "A", "app_token": "T"},
    )
    conn = VoucherifyConnector("voucherify", cfg, {"A": "x", "T": "y"})
    raw = pd.DataFrame(
        {
            "id": ["cust_a", "cust_b"],
            "name": ["Nils =cmd|' /C calc'!A0", "Anna Berg"],
            "email": ["nils@x.se", "anna@x.se"],
            "created_at": ["2026-01-01T00:00:00Z"] * 2,
        }
    )
    frame = normalize_customers(conn.to_canonical(raw))
    assert frame["last_name"].tolist()[0] == "calc'!A0"  # what the split alone gives
    res = validate_customers(frame, "voucherify", now=NOW)
    by_id = res.valid.set_index("source_id")
    assert by_id.loc["cust_a", ["full_name", "first_name", "last_name"]].isna().all()
    assert by_id.loc["cust_b", ["first_name", "last_name"]].tolist() == ["Anna", "Berg"]
    rej = res.rejected[res.rejected["source_id"] == "cust_a"]
    assert set(zip(rej["field"], rej["check"], strict=True)) == {
        ("full_name", "no_formula"),
        ("first_name", "from_full_name"),
        ("last_name", "from_full_name"),
    }
    assert (rej["severity"] == "field").all()
    assert "calc" not in " ".join(rej["reason"])  # reasons mask the values


def test_names_held_beside_a_quarantined_full_name_stay() -> None:
    """A file connector may map a full name and first and last names of their own: a
    full name failing for its own reason takes only what was split from it."""
    frame = _prep(
        source_id=["a", "b"],
        full_name=["=Anna B. Berg", "Bo =Ek"],
        first_name=["Anna", "Bo"],
        last_name=["Lind", "=Ek"],
        email=["a@x.se", "b@x.se"],
    )
    res = validate_customers(frame, "file", now=NOW)
    by_id = res.valid.set_index("source_id")
    assert by_id.loc["a", ["first_name", "last_name"]].tolist() == ["Anna", "Lind"]
    assert pd.isna(by_id.loc["a", "full_name"])
    # "Bo =Ek" splits into Bo / =Ek: both came from it (=Ek fails on its own as well)
    assert by_id.loc["b", ["first_name", "last_name"]].isna().all()
    checks = set(
        zip(res.rejected["source_id"], res.rejected["field"], res.rejected["check"], strict=True)
    )
    assert ("a", "first_name", "from_full_name") not in checks
    assert ("b", "first_name", "from_full_name") in checks
