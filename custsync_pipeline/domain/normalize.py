"""Normalization of canonical customer frames: one representation per value.

``normalize_customers`` rewrites what connectors received into the canonical
representation and keeps what was received beside it:

* ``email``: trimmed, lower-cased and syntax-checked with ``email-validator``
  (spaces typed inside an address removed where they can only be typos: around the
  ``@``, in the domain before its last dot, one gap in a dotted local part)
  (no DNS); the received value stays in ``email_raw``; an invalid address
  becomes ``<NA>`` (``domain.validate`` records why).
* ``phone``: E.164 via ``phonenumbers``, the region taken from the record's
  ``country``, else its market (``store_code``), else ``default_region``; the received value stays in
  ``phone_raw``; an unparseable or invalid number becomes ``<NA>``.
* names, company, street, city: control characters removed, whitespace
  trimmed and collapsed; the received first/last/company name stays in
  ``<field>_raw``.
* ``country``: ISO 3166-1 alpha-2 from alpha-2, alpha-3, numeric and common
  English or local names (received value in ``country_raw``); ``language``: ISO 639-1 from tags such as ``sv-SE``,
  alpha-3 codes and names; consents to ``yes``/``no``. A value that cannot be
  mapped is left as received (trimmed) so that ``domain.validate`` can report
  it and null it: normalization canonicalizes, validation judges.

Every library call runs once per unique value (or unique value/region pair),
never once per row; plain string work is vectorized with pandas.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping
from functools import lru_cache

import email_validator
import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
import pycountry
from email_validator import EmailNotValidError, validate_email

# Free-text columns: whitespace collapsed, control characters removed.
TEXT_COLUMNS: tuple[str, ...] = ("first_name", "last_name", "company_name", "street", "city")
# Normalized fields whose received value is kept in ``<field>_raw`` (email and phone too).
RAW_KEPT: tuple[str, ...] = ("first_name", "last_name", "company_name", "country")
# Identifier-like columns: only trimmed (inner spaces may be meaningful in a code).
TRIM_COLUMNS: tuple[str, ...] = (
    "connector",
    "source_id",
    "object_type",
    "kind",
    "postal_code",
    "store_code",
    "salesforce_id",
    "voyado_id",
    "voucherify_id",
    "voucherify_source_id",
    "customer_number",
    "exact_id",
    "web_user_id",
    "icomm_user_id",
    "katana_id",
    "custsync_id",
    "loyalty_tier",
    "loyalty_status",
)

# Invisible zero-width characters pasted with a name carry nothing: removed. Control and
# bidi-override characters are left in place for validation to quarantine (they
# signal a corrupted or disguised value, not a formatting habit).
_INVISIBLE_RE = "[\u200b-\u200d\u2060\ufeff]"

# Common spellings that pycountry's official names do not cover.
_COUNTRY_ALIASES: dict[str, str] = {
    "uk": "GB",
    "u.k.": "GB",
    "great britain": "GB",
    "britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "usa": "US",
    "u.s.a.": "US",
    "u.s.": "US",
    "america": "US",
    "united states of america": "US",
    "sverige": "SE",
    "schweden": "SE",
    "suède": "SE",
    "suecia": "SE",
    "norge": "NO",
    "noreg": "NO",
    "danmark": "DK",
    "suomi": "FI",
    "ísland": "IS",
    "deutschland": "DE",
    "germany": "DE",
    "nederland": "NL",
    "holland": "NL",
    "the netherlands": "NL",
    "belgië": "BE",
    "belgique": "BE",
    "österreich": "AT",
    "schweiz": "CH",
    "suisse": "CH",
    "svizzera": "CH",
    "españa": "ES",
    "italia": "IT",
    "polska": "PL",
    "eesti": "EE",
    "latvija": "LV",
    "lietuva": "LT",
    "czech republic": "CZ",
    "česko": "CZ",
    "russia": "RU",
    "south korea": "KR",
    "korea": "KR",
    "vietnam": "VN",
    "iran": "IR",
    "syria": "SY",
    "taiwan": "TW",
    "bolivia": "BO",
    "venezuela": "VE",
    "tanzania": "TZ",
    "moldova": "MD",
    "laos": "LA",
}

_LANGUAGE_ALIASES: dict[str, str] = {
    "svenska": "sv",
    "norsk": "no",
    "bokmål": "nb",
    "nynorsk": "nn",
    "dansk": "da",
    "suomi": "fi",
    "deutsch": "de",
    "nederlands": "nl",
    "français": "fr",
    "español": "es",
    "italiano": "it",
    "polski": "pl",
    "english": "en",
    "eng": "en",
    "swe": "sv",
    "nor": "no",
    "dan": "da",
    "fin": "fi",
    "ger": "de",
    "deu": "de",
    "dut": "nl",
    "nld": "nl",
    "fre": "fr",
    "fra": "fr",
}

_CONSENT_MAP: dict[str, str] = {
    **dict.fromkeys(
        [
            "yes",
            "y",
            "true",
            "t",
            "1",
            "1.0",
            "opt-in",
            "optin",
            "opted_in",
            "subscribed",
            "granted",
            "ja",
            "on",
        ],
        "yes",
    ),
    **dict.fromkeys(
        [
            "no",
            "n",
            "false",
            "f",
            "0",
            "0.0",
            "opt-out",
            "optout",
            "opted_out",
            "unsubscribed",
            "denied",
            "nej",
            "off",
        ],
        "no",
    ),
}
# Explicit "no answer" markers: they become <NA> without being an error.
_CONSENT_UNSET = frozenset(
    {"not set", "notset", "unset", "unknown", "none", "null", "n/a", "na", ""}
)

_KIND_MAP: dict[str, str] = {
    "person": "person",
    "private": "person",
    "individual": "person",
    "b2c": "person",
    "contact": "person",
    "company": "company",
    "organization": "company",
    "organisation": "company",
    "business": "company",
    "b2b": "company",
    "account": "company",
}


@lru_cache(maxsize=1)
def country_table() -> dict[str, str]:
    """Lower-cased spelling -> ISO 3166-1 alpha-2 (alpha-2, alpha-3, numeric, names, aliases)."""
    table: dict[str, str] = {}
    for c in pycountry.countries:
        for attr in ("alpha_2", "alpha_3", "numeric", "name", "official_name", "common_name"):
            value = getattr(c, attr, None)
            if value:
                table[str(value).lower()] = c.alpha_2
    table.update(_COUNTRY_ALIASES)
    return table


@lru_cache(maxsize=1)
def iso_countries() -> frozenset[str]:
    """Every ISO 3166-1 alpha-2 code."""
    return frozenset(c.alpha_2 for c in pycountry.countries)


@lru_cache(maxsize=1)
def language_table() -> dict[str, str]:
    """Lower-cased spelling -> ISO 639-1 (two-letter codes, alpha-3 codes, English names)."""
    table: dict[str, str] = {}
    for lang in pycountry.languages:
        a2 = getattr(lang, "alpha_2", None)
        if not a2:
            continue
        table[a2] = a2
        for attr in ("alpha_3", "bibliographic", "name"):
            value = getattr(lang, attr, None)
            if value:
                table[str(value).lower()] = a2
    table.update(_LANGUAGE_ALIASES)
    return table


@lru_cache(maxsize=1)
def iso_languages() -> frozenset[str]:
    """Every ISO 639-1 code."""
    return frozenset(lang.alpha_2 for lang in pycountry.languages if hasattr(lang, "alpha_2"))


# --------------------------------------------------------------------------- helpers


def _as_string(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.StringDtype):
        return series
    # Non-string scalars (numbers typed by a sloppy export) become their text.
    return series.astype("string")


def map_unique(series: pd.Series, func: Callable[[Hashable], object]) -> pd.Series:
    """Apply ``func`` once per distinct non-null value of ``series`` and broadcast back."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    mapped = [func(u) for u in uniques]
    out = pd.Series(pd.array(mapped + [pd.NA], dtype="string")).take(codes)
    # factorize marks nulls with -1: take(-1) picks the trailing <NA>
    out.index = series.index
    return out


