"""Phone region from country, else market (store code), else the connector's default;
received names and country kept beside the normalized ones."""

from __future__ import annotations

import pandas as pd
import pandas.testing as pdt

from custsync_pipeline.config import QualityConfig
from custsync_pipeline.domain.canonical import conform
from custsync_pipeline.domain.normalize import normalize_customers, phone_region
from custsync_pipeline.domain.validate import validate_customers

NOW = pd.Timestamp("2026-06-01T00:00:00Z")
SE_MOBILE = "070-123 45 67"  # national: valid in SE only
AU_MOBILE = "0412 345 678"  # national: valid in AU only


def _frame(**cols) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    cols.setdefault("source_id", [f"s{i}" for i in range(n)])
    cols.setdefault("last_name", ["Berg"] * n)
    return conform(pd.DataFrame(cols))


def test_region_precedence_country_market_default() -> None:
    frame = _frame(
        phone=[SE_MOBILE, SE_MOBILE, AU_MOBILE, SE_MOBILE, SE_MOBILE, SE_MOBILE],
        country=["SE", None, None, "Atlantis", "NO", None],
        store_code=["AU01", "SE01", "shop-7", "SE-STHLM", "SE01", None],
    )
    region = phone_region(
        normalize_customers(frame), default_region="FI", market_regions={"shop-7": "AU"}
    )
    # country wins; else the mapped or self-naming store code; else the default
    assert list(region) == ["SE", "SE", "AU", "SE", "NO", "FI"]
    out = normalize_customers(frame, default_region="FI", market_regions={"shop-7": "AU"})
    assert list(out["phone"].fillna("-")) == [
        "+46701234567",
        "+46701234567",
        "+61412345678",
        "+46701234567",
        "-",  # a Swedish mobile is not a Norwegian number: the country decides
        "+358701234567",  # read in the default region: a Finnish number
    ]


def test_store_codes_that_do_not_name_a_country_give_no_region() -> None:
    frame = _frame(phone=[SE_MOBILE] * 3, store_code=["STORE1", "XX01", "se"])
    region = phone_region(normalize_customers(frame))
    assert region.isna().tolist() == [True, True, False] and region.iloc[2] == "SE"


def test_reason_names_the_region_the_number_was_read_in() -> None:
    frame = normalize_customers(
        _frame(phone=["0412 345"], store_code=["shop-7"]), market_regions={"shop-7": "AU"}
    )
    res = validate_customers(
        frame, "shop", connector_type="file", now=NOW, market_regions={"shop-7": "AU"}
    )
    reason = res.rejected.loc[res.rejected["field"] == "phone", "reason"].iloc[0]
    assert "region AU" in reason
    assert "0412" not in reason


def test_quality_config_checks_region_codes() -> None:
    assert QualityConfig(default_region="SE", market_regions={"SE01": "SE"}).default_region == "SE"
    for bad in ({"default_region": "swe"}, {"market_regions": {"SE01": "Sweden"}}):
        try:
            QualityConfig(**bad)
        except ValueError as exc:
            assert "alpha-2" in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")


def test_received_names_and_country_kept_beside_normalized_ones() -> None:
    frame = _frame(
        first_name=["  anna\u200b  maria ", None],
        last_name=["Berg ", "Lind"],
        company_name=[None, " ACME  AB"],
        country=["Sverige", "Atlantis"],
    )
    out = normalize_customers(frame)
    assert out["first_name"].iloc[0] == "anna maria"
    assert out["first_name_raw"].iloc[0] == "  anna\u200b  maria "
    assert out["last_name_raw"].tolist() == ["Berg ", "Lind"]
    assert out["company_name_raw"].iloc[1] == " ACME  AB" and out["company_name"].iloc[1] == (
        "ACME AB"
    )
    assert out["country"].tolist() == ["SE", "Atlantis"]
    assert out["country_raw"].tolist() == ["Sverige", "Atlantis"]
    # idempotent: a second pass keeps the first pass's received values
    pdt.assert_frame_equal(normalize_customers(out), out)
    # validation drops the unknown country but the received value stays
    res = validate_customers(out, "file", connector_type="file", now=NOW)
    assert pd.isna(res.valid["country"].iloc[1]) and res.valid["country_raw"].iloc[1] == "Atlantis"
    assert res.valid["first_name_raw"].iloc[0] == "  anna\u200b  maria "
