"""The vectorized fast paths agree with the libraries they stand in for.

``fast_e164`` and ``fast_email`` may only *certify* values; whatever they
certify must equal what ``phonenumbers`` / ``email-validator`` return for the
same input. Numbers are drawn from the libraries' own example numbers in every
region, with digits changed and written in every common spelling.
"""

from __future__ import annotations

import random

import pandas as pd
import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custsync_pipeline.domain.normalize import (
    email_or_reason,
    fast_e164,
    fast_email,
    phone_or_reason,
)

TYPES = [
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.TOLL_FREE,
    phonenumbers.PhoneNumberType.VOIP,
]
FMT = phonenumbers.PhoneNumberFormat


def _spellings(rng: random.Random) -> list[tuple[str, str | None]]:
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    out: list[tuple[str, str | None]] = []
    for region in regions:
        for kind in TYPES:
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            for _ in range(3):
                nsn = list(str(example.national_number))
                for _ in range(rng.randint(0, 2)):  # perturb: often still valid, sometimes not
                    nsn[rng.randrange(len(nsn))] = str(rng.randrange(10))
                if rng.random() < 0.1:
                    nsn.append(str(rng.randrange(10)))
                num = phonenumbers.PhoneNumber(
                    country_code=example.country_code,
                    national_number=int("".join(nsn)),
                    italian_leading_zero=example.italian_leading_zero,
                    number_of_leading_zeros=example.number_of_leading_zeros,
                )
                e164 = phonenumbers.format_number(num, FMT.E164)
                spellings = [
                    e164,
                    phonenumbers.format_number(num, FMT.INTERNATIONAL),
                    phonenumbers.format_number(num, FMT.NATIONAL),
                    "00" + e164[1:],
                    e164.replace("+", "+ "),
                    "0" + "".join(nsn),
                    "(0" + "".join(nsn[:2]) + ") " + "".join(nsn[2:]),
                    "+" + str(example.country_code) + " (0) " + "".join(nsn),
                ]
                for text in spellings:
                    other = rng.choice(regions)
                    for reg in (region, other, None):
                        out.append((text, reg))
    return out


def test_fast_e164_agrees_with_phonenumbers_in_every_region() -> None:
    cases = _spellings(random.Random(42))
    values = pd.Series([c[0] for c in cases], dtype="string")
    regions = pd.Series([c[1] for c in cases], dtype="string")
    fast = fast_e164(values, regions)
    certified = fast.notna()
    assert certified.sum() > len(cases) * 0.15  # the fast path does real work
    checked = [
        (v, None if pd.isna(r) else r, f)
        for v, r, f in zip(values, regions, fast, strict=True)
        if not pd.isna(f)
    ]
    mismatches = [(v, r, f, lib) for v, r, f in checked if (lib := phone_or_reason(v, r)[0]) != f]
    assert mismatches == []


@pytest.mark.parametrize(
    ("value", "region", "expected"),
    [
        ("070-123 45 67", "SE", "+46701234567"),
        ("+46 70 123 45 67", None, "+46701234567"),
        ("0046701234567", "SE", "+46701234567"),
        ("+1 (212) 555-0123", None, "+12125550123"),  # NANP: the library's region rules
        ("+44 7983 694474", "GB", "+447983694474"),  # UK mobile (Guernsey's rules aside)
        ("07983 694474", "GB", "+447983694474"),
        ("07781 123456", "GG", None),  # written nationally in Guernsey: its transform, library
        ("01512 3456789", "IL", None),  # "015" is also how Israel dials abroad: library
        ("+31 6 12345678", "GB", "+31612345678"),  # the "+" wins over the record's region
        ("+46 (0)70 123 45 67", "SE", None),  # national prefix after +cc: left to the library
        ("412 34 567", "NO", "+4741234567"),  # no national prefix in Norway: the NSN itself
        ("26 12 34 56", "DK", "+4526123456"),
        ("47 12 34 56", "NO", None),  # starts like Norway's country code: the library decides
    ],
)
def test_fast_e164_examples(value: str, region: str | None, expected: str | None) -> None:
    got = fast_e164(pd.Series([value], dtype="string"), pd.Series([region], dtype="string")).iloc[0]
    assert (None if pd.isna(got) else got) == expected
    if expected is not None:
        assert phone_or_reason(value, region)[0] == expected


EMAIL_ALPHABET = st.sampled_from(
    list("abcXYZ019.-_+@ '\"!#$%&*/=?^`{|}~()<>[]:;,\\\t\x00åéİ\u212a")
    + ["--", "xn--", ".com", ".test", ".local", "@a.se"]
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(EMAIL_ALPHABET, max_size=30).map("".join), min_size=1, max_size=30))
def test_fast_email_only_certifies_what_the_library_accepts(raw: list[str]) -> None:
    fast = fast_email(pd.Series(raw, dtype="string"))
    for value, got in zip(raw, fast, strict=True):
        if not pd.isna(got):
            assert email_or_reason(value)[0] == got


def test_fast_email_covers_plain_addresses() -> None:
    raw = [
        "  Anna.Berg@Example.COM ",
        "x+tag@sub.domain.se",
        "a@b.test",
        "a@b--c.se",
        "a@xn--bcher-kva.ch",
        "ab@c",
    ]
    fast = fast_email(pd.Series(raw, dtype="string"))
    assert fast.tolist()[:2] == ["anna.berg@example.com", "x+tag@sub.domain.se"]
    assert fast.iloc[2:].isna().all()  # special-use, "--", Punycode, no TLD: the library decides
    assert email_or_reason(raw[0])[0] == "anna.berg@example.com"
