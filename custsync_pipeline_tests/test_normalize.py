"""Unit tests of domain.normalize on small hand-built frames."""

from __future__ import annotations

import pandas as pd
import pytest

from custsync_pipeline.domain import normalize as nz
from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.domain.normalize import normalize_customers


def _frame(**cols: list) -> pd.DataFrame:
    return conform(pd.DataFrame(cols))


def test_email_trimmed_lowercased_raw_kept() -> None:
    out = normalize_customers(
        _frame(source_id=["1", "2", "3"], email=["  Anna.B@Example.COM ", "not-an-email", None])
    )
    assert out["email"].tolist()[:2] == ["anna.b@example.com", pd.NA]
    assert out["email"].isna().tolist() == [False, True, True]
    assert out["email_raw"].tolist()[:2] == ["  Anna.B@Example.COM ", "not-an-email"]
    assert pd.isna(out["email_raw"].iloc[2])


def test_email_with_a_space_typed_inside_is_the_address_without_it() -> None:
    """A surname with a particle put into an address whole (``familjen.von platen@``), a
    space in the domain: the address without the space when that one is valid (the
    received value kept); two addresses in one field stay no address."""
    out = normalize_customers(
        _frame(
            source_id=["1", "2", "3", "4"],
            email=[
                "Familjen.von Platen@Example.se",
                "info@af ekenstam.se",
                "a@x.se b@y.se",
                "no at sign",
            ],
        )
    )
    assert out["email"].tolist()[:2] == ["familjen.vonplaten@example.se", "info@afekenstam.se"]
    assert out["email"].isna().tolist()[2:] == [True, True]
    assert out["email_raw"].iloc[0] == "Familjen.von Platen@Example.se"
    assert nz.email_or_reason("a@x.se b@y.se")[1]  # still says why it is no address
    # a word beside an address is not glued into a made-up one
    for beside in (
        "Anna Svensson anna@x.se",
        "E-post anna@x.se",
        "anna@gmail.com home",
        "anna@x.se\tbo",
        "anna svensson@x.se",  # one gap, but no dotted name before it: not sure enough
    ):
        assert nz.email_or_reason(beside)[0] is None, beside
    assert nz.email_or_reason("anna @ x.se")[0] == "anna@x.se"


def test_phone_e164_uses_record_country() -> None:
    out = normalize_customers(
        _frame(
            source_id=["1", "2", "3", "4", "5"],
            phone=["070-123 45 67", "070-123 45 67", "+46 70 123 45 67", "12", "0046701234567"],
            country=["SE", "Norway", None, "SE", "DE"],
        )
    )
    # same digits read in Sweden vs Norway: Swedish mobile vs an invalid Norwegian number
    assert out["phone"].iloc[0] == "+46701234567"
    assert pd.isna(out["phone"].iloc[1])
    assert out["phone"].iloc[2] == "+46701234567"  # international form needs no region
    assert pd.isna(out["phone"].iloc[3])
    assert out["phone"].iloc[4] == "+46701234567"  # 00 prefix dialled from Germany
    assert out["phone_raw"].tolist()[0] == "070-123 45 67"


def test_default_region_used_when_country_missing() -> None:
    frame = _frame(source_id=["1"], phone=["070-123 45 67"])
    assert pd.isna(normalize_customers(frame)["phone"].iloc[0])
    assert normalize_customers(frame, default_region="SE")["phone"].iloc[0] == "+46701234567"