def _blank_to_na(series: pd.Series) -> pd.Series:
    return series.mask(series == "", pd.NA)


def clean_text(series: pd.Series) -> pd.Series:
    """Remove zero-width characters, collapse whitespace, trim; empty -> <NA>. Once per distinct value."""
    s = _as_string(series)
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    if len(uniques) > len(s) // 2:  # mostly distinct: vectorize over the column itself
        return _blank_to_na(_clean_text(s))
    cleaned = _blank_to_na(_clean_text(pd.Series(uniques, dtype="string")))
    out = pd.Series(pd.array(list(cleaned) + [pd.NA], dtype="string")).take(codes)
    out.index = s.index
    return out


def _clean_text(s: pd.Series) -> pd.Series:
    return (
        s.str.replace(_INVISIBLE_RE, "", regex=True)
        .str.replace(r"\s+", " ", regex=True)
        .str.strip()
    )


# Every character Python's str.strip() removes, as an RE2 class: Arrow's C++ regex finds
# the few values that need stripping, so str.strip() runs on those only.
# (the highest such character is U+3000 IDEOGRAPHIC SPACE)
_SPACE_CLASS = "".join(f"\\x{{{ord(c):04x}}}" for c in map(chr, range(0x3001)) if c.isspace())
_EDGE_SPACE_RE = f"^[{_SPACE_CLASS}]|[{_SPACE_CLASS}]$|^$"


