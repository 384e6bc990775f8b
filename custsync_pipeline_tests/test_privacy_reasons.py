"""Personal data stays out of reasons and error texts.

* ``normalize.email_or_reason``: the reason for a refused address never quotes
  the address, its local part or its domain (email-validator's own messages do);
* ``connectors.http.default_error_message``: a vendor error body that quotes an
  e-mail address or a phone number reaches exceptions masked (real HTTP server).
"""

from __future__ import annotations

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custsync_pipeline.connectors.http import ConnectorError, default_error_message, mask_personal
from custsync_pipeline.domain.normalize import email_or_reason
from custsync_pipeline.domain.validate import validate_customers
from custsync_pipeline_tests.test_http import ScriptedServer, _client  # noqa: F401
from custsync_pipeline_tests.test_http import server as server  # noqa: F401 - fixture

BAD_ADDRESSES = [
    "frida.aberg@@gmail..com",
    "jane<doe>@x.se",
    "jane@gmail..com",
    "jane@exa_mple.com",
    "jane doe@telia",  # a space inside and no domain: no address even without the space
    "jané\u0301@xn--bcher-.com",
    "jane@[300.1.1.1]",
    "jane@bücher..de",
    "jane.doe@localhost",
    "jåne\u202e@gmail.com",
]


def _pieces(value: str) -> list[str]:
    candidate = value.strip().lower()
    local, _, domain = candidate.rpartition("@")
    return [p for p in (candidate, local, domain) if len(p) >= 3]


@pytest.mark.parametrize("value", BAD_ADDRESSES)
def test_email_reason_never_quotes_the_address(value: str) -> None:
    normalized, reason = email_or_reason(value)
    assert normalized is None and reason
    for piece in _pieces(value):
        assert piece not in reason.lower(), (piece, reason)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(
        alphabet=st.sampled_from(list("abcxyz.-_@ <>[]\"'()åéø0123\u200b\u202e")),
        min_size=1,
        max_size=40,
    )
)
def test_email_reason_is_value_free_for_any_input(value: str) -> None:
    normalized, reason = email_or_reason(value)
    if normalized is not None or reason is None:
        return
    low = reason.lower()
    for piece in _pieces(value):
        # a 3-letter piece can be an English word of the sentence; longer ones cannot
        if len(piece) >= 5 or not piece.isalpha():
            assert piece not in low, (value, reason)


def test_quarantine_reason_for_a_bad_email_keeps_only_the_mask() -> None:
    import pandas as pd

    from custsync_pipeline.domain.canonical import conform
    from custsync_pipeline.domain.normalize import normalize_customers

    frame = normalize_customers(
        conform(
            pd.DataFrame(
                {"source_id": ["a"], "last_name": ["Berg"], "email": ["frida.aberg@@gmail..com"]}
            )
        )
    )
    res = validate_customers(frame, "file", connector_type="file")
    reason = res.rejected.loc[res.rejected["field"] == "email", "reason"].iloc[0]
    assert "frida" not in reason and "aberg" not in reason
    assert "invalid characters" in reason


def test_a_source_id_that_is_an_email_is_masked_in_reasons() -> None:
    import pandas as pd

    from custsync_pipeline.domain.canonical import conform
    from custsync_pipeline.domain.normalize import normalize_customers

    # an Icomm guest: UserId is the e-mail address, and this one carries a control character
    frame = normalize_customers(
        conform(
            pd.DataFrame(
                {
                    "source_id": ["anna.berg@gmail.com\x07|SE01"],
                    "icomm_user_id": ["anna.berg@gmail.com\x07"],
                    "store_code": ["SE01"],
                    "last_name": ["Berg"],
                }
            )
        )
    )
    res = validate_customers(frame, "icomm", connector_type="file")
    assert len(res.rejected) > 0
    for reason in res.rejected["reason"]:
        assert "anna.berg" not in reason, reason


VENDOR_BODIES = [
    # Voucherify: message + details
    (
        {
            "code": 400,
            "key": "invalid_payload",
            "message": "Invalid payload",
            "details": "Customer jane.doe@example.com: phone +46 70-123 45 67 is not valid",
        },
        ["jane.doe", "70-123 45 67", "701234567"],
    ),
    # Salesforce: a list of errors quoting the duplicate
    (
        [
            {
                "message": "duplicate value found: Email duplicates value on record with id: "
                "003Hp3995078806IAA (ola.nordmann@telia.no, 0701234567)",
                "errorCode": "DUPLICATE_VALUE",
            }
        ],
        ["ola.nordmann", "0701234567"],
    ),
    # plain text body
    ("Bad Request: mobile 0046 73 123 4567 for kari@online.no", ["kari@", "73 123 4567"]),
]


@pytest.mark.parametrize(("body", "personal"), VENDOR_BODIES)
def test_vendor_error_bodies_reach_exceptions_masked(server, body, personal) -> None:  # noqa: F811
    headers = {"X-Raw": "1"} if isinstance(body, str) else {}  # a str body goes out as text
    server.script.append((400, headers, body, 0))
    server.script.append((400, headers, body, 0))
    with pytest.raises(ConnectorError) as info:
        _client(server.url).get_json("/customers")
    direct = default_error_message(requests.get(server.url + "/customers", timeout=5))
    for text in (str(info.value), direct):
        for value in personal:
            assert value not in text, (value, text)
        assert "***" in text
    if isinstance(body, list):  # the non-personal part of the message survives
        assert "DUPLICATE_VALUE" in direct and "003Hp3995078806IAA" in direct


@pytest.mark.parametrize(
    "text",
    ["at 2026-01-22T23:50:36.000Z", "id 003Hp3995078806IAA", "page 2 of 5", "limit 1000000"],
)
def test_masking_leaves_dates_ids_and_counts_alone(text: str) -> None:
    assert mask_personal(text) == text


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("tel:+46701234567", "701234567"),
        ("Phone:+46701234567", "701234567"),
        ("MobilePhone: 46 70 123 45 67", "123 45"),
        ("call +46.70.123.45.67 today", "123.45"),
        ("070/123 45 67 is busy", "123 45"),
        ("(070) 1234567", "1234567"),
    ],
)
def test_phone_numbers_in_every_common_spelling_are_masked(text: str, number: str) -> None:
    masked = mask_personal(text)
    assert number not in masked and "***" in masked, masked


def test_an_address_entry_shows_its_place_masked_as_the_golden_fields_are() -> None:
    """``custsync explain``/``history`` masked a golden record's city and postal code but
    printed the same values in clear inside its address entries."""
    from custsync_pipeline.cli_golden import mask_entry
    from custsync_pipeline.domain.validate import PERSONAL_FIELDS

    shown = mask_entry(
        "type=mailing; street=Storgatan 77; postal_code=611 10; city=Nyköping; country=SE"
    )
    for clear in ("Storgatan", "611 10", "Nyköping"):
        assert clear not in shown, shown
    assert "type=mailing" in shown and "country=SE" in shown
    assert {"street", "postal_code", "city"} <= PERSONAL_FIELDS
