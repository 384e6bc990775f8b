"""Property-based tests: hostile records are either normalized or quarantined with a reason.

Frames mix known-good records with hostile ones — nulls, wrong types, 10k-character
strings, control characters and emoji, SQL and formula-injection strings, dates
far in the past and future, duplicated ids — and the properties are:

* nothing raises;
* every input row ends up valid or rejected (row severity) with a reason;
* a value received but absent from the valid output was quarantined (field
  severity) with a reason: nothing is dropped silently;
* every known-good record comes out valid and unchanged (nothing good is lost);
* the valid frame passes the canonical Pandera model as it is;
* reasons never show a received email address or phone number in clear.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custsync_pipeline.domain.canonical import VALIDATED_COLUMNS
from custsync_pipeline.domain.normalize import normalize_customers
from custsync_pipeline.domain.schemas import canonical_schema
from custsync_pipeline.domain.validate import validate_customers

NOW = pd.Timestamp("2026-06-01T00:00:00Z")

NASTY_TEXT = [
    "Robert'); DROP TABLE customers;--",
    "1' OR '1'='1",
    "=cmd|' /C calc'!A0",
    "+1+1",
    "-2+3",
    "@SUM(A1:A9)",
    '=HYPERLINK("http://evil")',
    "\t=1",
    "x" * 10_000,
    "😀" * 10_000,
    "Zoë 😀 Åsa",
    "A\x00B",
    "bell\x07esc\x1b",
    "\u202eevil",
    "",
    "   ",
    "null",
    "None",
]
NASTY_DATES = [
    "0001-01-01T00:00:00Z",
    "1066-10-14",
    "1677-09-21T00:12:43Z",
    "1899-12-31T23:59:59Z",
    "2262-04-11T23:47:16Z",
    "9999-12-31T23:59:59Z",
    "2199-01-01T00:00:00Z",
    "not a date",
    "2024-02-30",
    "/Date(1700000000000)/",
    "",
]

hostile_scalar = st.one_of(
    st.none(),
    st.just(float("nan")),
    st.sampled_from(NASTY_TEXT),
    st.text(max_size=40),  # any code point hypothesis likes: controls, emoji, combining marks
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from([{"nested": 1}, [1, 2], ("t",)]),
)
hostile_date = st.one_of(
    st.none(),
    st.sampled_from(NASTY_DATES),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)).map(
        lambda d: d.isoformat() + "Z"
    ),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.text(max_size=20),
)
hostile_email = st.one_of(
    hostile_scalar,
    st.emails().map(lambda e: f"  {e.upper()} "),
    st.sampled_from(
        [
            "a@@b.se",
            "a@b",
            "a b@c.se",
            "@x.se",
            "x@.se",
            "a@b.se\n",
            "😀@x.se",
            "x@xn--bcher-kva.ch",
        ]
    ),
)
hostile_phone = st.one_of(
    hostile_scalar,
    st.sampled_from(
        [
            "070-123 45 67",
            "+46 70 123 45 67",
            "0000000000",
            "+999 1",
            "0046701234567",
            "+٤٦٧٠١٢٣٤٥٦٧",
        ]
    ),
    st.text(alphabet="0123456789 +-()", max_size=25),
)
ids = st.one_of(
    st.sampled_from(["a", "b", "c", "dup", "x" * 300, "id\x00", " ", ""]), st.none(), hostile_scalar
)


@st.composite
def hostile_record(draw: st.DrawFn) -> dict:
    return {
        "source_id": draw(ids),
        "kind": draw(
            st.one_of(st.sampled_from(["person", "company", "Person", "alien"]), hostile_scalar)
        ),
        "first_name": draw(hostile_scalar),
        "last_name": draw(hostile_scalar),
        "company_name": draw(hostile_scalar),
        "email": draw(hostile_email),
        "phone": draw(hostile_phone),
        "country": draw(
            st.one_of(st.sampled_from(["SE", "sweden", "XX", "Atlantis", "swe"]), hostile_scalar)
        ),
        "language": draw(
            st.one_of(st.sampled_from(["sv", "sv-SE", "xx", "Swedish"]), hostile_scalar)
        ),
        "email_consent": draw(st.one_of(st.sampled_from(["Yes", "no", "maybe"]), hostile_scalar)),
        "loyalty_points": draw(hostile_scalar),
        "is_deleted": draw(st.one_of(st.booleans(), hostile_scalar)),
        "updated_at": draw(hostile_date),
        "created_at": draw(hostile_date),
    }


@st.composite
def good_record(draw: st.DrawFn) -> dict:
    i = draw(st.integers(min_value=0, max_value=10**9))
    return {
        "source_id": f"good-{i}",
        "kind": "person",
        "first_name": draw(st.sampled_from(["Anna", "Zoë", "Åsa", "Jörg", "Søren"])),
        "last_name": draw(
            st.sampled_from(["Berg", "Öberg", "O'Neil", "Müller-Lüdenscheidt", "de Vries"])
        ),
        "company_name": None,
        "email": f"good.{i}@example-mail.se",
        "phone": f"+4670{i % 10**7:07d}",
        "country": "SE",
        "language": "sv",
        "email_consent": "yes",
        "loyalty_points": float(i % 5000),
        "is_deleted": False,
        "updated_at": "2025-03-01T12:00:00Z",
        "created_at": "2024-01-01T00:00:00Z",
    }


def _blank(value: object) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    hostile=st.lists(hostile_record(), min_size=1, max_size=12),
    good=st.lists(good_record(), min_size=0, max_size=4, unique_by=lambda r: r["source_id"]),
    order=st.randoms(use_true_random=False),
)
def test_hostile_records_are_normalized_or_quarantined(
    hostile: list[dict], good: list[dict], order
) -> None:  # noqa: ANN001
    rows = [("bad", r) for r in hostile] + [("good", r) for r in good]
    order.shuffle(rows)
    frame = pd.DataFrame([r for _, r in rows], dtype=object)
    is_good = np.array([k == "good" for k, _ in rows])

    result = validate_customers(
        normalize_customers(frame), "hostile", frame, now=NOW
    )  # must not raise

    valid, rejected = result.valid, result.rejected
    n = len(frame)
    # every row is valid or rejected as a whole with a reason
    row_rejected = set(
        result.rejected_positions[(rejected["severity"] == "row").to_numpy()].tolist()
    )
    valid_pos = set(result.valid_positions.tolist())
    assert valid_pos | row_rejected == set(range(n))
    assert not valid_pos & row_rejected
    assert rejected["reason"].notna().all() and (rejected["reason"].str.len() > 10).all()
    assert rejected["raw_payload"].notna().all()

    # a received value missing from a valid row was quarantined for that field
    field_rejected = {
        (int(p), f)
        for p, f, sev in zip(
            result.rejected_positions, rejected["field"], rejected["severity"], strict=True
        )
        if sev == "field"
    }
    checked = [
        "first_name",
        "last_name",
        "company_name",
        "email",
        "phone",
        "country",
        "language",
        "updated_at",
        "created_at",
        "loyalty_points",
    ]
    for i, pos in enumerate(result.valid_positions):
        for col in checked:
            if not _blank(frame.iloc[pos][col]) and pd.isna(valid.iloc[i][col]):
                # blank-after-trim text and explicit "not set" consents are not values
                assert (pos, col) in field_rejected, (pos, col, frame.iloc[pos][col])

    # nothing good is lost, and good values come through unchanged
    bad_ids = {str(r["source_id"]) for k, r in rows if k == "bad"}
    for pos in np.flatnonzero(is_good):
        sid = frame.iloc[pos]["source_id"]
        if sid in bad_ids:
            continue  # a hostile copy shares the id: the newest copy wins, by design
        assert pos in valid_pos, sid
        out = valid.iloc[list(result.valid_positions).index(pos)]
        assert out["email"] == frame.iloc[pos]["email"]
        assert out["phone"] == frame.iloc[pos]["phone"]
        assert out["country"] == "SE" and out["last_name"] == frame.iloc[pos]["last_name"]
    good_pos = set(np.flatnonzero(is_good).tolist())
    assert not {
        p
        for p in result.rejected_positions.tolist()
        if p in good_pos and str(frame.iloc[p]["source_id"]) not in bad_ids
    }

    # what passed is canonical as it stands
    assert list(valid.columns) == list(VALIDATED_COLUMNS)
    canonical_schema(NOW).validate(
        valid, lazy=True
    )  # bounded dates, ISO codes, E.164, no formulas ...
    assert valid["source_id"].is_unique  # duplicated ids: one copy survives

    # reasons never carry an email address or a phone number in clear
    for j, (pos, fld) in enumerate(zip(result.rejected_positions, rejected["field"], strict=True)):
        if fld in ("email", "phone"):
            value = frame.iloc[pos][fld]
            if not isinstance(value, str):
                continue
            text = value.strip()
            # masked like j***@gmail.com: the domain may show, the mailbox never
            local = text.rpartition("@")[0] if fld == "email" and "@" in text else text
            if len(local) >= 2 and len(text) >= 5:
                # (the reason's own wording, "E.164", may contain a short digit run)
                assert text not in rejected["reason"].iloc[j].replace("E.164", "")