def trim(series: pd.Series) -> pd.Series:
    """Trim surrounding whitespace (as ``str.strip``); empty -> <NA>."""
    s = _as_string(series)
    if not s.notna().any():  # most identifier columns are empty for a given connector
        return s
    edge = _fill(pc.match_substring_regex(_arrow(s), _EDGE_SPACE_RE))
    if not edge.any():
        return s
    out = s.copy()
    out[edge] = _blank_to_na(s[edge].str.strip())
    return out


# --------------------------------------------------------------------------- email


def email_or_reason(value: str) -> tuple[str | None, str | None]:
    """(normalized address, None) or (None, why it is not an address). One library call."""
    candidate = value.strip().lower()
    if not candidate:
        return None, None
    try:
        result = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        joined = _spaces_typed_inside(candidate)
        if joined is not None:
            fixed, _ = email_or_reason(joined)
            if fixed is not None:
                return fixed, None
        return None, value_free_reason(str(exc), candidate)
    return result.normalized.lower(), None


def _spaces_typed_inside(candidate: str) -> str | None:
    """The address without the spaces typed inside it, where they can only be typos: around
    the ``@``, in the domain before its last dot (``info@af ekenstam.se``), and one gap
    in a dotted local part (``familjen.von platen@``: a surname with a particle put in
    whole). None for anything else: a word beside an address (``E-post anna@x.se``,
    ``anna@x.se hem``) must not be glued into a made-up address."""
    if candidate.count("@") != 1 or not re.search(r"\s", candidate):
        return None
    local, domain = (part.strip() for part in candidate.split("@"))
    gaps = re.findall(r"\s+", local)
    if len(gaps) > 1 or (gaps and "." not in local.split(gaps[0])[0]):
        return None
    if re.search(r"\s", domain[domain.rfind(".") :] if "." in domain else domain):
        return None
    return re.sub(r"\s+", "", local) + "@" + re.sub(r"\s+", "", domain)


_GENERIC_EMAIL_REASON = "The email address is not valid."


def value_free_reason(message: str, value: str) -> str:
    """email-validator's message without any part of the address (personal data).

    Its messages quote the offending characters after a colon, details in
    parentheses and the domain by name; keep the sentence before those, and fall
    back to a generic reason if a piece of the address would still show.
    """
    text = re.sub(r"The domain name \S+ ", "The domain name ", message)
    text = re.split(r":\s|\s\(", text, maxsplit=1)[0].strip().rstrip(".") + "."
    local, _, domain = value.rpartition("@")
    pieces = [p for p in (value, local, domain) if len(p) >= 2]
    if any(p in text.lower() for p in pieces) or len(text) > 200:
        return _GENERIC_EMAIL_REASON
    return text


# A strict ASCII subset of what email-validator accepts, with its normalization
# being the identity: dot-atom local part, LDH labels without "--" (so no
# Punycode or IDNA rules apply), an alphabetic TLD. Addresses it certifies skip
# the library; everything else goes through the library (which also says why).
_FAST_EMAIL_RE = (
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)


def arrow_strings(series: pd.Series) -> pa.Array:
    """The values as an Arrow string array (nulls kept), for vectorized C++ string kernels."""
    values = series.array if isinstance(series.dtype, pd.StringDtype) else None
    if values is None:
        values = series.astype("string").array
    if isinstance(values, pd.arrays.ArrowStringArray):
        return values._pa_array.combine_chunks()
    # python-storage strings hold str or pd.NA objects: Arrow reads the object array
    # directly (twice as fast as to_numpy(na_value=None) first)
    return pa.array(np.asarray(values._ndarray), type=pa.string(), from_pandas=True)


_arrow = arrow_strings