def test_names_trimmed_collapsed_controls_removed() -> None:
    out = normalize_customers(
        _frame(
            source_id=["1", "2", "3"],
            first_name=["  Anna \t  Maria\n", "B\u200bo\x00b\u202e", "   "],
            last_name=["x", None, "Ek"],
        )
    )
    assert out["first_name"].iloc[0] == "Anna Maria"
    # zero-width characters go; control and bidi characters stay for validation to quarantine
    assert out["first_name"].iloc[1] == "Bo\x00b\u202e"
    assert pd.isna(out["first_name"].iloc[2])  # blank is missing, not an empty name


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Sweden", "SE"),
        ("SWE", "SE"),
        ("se", "SE"),
        (" Sverige ", "SE"),
        ("752", "SE"),
        ("UK", "GB"),
        ("United Kingdom", "GB"),
        ("USA", "US"),
        ("Deutschland", "DE"),
        ("Netherlands", "NL"),
        ("Atlantis", "Atlantis"),
    ],
)
def test_country_to_alpha2(given: str, expected: str) -> None:
    out = normalize_customers(_frame(source_id=["1"], country=[given]))
    assert out["country"].iloc[0] == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sv-SE", "sv"),
        ("SV", "sv"),
        ("swe", "sv"),
        ("Swedish", "sv"),
        ("en_GB", "en"),
        ("xx", "xx"),
    ],
)
def test_language_to_iso639_1(given: str, expected: str) -> None:
    assert (
        normalize_customers(_frame(source_id=["1"], language=[given]))["language"].iloc[0]
        == expected
    )


def test_consents_and_kind() -> None:
    out = normalize_customers(
        _frame(
            source_id=list("1234"),
            email_consent=["Yes", "false", "Not set", "maybe"],
            kind=["Person", "B2B", None, "alien"],
        )
    )
    assert out["email_consent"].tolist()[:2] == ["yes", "no"]
    assert pd.isna(out["email_consent"].iloc[2])
    assert out["email_consent"].iloc[3] == "maybe"  # left for validation to report
    assert out["kind"].tolist()[:2] == ["person", "company"]
    assert out["kind"].iloc[3] == "alien"


def test_idempotent() -> None:
    frame = _frame(
        source_id=["1", "2"],
        email=[" A@B.se", "bad"],
        phone=["070-1234567", "x"],
        country=["se", "SE"],
    )
    once = normalize_customers(frame)
    twice = normalize_customers(once)
    pd.testing.assert_frame_equal(once, twice)


def test_library_called_once_per_unique_value(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = nz.email_or_reason

    def counting(value: str) -> tuple[str | None, str | None]:
        calls.append(value)
        return real(value)

    monkeypatch.setattr(nz, "email_or_reason", counting)
    # plain ASCII addresses are certified without the library; these need it
    emails = ["åsa@b.se", "broken@", None] * 1000
    out = normalize_customers(_frame(source_id=[str(i) for i in range(3000)], email=emails))
    assert sorted(calls) == ["broken@", "åsa@b.se"]
    assert out["email"].notna().sum() == 1000


def test_phone_library_called_once_per_unique_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str | None]] = []
    real = nz.phone_or_reason

    def counting(value: str, region: str | None) -> tuple[str | None, str | None]:
        calls.append((value, region))
        return real(value, region)

    monkeypatch.setattr(nz, "phone_or_reason", counting)
    nz._library_e164.cache_clear()  # what earlier tests normalized is cached
    phones = ["070-123 45 67", "+46 70 123 45 67", "12", "12"] * 500
    countries = ["SE", "SE", "SE", "NO"] * 500
    out = normalize_customers(
        _frame(source_id=[str(i) for i in range(2000)], phone=phones, country=countries)
    )
    # the two good spellings are certified by the vectorized path; "12" needs the library once per region
    assert sorted(calls) == [("12", "NO"), ("12", "SE")]
    assert out["phone"].value_counts().to_dict() == {"+46701234567": 1000}
    # once per process: the entries of the same records ask again and find it decided
    again = nz.normalize_phone(pd.Series(["12", "12"]), pd.Series(["SE", "NO"]))
    assert again.isna().all() and len(calls) == 2


def test_index_preserved() -> None:
    frame = _frame(source_id=["1", "2"], email=["A@B.se", "x"]).set_axis([10, 20])
    out = normalize_customers(frame)
    assert out.index.tolist() == [10, 20]
    assert out.loc[10, "email"] == "a@b.se"
