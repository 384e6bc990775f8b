"""Validation of the sandbox's messy data, read over real sockets, against the generator's truth.

The generator lists every deliberate break (``defects``). For every connector:

* each ``reject`` defect is quarantined for its field with the matching check;
* nothing else is quarantined, except what the generator allows (a placeholder
  phone ``0000000000`` is not a number: its value is nulled with ``e164``);
* every record without a row-level defect stays valid (nothing good is lost),
  and every ``clean`` defect comes out repaired.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from custsync_pipeline.config import ConnectorConfig
from custsync_pipeline.connectors import build_connector
from custsync_pipeline.domain.normalize import normalize_customers
from custsync_pipeline.domain.validate import ValidationResult, validate_customers
from custsync_pipeline.sandbox import CREDENTIALS, Sandbox, generate

# the validation check each kind of deliberate break must produce
EXPECTED_CHECK = {
    "bad_email_syntax": "email_syntax",
    "unknown_country": "iso_country",
    "missing_name_and_email": "name_or_email",
    "formula_injection": "no_formula",
    "control_chars": "printable",
    "future_date": "not_in_future",
}
ROW_LEVEL = {"missing_name_and_email"}  # the record names nobody: rejected whole

SPECS: dict[str, dict] = {
    "salesforce": dict(
        type="salesforce",
        credentials={"access_token": "SALESFORCE_ACCESS_TOKEN"},
        options={"objects": ["Contact", "Lead", "Account"]},
    ),
    "voucherify": dict(
        type="voucherify",
        credentials={"app_id": "VOUCHERIFY_APP_ID", "app_token": "VOUCHERIFY_APP_TOKEN"},
    ),
    "voyado": dict(type="voyado", credentials={"api_key": "VOYADO_API_KEY"}),
    "exact": dict(
        type="exact",
        credentials={"access_token": "EXACT_ACCESS_TOKEN"},
        options={"division": 1, "resources": ["Accounts", "Contacts"]},
    ),
    "icomm": dict(type="icomm", credentials={"api_key": "ICOMM_API_KEY"}),
    # KatanaPIM has no public customer API: the generic REST connector, configured in YAML
    "katana": dict(
        type="rest",
        credentials={"api_key": "KATANA_API_KEY"},
        options={
            "path": "/api/v1/customers",
            "records_path": "data",
            "id_field": "id",
            "updated_field": "updated_at",
            "created_field": "created_at",
            "paging": {
                "type": "next_link",
                "next_path": "links.next",
                "size_param": "per_page",
                "page_size": 100,
            },
            "auth": {"type": "api_key", "header": "X-Api-Key"},
            "mapping": {
                "id": "katana_id",
                "first_name": "first_name",
                "last_name": "last_name",
                "email": "email",
                "phone": "phone",
                "country": "country",
                "customer_number": "customer_number",
                "attributes.preferred_language": "language",
                # customers are people or companies (a firm's contact persons, seed 001)
                "kind": "kind",
                "company_name": "company_name",
            },
            "static": {"object_type": "customer"},
        },
    ),
}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with pytest.MonkeyPatch.context() as mp:
        for name in CREDENTIALS:  # the emulators accept their documented defaults
            mp.delenv(name, raising=False)
        # many deliberate breaks, so every kind occurs in every system
        with Sandbox(base_port=0, data=generate(seed=5, people=1500, invalid_rate=0.05)) as sb:
            yield sb


def _validated(sb: Sandbox, system: str) -> ValidationResult:
    spec = SPECS[system]
    cfg = ConnectorConfig(base_url=sb.urls[system], **spec)
    conn = build_connector(system, cfg, dict(CREDENTIALS))
    raw = conn.read().records
    assert len(raw) > 100
    canonical = normalize_customers(conn.to_canonical(raw))
    return validate_customers(canonical, system, raw, connector_type=spec["type"])


@pytest.mark.parametrize("system", list(SPECS))
def test_quarantine_matches_the_generators_defects(sandbox: Sandbox, system: str) -> None:
    result = _validated(sandbox, system)
    defects = sandbox.data.defects
    defects = defects[defects["system"] == system]
    rejected = result.rejected.astype({"source_id": str})

    # every deliberate break is quarantined, for its field, by the matching check
    expected = defects[defects["expect"] == "reject"]
    assert len(set(expected["defect"])) >= 4  # most kinds of break occur in every system
    got = set(zip(rejected["source_id"], rejected["field"], rejected["check"], strict=True))
    # a system with one name field (Voucherify's ``name``) is read as a full name: a break
    # in a first or last name is found in that field, ``full_name``
    whole = {"first_name": "full_name", "last_name": "full_name"}
    missing = [
        (sid, fld, d)
        for sid, fld, d in zip(
            expected["source_id"], expected["field"], expected["defect"], strict=True
        )
        if (str(sid), fld, EXPECTED_CHECK[d]) not in got
        and (str(sid), whole.get(fld, fld), EXPECTED_CHECK[d]) not in got
    ]
    assert missing == []

    # nothing is quarantined without a deliberate break behind it
    allowed = {
        (str(s), g, EXPECTED_CHECK[d])
        for s, f, d in zip(
            expected["source_id"], expected["field"], expected["defect"], strict=True
        )
        for g in {f, whole.get(f, f)}
    }
    placeholders = defects[defects["defect"] == "placeholder_phone"]
    allowed |= {(str(s), "phone", "e164") for s in placeholders["source_id"]}
    # a national-format phone on a record without a country (an Exact Online Contact
    # whose Account has none) cannot be read: the number is nulled, the record kept
    valid = result.valid
    no_region = (
        valid["country"].isna()
        & valid["phone_raw"].notna()
        & ~valid["phone_raw"].str.strip().str.startswith("+")
    )
    unreadable = set(valid.loc[no_region, "source_id"].astype(str))
    allowed |= {(s, "phone", "e164") for s in unreadable}
    if system == "exact":
        # a Contact takes its Account's country: a broken one is quarantined on both
        broken = set(expected.loc[expected["field"] == "country", "source_id"].astype(str))
        allowed |= {
            (str(c["ID"]), "country", "iso_country")
            for c in sandbox.records("exact", "Contacts")
            if str(c.get("Account")) in broken
        }
    # the first and last name read from a quarantined full name go with it
    allowed |= {
        (s, part, "from_full_name")
        for s, f, _ in allowed
        if f == "full_name"
        for part in ("first_name", "last_name")
    }
    unexplained = sorted(got - allowed)
    assert unexplained == []
    assert rejected["reason"].str.len().gt(15).all()
    assert rejected["raw_payload"].str.startswith("{").all()

    # nothing good is lost: only records with a row-level break leave the valid set
    row_broken = set(defects.loc[defects["defect"].isin(ROW_LEVEL), "source_id"].astype(str))
    all_ids = set(
        sandbox.data.truth.loc[sandbox.data.truth["system"] == system, "source_id"].astype(str)
    )
    valid_ids = set(result.valid["source_id"].astype(str))
    assert valid_ids == all_ids - row_broken

    # clean-able mess comes out repaired (and, above, was never quarantined)
    valid = result.valid.set_index(result.valid["source_id"].astype(str))
    for defect, col in (
        ("email_case", "email"),
        ("email_whitespace", "email"),
        ("phone_national", "phone"),
        ("phone_spaced", "phone"),
        ("phone_00_prefix", "phone"),
        ("country_case", "country"),
        ("name_whitespace", "first_name"),
    ):
        marked = defects.loc[defects["defect"] == defect, "source_id"].astype(str)
        ids = [i for i in marked if i in valid.index and not (col == "phone" and i in unreadable)]
        if not ids:
            continue
        # (the generator may mark a value it left empty; those stay empty, unquarantined)
        values = valid.loc[ids, col]
        assert values.notna().mean() > 0.8, (defect, col)
        values = values.dropna()
        if col == "email":
            assert (values == values.str.strip().str.lower()).all()
        elif col == "phone":
            assert values.str.fullmatch(r"\+[1-9][0-9]{6,14}").all()
        elif col == "country":
            assert values.str.fullmatch(r"[A-Z]{2}").all()
        else:
            assert (values == values.str.strip()).all()