def _fill(mask: pa.Array) -> np.ndarray:
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


def fast_email(values: pd.Series) -> pd.Series:
    """Certified normalized addresses (trimmed, lower-cased) or <NA> where the library must decide.

    Only ASCII input is considered, trimmed of ASCII whitespace and ASCII-lower-cased,
    so the result is exactly what ``email_or_reason`` would return for it.
    """
    arr = _arrow(values)
    text = pc.ascii_lower(pc.ascii_trim_whitespace(arr))
    ok = _fill(pc.and_(pc.string_is_ascii(arr), pc.match_substring_regex(text, _FAST_EMAIL_RE)))
    out = np.full(len(arr), None, dtype=object)
    if ok.any():
        idx = np.flatnonzero(ok)
        sub = pc.take(text, pa.array(idx))
        parts = pc.split_pattern(sub, "@", max_splits=1)
        local = pc.list_element(parts, 0)
        domain = pc.list_element(parts, 1)
        good = pc.and_(
            pc.less_equal(pc.utf8_length(sub), 254),
            pc.less_equal(pc.utf8_length(local), 64),
        )
        good = pc.and_(good, pc.invert(pc.match_substring(domain, "--")))
        for name in email_validator.SPECIAL_USE_DOMAIN_NAMES:
            special = pc.or_(pc.equal(domain, name), pc.ends_with(domain, "." + name))
            good = pc.and_(good, pc.invert(special))
        keep = _fill(good)
        out[idx[keep]] = pc.filter(sub, pa.array(keep)).to_numpy(zero_copy_only=False)
    result = pd.Series(pd.array(out, dtype="string"), index=values.index)
    return result


def normalize_email(series: pd.Series) -> pd.Series:
    """Trimmed, lower-cased, syntax-checked addresses; invalid -> <NA>."""
    s = _as_string(series)
    out = fast_email(s)
    rest = out.isna() & s.notna()
    if rest.any():
        out[rest] = map_unique(s[rest], lambda v: email_or_reason(str(v))[0])
    return out


# --------------------------------------------------------------------------- phone


def phone_or_reason(value: str, region: str | None) -> tuple[str | None, str | None]:
    """(E.164, None) or (None, why not). ``region`` is an ISO alpha-2 code or None."""
    text = value.strip()
    if not text:
        return None, None
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        return None, f"not a phone number: {exc._msg}"
    except Exception:  # noqa: BLE001 - the library must never stop a run on hostile input
        return None, "not a phone number"
    if not phonenumbers.is_valid_number(parsed):
        where = f" for region {region}" if region else ""
        return None, f"not a valid phone number{where}"
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None


# ---- vectorized phonenumbers fast path
#
# For the common spellings — "+<cc> …", "00<cc> …" where the region dials 00
# abroad, and "0 …" where the region's national prefix is a plain "0" — the
# E.164 form is "+" + country code + national significant number (NSN), and
# validity is phonenumbers' own rule: the NSN matches the general description
# and one number-type description (length and pattern) of the region that
# ``region_code_for_number`` would pick. Those regexes come from phonenumbers'
# metadata and run vectorized per country code. Only numbers certified this way
# skip the library; the rest (and every failure, with its reason) go through
# ``phone_or_reason``. A property test holds the two paths equal.

_PHONE_SHAPE_RE = r"^\+?[0-9(][0-9 ().\-]*[0-9]$"
_TYPE_DESCS = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)


def _simple_npfp(meta: phonenumbers.PhoneMetadata) -> bool:
    """National-prefix parsing without carrier codes or transforms (so stripping is plain)."""
    npfp = meta.national_prefix_for_parsing
    if meta.national_prefix_transform_rule:
        return False
    return npfp is None or re.compile(npfp).groups == 0


@lru_cache(maxsize=1)
def _phone_plan() -> tuple[
    dict[int, list[phonenumbers.PhoneMetadata]], dict[str, int], frozenset[str]
]:
    """(eligible country code -> region metadata in library order, region -> cc for the national
    path, regions whose international prefix is exactly 00)."""
    by_cc, national, idd00, _ = _phone_plan_full()
    return by_cc, national, idd00


