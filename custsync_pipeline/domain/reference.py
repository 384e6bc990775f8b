"""The reference of the canonical model, generated from code: ``docs/reference.md``.

Every canonical column with its type, whether a golden record carries it, the aspect
it belongs to, the checks validation runs on it (read from the Pandera model) and its
meaning; every aspect with its merge method, columns and natural key. A mapping
(``options.mapping`` of the ``rest`` and ``file`` connectors) targets these column
names. ``test_docs`` fails when the file is out of date or a column has no meaning
written here. Regenerate with::

    python -m custsync_pipeline.domain.reference > docs/reference.md
"""

from __future__ import annotations

from custsync_pipeline.domain import aspects as asp
from custsync_pipeline.domain import canonical as can

COLUMN_MEANINGS: dict[str, str] = {
    "connector": "name of the connector in the sync config (`salesforce`, `shop_eu`); set by custsync",
    "source_id": "the record's id in its own system; a composite id is its parts joined by `|`",
    "object_type": "the vendor's object: `Contact`, `Account`, `Lead`, `customer`, …",
    "kind": "`person` or `company` (a company is named by `company_name`)",
    "first_name": "given name, whitespace tidied",
    "last_name": "family name, whitespace tidied",
    "company_name": "name of a company customer",
    "full_name": "a whole name in one field (Voucherify `name`, Exact `Name`); identity splits it",
    "birth_date": "date of birth as received (`YYYY-MM-DD`); identity compares its digits",
    "email": (
        "primary e-mail address: trimmed, lower-cased, typo spaces inside removed, "
        "syntax-checked; else empty"
    ),
    "email_raw": "the e-mail address as received",
    "phone": "primary phone number in E.164 (`+46701234567`); else empty",
    "phone_raw": "the phone number as received",
    "country": "ISO 3166-1 alpha-2 code of the customer's country (names and alpha-3 are read)",
    "language": "ISO 639-1 code of the customer's language",
    "store_code": "store or market code (`SE01`); also the region of national phone numbers",
    "city": "city of the primary address",
    "postal_code": "postal code of the primary address",
    "street": "street line of the primary address",
    "salesforce_id": "Salesforce record id (18 characters), in any system that references it",
    "voyado_id": "Voyado contact id, in any system that references it",
    "voucherify_id": "Voucherify customer id (`cust_…`)",
    "voucherify_source_id": "Voucherify `source_id`: set once, never changed (seed 002)",
    "customer_number": "customer number: the Exact Online Account `Code`, and every reference to it",
    "exact_id": "Exact Online Account or Contact `ID` (a GUID)",
    "web_user_id": "web shop user id",
    "icomm_user_id": "Icomm `UserId`; with `store_code` one key (seed 003)",
    "katana_id": "KatanaPIM customer id",
    "custsync_id": "the golden id custsync stamped into the system on an earlier publish",
    "email_consent": "e-mail marketing consent: `yes`, `no` or empty (owned by one connector)",
    "sms_consent": "SMS marketing consent: `yes`, `no` or empty",
    "loyalty_tier": "loyalty tier or level",
    "loyalty_status": "loyalty membership status",
    "updated_at": "when the source last changed the record; drives incremental pulls",
    "created_at": "when the source created the record",
    "email_consent_at": "when the e-mail consent was given or withdrawn (the newest wins)",
    "sms_consent_at": "when the SMS consent was given or withdrawn",
    "loyalty_points": "loyalty points balance",
    "is_deleted": "the source reports the record deleted",
    "first_name_raw": "first name as received (lane output and quarantine only, not stored)",
    "last_name_raw": "last name as received (lane output and quarantine only, not stored)",
    "company_name_raw": "company name as received (lane output and quarantine only, not stored)",
    "country_raw": "country as received (lane output and quarantine only, not stored)",
}

ASPECT_MEANINGS: dict[str, str] = {
    "name": "who the customer is",
    "contact_persons": "people at a company customer",
    "addresses": "postal addresses by type",
    "customer_attributes": "named values about the customer",
    "address_attributes": "named values about one address",
    "contact_person_attributes": "named values about one contact person",
    "customer_contact_details": "e-mail addresses, phone numbers, websites",
    "address_contact_details": "contact details of one address",
    "contact_person_contact_details": "contact details of one contact person",
    "attachments": "references to documents",
    "consents": "marketing consents with their times (seed 004)",
    "loyalty": "loyalty tier, status and points (seed 004)",
}

_TYPES = {
    **dict.fromkeys(can.STRING_COLUMNS, "text"),
    **dict.fromkeys(can.RAW_COLUMNS, "text"),
    **dict.fromkeys(can.DATETIME_COLUMNS, "timestamp (UTC)"),
    **dict.fromkeys(can.NUMERIC_COLUMNS, "number"),
    **dict.fromkeys(can.BOOL_COLUMNS, "true/false"),
}


def _checks() -> dict[str, list[str]]:
    """Check names per column, as the Pandera canonical model runs them."""
    from custsync_pipeline.domain.schemas import canonical_schema

    return {
        name: sorted({c.name for c in column.checks if c.name})
        for name, column in canonical_schema().columns.items()
    }


def _aspect_of(column: str) -> str:
    return next((a for a, cols in asp.ASPECT_FIELDS.items() if column in cols), "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """``docs/reference.md`` as it must read."""
    checks = _checks()
    golden = set(can.GOLDEN_FIELDS)
    lines = [
        "# Canonical model reference",
        "",
        "<!-- generated by `python -m custsync_pipeline.domain.reference > docs/reference.md`;",
        "     do not edit: custsync_pipeline_tests/test_docs.py compares it with the code -->",
        "",
        "Every connector maps its records onto these columns (`to_canonical`); in the sync",
        "config, `options.mapping` of a `rest` or `file` connector names them as targets",
        "(`Email: email`). A value that fails a check is quarantined with the reason",
        "([validation.md](validation.md)): a row check (`source_id`) rejects the record, a",
        "field check empties only that value.",
        "",
        "## Columns",
        "",
        "| column | type | golden | aspect | checks | meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for col in can.VALIDATED_COLUMNS:
        lines.append(
            f"| `{col}` | {_TYPES[col]} | {'yes' if col in golden else ''} | {_aspect_of(col)} "
            f"| {', '.join(checks.get(col, []))} | {_cell(COLUMN_MEANINGS[col])} |"
        )
    lines += [
        "",
        "## Aspects",
        "",
        "A flow step names the aspects it gives (`flow.enrichments[].aspects`). A single-valued",
        "aspect is merged *latest connector* (the last flow step with a value wins); a",
        "multi-valued one is a long table of entries merged *multiple connectors* (union,",
        "one entry per natural key, each with the connectors that hold it).",
        "",
        "| aspect | merge | fields or entry columns | natural key | under | meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for aspect in asp.ASPECTS:
        multi = aspect in asp.ENTRY_ASPECTS
        cols = asp.ASPECT_COLUMNS.get(aspect, ()) if multi else asp.ASPECT_FIELDS.get(aspect, ())
        key = asp.NATURAL_KEY.get(aspect, ())
        lines.append(
            f"| `{aspect}` | {'multiple connectors' if multi else 'latest connector'} "
            f"| {', '.join(f'`{c}`' for c in cols)} | {', '.join(f'`{c}`' for c in key)} "
            f"| {asp.PARENT_ASPECT.get(aspect, '')} | {_cell(ASPECT_MEANINGS[aspect])} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