@lru_cache(maxsize=1)
def _phone_plan_full() -> tuple[
    dict[int, list[phonenumbers.PhoneMetadata]],
    dict[str, int],
    frozenset[str],
    dict[str, int],
]:
    """``_phone_plan`` plus the bare path: region -> cc for regions without any national
    prefix (Norway, Denmark ...), where a national number
    is written as its NSN."""
    by_cc: dict[int, list[phonenumbers.PhoneMetadata]] = {}
    for cc, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        metas = [phonenumbers.PhoneMetadata.metadata_for_region(r, None) for r in regions]
        if "001" in regions or any(m is None for m in metas):
            continue  # non-geographic entities and regions without metadata: library only
        # after "+cc" the library strips a national prefix by the main region's rules
        # only: a dependency's own transform (Guernsey's "1481") matters only to numbers
        # written nationally there, which the national path leaves to the library
        if _simple_npfp(metas[0]):
            by_cc[cc] = metas
    national: dict[str, int] = {}
    idd00: set[str] = set()
    for cc, metas in by_cc.items():
        for m in metas:
            npfp = m.national_prefix_for_parsing or ""
            simple = _simple_npfp(m)
            if simple and m.national_prefix == "0" and (npfp == "0" or npfp.startswith("0|")):
                national[m.id] = cc
            if m.international_prefix == "00":
                idd00.add(m.id)
    bare: dict[str, int] = {}
    for cc, metas in by_cc.items():
        for m in metas:
            if not m.national_prefix and not m.national_prefix_for_parsing:
                bare[m.id] = cc
    return by_cc, national, frozenset(idd00), bare


def _dialled_abroad(
    digits: pa.Array, reg: pa.Array, mask: np.ndarray, own_cc: bool = False
) -> np.ndarray:
    """Where ``mask`` holds: the numbers that start with their region's international
    prefix (the library may read them as dialled abroad) or, with ``own_cc``, with its
    country code (the library may strip it). One regex per region present."""
    out = np.zeros(len(mask), dtype=bool)
    if not mask.any():
        return out
    reg_np = reg.to_numpy(zero_copy_only=False)
    for r in np.unique(reg_np[mask]):
        meta = phonenumbers.PhoneMetadata.metadata_for_region(str(r), None)
        if meta is None:
            continue
        idx = np.flatnonzero(mask & (reg_np == r))
        sub = pc.take(digits, pa.array(idx))
        clash = np.zeros(len(idx), dtype=bool)
        if own_cc:
            clash |= _fill(pc.starts_with(sub, str(meta.country_code)))
        if meta.international_prefix:
            pattern = f"^(?:{meta.international_prefix})"
            clash |= _fill(pc.match_substring_regex(sub, pattern))
        out[idx[clash]] = True
    return out


def _desc_matches(nsn: pa.Array, desc: object) -> pa.Array:
    """phonenumbers' ``_is_number_matching_desc``: possible length, then a full pattern match."""
    pattern = getattr(desc, "national_number_pattern", None)
    if desc is None or not pattern:
        return pa.array(np.zeros(len(nsn), dtype=bool))
    ok = pc.match_substring_regex(nsn, f"^(?:{pattern})$")
    lengths = tuple(desc.possible_length)
    if lengths:
        ok = pc.and_(ok, pc.is_in(pc.utf8_length(nsn), value_set=pa.array(lengths, pa.int32())))
    return ok


# Most numbers are mobile or fixed-line: testing those types first leaves few numbers
# for the other eight (only "matches some type" matters, so the order is free).
_TYPE_ORDER = ("mobile", "fixed_line") + tuple(
    t for t in _TYPE_DESCS if t not in ("mobile", "fixed_line")
)


def _type_known(nsn: pa.Array, meta: phonenumbers.PhoneMetadata) -> np.ndarray:
    """phonenumbers' ``_number_type_helper(...) != UNKNOWN``, vectorized.

    The general description first, then each type only on the numbers no earlier
    type matched (every regex runs on a shrinking subset)."""
    known = _fill(_desc_matches(nsn, meta.general_desc))
    todo = np.flatnonzero(known)
    any_type = np.zeros(len(nsn), dtype=bool)
    for name in _TYPE_ORDER:
        if not len(todo):
            break
        desc = getattr(meta, name)
        if desc is None or not getattr(desc, "national_number_pattern", None):
            continue
        hit = _fill(_desc_matches(pc.take(nsn, pa.array(todo)), desc))
        any_type[todo[hit]] = True
        todo = todo[~hit]
    return known & any_type


def _valid_for_cc(nsn: pa.Array, metas: list[phonenumbers.PhoneMetadata]) -> np.ndarray:
    """phonenumbers.is_valid_number for NSNs of one country code, vectorized."""
    if len(metas) == 1:
        return _type_known(nsn, metas[0])
    valid = np.zeros(len(nsn), dtype=bool)
    unclaimed = np.ones(len(nsn), dtype=bool)
    for meta in metas:  # region_code_for_number: the first region that claims the number decides
        known = _type_known(nsn, meta)
        if meta.leading_digits is not None:
            claims = _fill(pc.match_substring_regex(nsn, f"^(?:{meta.leading_digits})"))
        else:
            claims = known
        mine = unclaimed & claims
        valid[mine] = known[mine]
        unclaimed &= ~claims
    return valid


def fast_e164(values: pd.Series, region: pd.Series) -> pd.Series:
    """E.164 where the vectorized rules certify the number; <NA> where the library must decide."""
    by_cc, national, idd00, bare_plan = _phone_plan_full()
    arr = _arrow(values)
    out = np.full(len(arr), None, dtype=object)
    text = pc.ascii_trim_whitespace(arr)
    shaped = _fill(
        pc.and_(
            pc.and_(pc.string_is_ascii(arr), pc.match_substring_regex(text, _PHONE_SHAPE_RE)),
            pc.less_equal(pc.utf8_length(text), 40),
        )
    )
    if not shaped.any():
        return pd.Series(pd.array(out, dtype="string"), index=values.index)
    rows = np.flatnonzero(shaped)
    digits = pc.take(text, pa.array(rows))
    for sep in " -().":  # literal replaces: cheaper than one regex over every number
        digits = pc.replace_substring(digits, sep, "")
    reg = pc.fill_null(pc.take(_arrow(region), pa.array(rows)), "")
    plus = _fill(pc.starts_with(digits, "+"))
    idd = (
        ~plus
        & _fill(pc.starts_with(digits, "00"))
        & ~_fill(pc.starts_with(pc.utf8_slice_codeunits(digits, 2), "0"))
        & _fill(pc.is_in(reg, value_set=pa.array(sorted(idd00), pa.string())))
    )
    nat_regions = sorted(national)
    nat = (
        ~plus
        & ~idd
        & _fill(pc.starts_with(digits, "0"))
        & ~_fill(pc.starts_with(pc.utf8_slice_codeunits(digits, 1), "0"))
        & _fill(pc.is_in(reg, value_set=pa.array(nat_regions, pa.string())))
    )
    # "0..." that the region's international prefix also reads ("015" in IL)
    nat &= ~_dialled_abroad(digits, reg, nat)
    # bare: a region without a national prefix writes the NSN itself ("412 34 567" in NO).
    # Left to the library: a leading 0, the region's own country code (the library may
    # strip it) and anything its international prefix matches.
    bare = ~plus & ~idd & ~nat & ~_fill(pc.starts_with(digits, "0"))
    bare &= _fill(pc.is_in(reg, value_set=pa.array(sorted(bare_plan), pa.string())))
    bare &= ~_dialled_abroad(digits, reg, bare, own_cc=True)
    intl = pc.if_else(
        pa.array(plus), pc.utf8_slice_codeunits(digits, 1), pc.utf8_slice_codeunits(digits, 2)
    )
    intl_len = pc.utf8_length(intl).to_numpy(zero_copy_only=False)
    from_intl = plus | idd

    cc = np.zeros(len(rows), dtype=np.int64)
    known_ccs = pa.array(
        sorted(str(c) for c in phonenumbers.COUNTRY_CODE_TO_REGION_CODE), pa.string()
    )
    for length in (1, 2, 3):  # country codes are prefix-free; the library takes the first hit too
        code = pc.utf8_slice_codeunits(intl, 0, length)
        hit = (
            from_intl & (cc == 0) & (intl_len > length) & _fill(pc.is_in(code, value_set=known_ccs))
        )
        if hit.any():
            cc[hit] = pc.cast(pc.filter(code, pa.array(hit)), pa.int64()).to_numpy()
    if nat.any():
        nat_cc = np.array([national[r] for r in nat_regions], dtype=np.int64)
        pos = pc.index_in(reg, value_set=pa.array(nat_regions, pa.string())).to_numpy(
            zero_copy_only=False
        )
        cc[nat] = nat_cc[pos[nat].astype(np.int64)]
    if bare.any():
        bare_regions = sorted(bare_plan)
        bare_cc = np.array([bare_plan[r] for r in bare_regions], dtype=np.int64)
        pos = pc.index_in(reg, value_set=pa.array(bare_regions, pa.string())).to_numpy(
            zero_copy_only=False
        )
        cc[bare] = bare_cc[pos[bare].astype(np.int64)]

    for code in np.unique(cc[cc > 0]):
        metas = by_cc.get(int(code))
        if metas is None:
            continue
        sel = np.flatnonzero(cc == code)
        is_intl = from_intl[sel]
        # national significant number: after the country code, after the national prefix
        # "0", or the digits themselves (bare)
        national_nsn = pc.utf8_slice_codeunits(pc.take(digits, pa.array(sel)), 1)
        if bare[sel].any():
            national_nsn = pc.if_else(
                pa.array(bare[sel]), pc.take(digits, pa.array(sel)), national_nsn
            )
        nsn = pc.if_else(
            pa.array(is_intl),
            pc.utf8_slice_codeunits(pc.take(intl, pa.array(sel)), len(str(int(code)))),
            national_nsn,
        )
        n_len = pc.utf8_length(nsn).to_numpy(zero_copy_only=False)
        keep = (n_len >= 2) & ~_fill(pc.starts_with(nsn, "0"))
        main = metas[0]
        npfp = main.national_prefix_for_parsing
        if npfp:  # after "+cc" the library still strips a national prefix: leave those to it
            keep &= ~(is_intl & _fill(pc.match_substring_regex(nsn, f"^(?:{npfp})")))
        local_only = tuple(main.general_desc.possible_length_local_only)
        if local_only:  # the library keeps the national prefix for local-only lengths
            keep &= ~(~is_intl & np.isin(n_len, local_only))
        if not keep.any():
            continue
        valid = np.zeros(len(sel), dtype=bool)
        valid[keep] = _valid_for_cc(pc.filter(nsn, pa.array(keep)), metas)
        valid &= n_len + len(str(int(code))) <= 15
        if valid.any():
            e164 = pc.binary_join_element_wise(
                "+" + str(int(code)), pc.filter(nsn, pa.array(valid)), ""
            )
            out[rows[sel[valid]]] = e164.to_numpy(zero_copy_only=False)
    return pd.Series(pd.array(out, dtype="string"), index=values.index)


@lru_cache(maxsize=1 << 18)
def _library_e164(value: str, region: str | None) -> str | None:
    """The library's E.164 of a number the fast path could not certify, once per process:
    a record's phone and its contact-detail entry are often the same spelling."""
    return phone_or_reason(value, region)[0]


def _phone_library(values: pd.Series, region: pd.Series) -> pd.Series:
    pairs = pd.MultiIndex.from_arrays([values.fillna("\x00"), region.fillna("")])
    codes, uniques = pd.factorize(pairs)
    mapped = [
        None if v == "\x00" else _library_e164(v, r or None)
        for v, r in uniques  # once per unique (value, region) pair
    ]
    out = pd.Series(pd.array(mapped, dtype="string")).take(codes)
    out.index = values.index
    return out


def normalize_phone(series: pd.Series, region: pd.Series | None = None) -> pd.Series:
    """E.164 numbers; the region (ISO alpha-2 or <NA>) per row; invalid -> <NA>."""
    s = _as_string(series)
    region = (
        pd.Series(pd.NA, index=s.index, dtype="string") if region is None else _as_string(region)
    )
    out = fast_e164(s, region)
    rest = out.isna() & s.notna()
    if rest.any():
        out[rest] = _phone_library(s[rest], region[rest])
    return out


# --------------------------------------------------------------------------- codes


def normalize_country(series: pd.Series) -> pd.Series:
    """ISO 3166-1 alpha-2 where the spelling is known; unknown values kept (trimmed)."""
    s = trim(series)
    table = country_table()
    return map_unique(s, lambda v: table.get(str(v).lower(), str(v)))


def normalize_language(series: pd.Series) -> pd.Series:
    """ISO 639-1 from ``sv``, ``sv-SE``, ``sv_SE``, ``swe``, ``Swedish``; unknown kept (trimmed)."""
    s = trim(series)
    table = language_table()

    def one(v: Hashable) -> str:
        text = str(v)
        low = text.lower()
        if low in table:
            return table[low]
        primary = re.split(r"[-_]", low, maxsplit=1)[0]
        return table.get(primary, text)

    return map_unique(s, one)


def normalize_consent(series: pd.Series) -> pd.Series:
    """``yes`` / ``no``; explicit "not set" markers -> <NA>; unknown kept for validation."""

    def one(v: Hashable) -> str | None:
        low = str(v).strip().lower()
        if low in _CONSENT_UNSET:
            return None
        return _CONSENT_MAP.get(low, str(v))

    return map_unique(_as_string(series), one)


def normalize_kind(series: pd.Series) -> pd.Series:
    """``person`` / ``company``; unknown kept for validation."""
    return map_unique(trim(series), lambda v: _KIND_MAP.get(str(v).lower(), str(v)))


# --------------------------------------------------------------------------- frame


def normalize_customers(
    frame: pd.DataFrame,
    default_region: str | None = None,
    market_regions: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Normalize a canonical frame (see module docstring); returns a new frame.

    National phone numbers are read in the record's country, else its market
    (``store_code``: ``market_regions`` maps a store code to a region, and a code
    that starts with an ISO alpha-2 code followed by a digit, ``-``, ``_`` or
    nothing, such as ``SE01``, names its own), else ``default_region``.

    Idempotent: a value already in ``email_raw``/``phone_raw`` is kept there,
    so normalizing twice gives the same frame.
    """
    out = frame.copy()
    # the received names and country stay beside the normalized ones (kept from a first pass)
    for col in RAW_KEPT:
        if col in out.columns:
            received = _as_string(out[col])
            if f"{col}_raw" in out.columns:
                received = _as_string(out[f"{col}_raw"]).fillna(received)
            out[f"{col}_raw"] = received
            out[col] = received
    for col in TEXT_COLUMNS:
        if col in out.columns:
            out[col] = clean_text(out[col])
    for col in TRIM_COLUMNS:
        if col in out.columns:
            out[col] = trim(out[col])
    if "country" in out.columns:
        out["country"] = normalize_country(out["country"])
    if "language" in out.columns:
        out["language"] = normalize_language(out["language"])
    if "kind" in out.columns:
        out["kind"] = normalize_kind(out["kind"])
    for col in ("email_consent", "sms_consent"):
        if col in out.columns:
            out[col] = normalize_consent(out[col])

    if "email" in out.columns:
        received = _as_string(out["email"])
        if "email_raw" in out.columns:
            received = _as_string(out["email_raw"]).fillna(received)
        out["email_raw"] = received
        out["email"] = normalize_email(received)
    if "phone" in out.columns:
        received = _as_string(out["phone"])
        if "phone_raw" in out.columns:
            received = _as_string(out["phone_raw"]).fillna(received)
        out["phone_raw"] = received
        region = phone_region(out, default_region, market_regions)
        out["phone"] = normalize_phone(received, region)
    return out


def phone_region(
    frame: pd.DataFrame,
    default_region: str | None = None,
    market_regions: Mapping[str, str] | None = None,
) -> pd.Series:
    """The region to read a national number in: the record's ISO country, else its market, else
    the default. Vectorized (``isin``/``map`` over the column)."""
    index = frame.index
    isos = list(iso_countries())
    if "country" in frame.columns:
        # once per distinct country (a country column has a few hundred values at most)
        codes, uniques = pd.factorize(_as_string(frame["country"]), use_na_sentinel=True)
        allowed = pd.Series(uniques, dtype="string")
        allowed = allowed.where(allowed.isin(isos), pd.NA)
        region = pd.Series(
            pd.array(list(allowed) + [pd.NA], dtype="string").take(codes), index=index
        )
    else:
        region = pd.Series(pd.NA, index=index, dtype="string")
    lacking = region.isna().to_numpy() & (
        _as_string(frame["store_code"]).notna().to_numpy()
        if "store_code" in frame.columns
        else False
    )
    if np.any(lacking):
        # once per distinct store code among the rows that need it
        codes, stores = pd.factorize(_as_string(frame["store_code"])[lacking])
        table = pd.Series(stores, dtype="string").str.strip()
        market = pd.Series(pd.NA, index=table.index, dtype="string")
        if market_regions:
            market = table.map(dict(market_regions)).astype("string")
        # a store code named after its market: "SE01", "NO-OSLO", "DK"
        prefix = table.str.extract(r"^([A-Za-z]{2})(?:[0-9_-]|$)", expand=False).str.upper()
        market = market.fillna(prefix.where(prefix.isin(isos), pd.NA))
        region = region.copy()
        region[lacking] = market.to_numpy()[codes]
    if default_region:
        region = region.fillna(default_region)
    return region
