"""Deterministic generator of messy, overlapping customers with known truth.

``generate(seed, people)`` returns a :class:`SandboxData`:

- ``people``: one row per real person (``person_id``, true names, e-mail,
  E.164 phone, country, language, city, postal code, web-shop user id ...);
- ``frames[system]``: that system's records as a flat frame whose columns are
  the vendor's wire field names (dotted names such as ``address.city`` are
  nested objects on the wire); ``records(system)`` renders them as the
  vendor's native JSON dicts;
- ``extras[key]``: sub-resources that are not customer records (``exact.Address``:
  Exact Online ``crm/Addresses``), served by the emulators, never resolved;
- multi-valued aspects on the records in each vendor's shape, with overlaps on purpose
  (one address typed two ways, one contact person in two systems, one attribute with two
  values): see :func:`_add_aspects`;
- ``truth``: ``system, object_type, source_id, person_id`` for every record
  (companies get an ``ORG…`` id instead of a person id);
- ``defects``: ``system, object_type, source_id, field, wire_field, defect,
  expect`` for every deliberate break. ``field`` is the canonical column the
  break is in (empty for record-level traps). ``expect`` says what a correct
  pipeline does with it:

  * ``reject``: the record must be quarantined for ``field``
    (``bad_email_syntax``, ``unknown_country``, ``missing_name_and_email``,
    ``formula_injection``, ``control_chars``, ``future_date``);
  * ``clean``: normalization repairs it (``name_case``, ``name_whitespace``,
    ``email_case``, ``email_whitespace``, ``phone_national``,
    ``phone_spaced``, ``phone_00_prefix``, ``country_case``);
  * ``trap``: an identity trap that must not merge strangers or must merge
    the same person (``name_typo``, ``shared_family_email``,
    ``placeholder_email``, ``placeholder_phone``, ``role_email``,
    ``guest_checkout``, ``in_system_duplicate``). A placeholder phone
    (``0000000000``) is not a valid number: a validator may null it or
    quarantine it for ``phone``.

Every ``reject`` record carries exactly one reject defect (two rows for
``missing_name_and_email``: ``last_name`` and ``email``), and its other
fields are clean enough not to fail on their own: no national-format phone
on a record whose country is broken, no placeholder on a rejected record.

Vendor quirks reproduced on purpose: Exact Online ``Code`` is right-aligned,
space-padded to 18 characters (Salesforce ``Customer_Number__c`` holds the
trimmed value); Salesforce timestamps end in ``+0000``; Exact dates are
``/Date(ms)/``.

Everything is numpy/pandas vectorized: 100k people (about 250k records) in
a second or two. Only small random subsets (typos) use per-value Python.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

SYSTEMS: tuple[str, ...] = ("salesforce", "voucherify", "voyado", "exact", "icomm", "katana")

# share of people present in each system (a person absent from all goes to Voyado)
MEMBERSHIP: dict[str, float] = {
    "salesforce": 0.6,
    "voucherify": 0.45,
    "voyado": 0.5,
    "exact": 0.2,
    "icomm": 0.35,
    "katana": 0.15,
}

# generated data lives before this instant, so writes made "now" are newer: the start of
# the current UTC day (a fresh demo's records are days old, not months: its freshness
# checks pass), fixed for the process, the same data for a seed all day
GEN_START = np.datetime64("2023-01-01T00:00:00", "s")
GEN_NOW = np.datetime64(datetime.now(UTC).strftime("%Y-%m-%d"), "s")
# random draws are bounded on a fixed calendar and the times shifted to GEN_NOW after: a
# bounded draw's use of the random stream depends on its bound, so bounds that moved with
# the day would give other people, other mess and other defects every day
GEN_BASE = np.datetime64("2026-11-01T00:00:00", "s")
GEN_SHIFT = GEN_NOW - GEN_BASE
# the changes of the last RECENT_SQUEEZE * 3 days happened in the last 3 days: every
# system, even a small one, has a record changed within the freshness threshold (7 days)
RECENT_SQUEEZE = 30

FORMULA_INJECTION = "=cmd|' /C calc'!A0"
PLACEHOLDER_EMAILS = (
    "none@none.com",
    "noreply@store.com",
    "no-reply@shop.se",
    "noemail@noemail.com",
)
PLACEHOLDER_PHONE = "0000000000"

# country -> (calling code, NSN prefix, random digits after prefix, trunk prefix, language, store)
_COUNTRIES: dict[str, tuple[str, str, int, str, str, str]] = {
    "SE": ("46", "70", 7, "0", "sv", "SE01"),
    "NO": ("47", "41", 6, "", "nb", "NO01"),
    "DK": ("45", "26", 6, "", "da", "DK01"),
    "FI": ("358", "40", 7, "0", "fi", "FI01"),
    "NL": ("31", "61", 7, "0", "nl", "NL01"),
    "DE": ("49", "151", 8, "0", "de", "DE01"),
    "GB": ("44", "798", 7, "0", "en", "GB01"),
}
_COUNTRY_WEIGHTS = np.array([0.35, 0.15, 0.1, 0.1, 0.1, 0.1, 0.1])
_CITIES: dict[str, tuple[tuple[str, str], ...]] = {
    "SE": (
        ("Stockholm", "11{0} {1}"),
        ("Göteborg", "41{0} {1}"),
        ("Malmö", "21{0} {1}"),
        ("Uppsala", "75{0} {1}"),
    ),
    "NO": (("Oslo", "0{0}{1}"), ("Bergen", "5{0}{1}"), ("Trondheim", "7{0}{1}")),
    "DK": (("København", "1{0}{1}"), ("Aarhus", "8{0}{1}"), ("Odense", "5{0}{1}")),
    "FI": (("Helsinki", "00{0}{1}"), ("Tampere", "33{0}{1}"), ("Turku", "20{0}{1}")),
    "NL": (("Amsterdam", "10{0}{1} AB"), ("Rotterdam", "30{0}{1} CD"), ("Utrecht", "35{0}{1} EF")),
    "DE": (("Berlin", "10{0}{1}"), ("Hamburg", "20{0}{1}"), ("München", "80{0}{1}")),
    "GB": (("London", "SW{0} {1}AA"), ("Manchester", "M{0} {1}AB"), ("Leeds", "LS{0} {1}BD")),
}
_FIRST = (
    "Anna Erik Maria Lars Karin Anders Eva Johan Sara Per Emma Nils Ida Olof Elin Mikael Linnea Oskar "
    "Ingrid Henrik Sofie Jonas Astrid Mats Frida Magnus Hanna Ola Kari Jens Mette Søren Aino Mikko "
    "Sanne Daan Lotte Lukas Lena Felix Julia Oliver Amelia Harry Isla Jack Åsa Björn Jörg Zoë"
).split()
_LAST = (
    "Andersson Johansson Karlsson Nilsson Eriksson Larsson Olsson Persson Svensson Gustafsson Hansen "
    "Johansen Olsen Nielsen Jensen Pedersen Virtanen Korhonen Nieminen Jansen Visser Bakker Müller "
    "Schmidt Schneider Fischer Weber Smith Jones Taylor Brown Wilson Lindqvist Berg Holm Dahl Ström "
    "Lindström Sjöberg Öberg Håkansson Ek Lund Nyström Wallin Sandberg Åberg"
).split()
_DOMAINS = np.array(
    ["gmail.com", "hotmail.com", "outlook.com", "yahoo.com", "icloud.com", "telia.com", "live.se"]
)
_COMPANIES = (
    "acme-bygg",
    "nordic-el",
    "fjord-fisk",
    "hansa-trade",
    "polder-bv",
    "alpen-gmbh",
    "thames-ltd",
)
_TIERS = np.array(["Bronze", "Silver", "Gold", "Platinum"], dtype=object)
_ALNUM = np.frombuffer(
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8
)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)

DEFECT_COLUMNS = ("system", "object_type", "source_id", "field", "wire_field", "defect", "expect")
TRUTH_COLUMNS = ("system", "object_type", "source_id", "person_id")

# canonical field -> wire field name per system (for defect reporting)
WIRE_FIELDS: dict[str, dict[str, str]] = {
    "salesforce": {
        "first_name": "FirstName",
        "last_name": "LastName",
        "email": "Email",
        "phone": "Phone",
        "country": "MailingCountry",
        "created_at": "CreatedDate",
    },
    "salesforce.Lead": {
        "first_name": "FirstName",
        "last_name": "LastName",
        "email": "Email",
        "phone": "Phone",
        "country": "Country",
        "created_at": "CreatedDate",
    },
    "salesforce.Account": {},
    "exact.Contact": {
        "first_name": "FirstName",
        "last_name": "LastName",
        "email": "Email",
        "phone": "Phone",
        "country": "",
        "created_at": "Created",
    },
    "voucherify": {
        "first_name": "name",
        "last_name": "name",
        "email": "email",
        "phone": "phone",
        "country": "address.country",
        "created_at": "created_at",
    },
    "voyado": {
        "first_name": "firstName",
        "last_name": "lastName",
        "email": "email",
        "phone": "mobilePhone",
        "country": "countryCode",
        "created_at": "createdDate",
    },
    "exact": {
        "first_name": "Name",
        "last_name": "Name",
        "email": "Email",
        "phone": "Phone",
        "country": "Country",
        "created_at": "Created",
    },
    "icomm": {
        "first_name": "FirstName",
        "last_name": "LastName",
        "email": "Email",
        "phone": "MobilePhone",
        "country": "CountryCode",
        "created_at": "CreatedAt",
    },
    "katana": {
        "first_name": "first_name",
        "last_name": "last_name",
        "email": "email",
        "phone": "phone",
        "country": "country",
        "created_at": "created_at",
    },
}
OBJECT_TYPES: dict[str, str] = {
    "salesforce": "Contact",
    "salesforce.Lead": "Lead",
    "salesforce.Account": "Account",
    "exact.Contact": "Contact",
    "voucherify": "customer",
    "voyado": "contact",
    "exact": "Account",
    "icomm": "customer",
    "katana": "customer",
}


@dataclass
class SandboxData:
    """What :func:`generate` returns: people, per-system wire frames, truth, defects."""

    seed: int
    people: pd.DataFrame
    frames: dict[str, pd.DataFrame]
    truth: pd.DataFrame
    defects: pd.DataFrame
    # sub-resources that are not customer records (``exact.Address``): served, not resolved
    extras: dict[str, pd.DataFrame] = field(default_factory=dict)
    _cache: dict[str, list[dict]] = field(default_factory=dict, repr=False)

    @property
    def systems(self) -> tuple[str, ...]:
        """Systems with records (frame keys such as ``salesforce.Lead`` fold into ``salesforce``)."""
        return tuple(dict.fromkeys(k.split(".")[0] for k in self.frames))

    def records(self, system: str) -> list[dict]:
        """Records of a frame key (``salesforce`` = Contacts, ``salesforce.Lead``,
        ``salesforce.Account``, ``exact`` = Accounts, ``exact.Contact`` ...) as the
        vendor's native JSON dicts (fresh copies)."""
        frame = self.frames[system] if system in self.frames else self.extras[system]
        return [_nest(r) for r in frame.to_dict("records")] if len(frame) else []

    def source_records(self) -> int:
        return int(sum(len(f) for f in self.frames.values()))


def _nest(flat: dict) -> dict:
    """``{"address.city": x}`` -> ``{"address": {"city": x}}``; ``CustomFields.K`` -> list."""
    out: dict = {}
    custom: list[dict] = []
    for key, value in flat.items():
        if isinstance(value, float) and value != value:  # NaN from pandas -> null
            value = None
        elif isinstance(value, list | dict):  # nested lists (contact persons): fresh copies
            value = copy.deepcopy(value)
        if "." not in key:
            out[key] = value
            continue
        head, tail = key.split(".", 1)
        if head == "CustomFields":
            if value is not None:
                custom.append({"Key": tail, "Value": value})
            continue
        out.setdefault(head, {})[tail] = value
    if custom or "CustomFields" in out:
        out["CustomFields"] = custom
    return out


# ----------------------------------------------------------------------------- helpers


def _rand_str(rng: np.random.Generator, n: int, length: int, alphabet: np.ndarray) -> np.ndarray:
    idx = rng.integers(0, len(alphabet), size=(n, length))
    return alphabet[idx].view(f"S{length}").ravel().astype(f"U{length}").astype(object)


def _guid(rng: np.random.Generator, n: int) -> np.ndarray:
    h = pd.Series(_rand_str(rng, n, 32, _HEX))
    return (
        h.str[:8]
        + "-"
        + h.str[8:12]
        + "-4"
        + h.str[13:16]
        + "-a"
        + h.str[17:20]
        + "-"
        + h.str[20:32]
    ).to_numpy(object)


def _unique_numbers(rng: np.random.Generator, n: int, modulus: int) -> np.ndarray:
    """n distinct pseudo-random numbers in [0, modulus) (an affine bijection of 0..n-1)."""
    mult = 1_000_003  # prime, coprime to powers of 10
    off = int(rng.integers(0, modulus))
    return (np.arange(n, dtype=np.int64) * mult + off) % modulus


def _zfill(values: np.ndarray, width: int) -> pd.Series:
    return pd.Series(values).astype(str).str.zfill(width)


def _iso(ts: np.ndarray, suffix: str) -> np.ndarray:
    return (
        pd.Series(np.datetime_as_string(ts.astype("datetime64[ms]"), unit="ms")) + suffix
    ).to_numpy(object)


def _typo(values: np.ndarray) -> np.ndarray:
    """Swap two adjacent letters (or double one in short names): a plausible typing slip."""
    out = []
    for i, v in enumerate(values):
        if len(v) < 4:
            out.append(v + v[-1])
        else:
            k = 1 + i % (len(v) - 2)
            out.append(v[:k] + v[k + 1] + v[k] + v[k + 2 :])
    return np.array(out, dtype=object)


class _Defects:
    def __init__(self) -> None:
        self.parts: list[pd.DataFrame] = []

    def add(self, system: str, source_ids, field: str, defect: str, expect: str) -> None:
        ids = np.asarray(source_ids, dtype=object)
        if not len(ids):
            return
        # ``system`` is a frame key: "salesforce" or "salesforce.Lead"
        wire = WIRE_FIELDS[system].get(field, "") if field else ""
        self.parts.append(
            pd.DataFrame(
                {
                    "system": system.split(".")[0],
                    "object_type": OBJECT_TYPES[system],
                    "source_id": ids,
                    "field": field,
                    "wire_field": wire,
                    "defect": defect,
                    "expect": expect,
                }
            )
        )

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame(columns=list(DEFECT_COLUMNS))
        return pd.concat(self.parts, ignore_index=True)[list(DEFECT_COLUMNS)]


# ----------------------------------------------------------------------------- people


def _make_people(rng: np.random.Generator, n: int) -> pd.DataFrame:
    idx = np.arange(n)
    countries = np.array(list(_COUNTRIES), dtype=object)
    cc_i = rng.choice(len(countries), size=n, p=_COUNTRY_WEIGHTS)
    country = countries[cc_i]
    first = np.array(_FIRST, dtype=object)[rng.integers(0, len(_FIRST), n)]
    last = np.array(_LAST, dtype=object)[rng.integers(0, len(_LAST), n)]
    fold = {"å": "a", "ä": "a", "ö": "o", "ø": "o", "ü": "u", "ë": "e", "æ": "ae", "é": "e"}
    table = str.maketrans(fold)
    f_ascii = pd.Series(first).str.lower().str.translate(table)
    l_ascii = pd.Series(last).str.lower().str.translate(table)
    style = rng.integers(0, 3, n)
    local = np.where(
        style == 0,
        f_ascii + "." + l_ascii,
        np.where(style == 1, f_ascii + l_ascii, f_ascii.str[0] + "." + l_ascii),
    )
    # the person index makes every address unique; shared ones are added on purpose below
    email = (
        pd.Series(local)
        + pd.Series(idx).astype(str)
        + "@"
        + _DOMAINS[rng.integers(0, len(_DOMAINS), n)]
    )
    # phones: calling code + prefix + unique digits per country
    nsn = np.empty(n, dtype=object)
    e164 = np.empty(n, dtype=object)
    lang = np.empty(n, dtype=object)
    store = np.empty(n, dtype=object)
    city = np.empty(n, dtype=object)
    postal = np.empty(n, dtype=object)
    for code, (cc, prefix, digits, _trunk, language, store_code) in _COUNTRIES.items():
        m = country == code
        k = int(m.sum())
        if not k:
            continue
        num = _unique_numbers(rng, k, 10**digits)
        nsn[m] = (prefix + _zfill(num, digits)).to_numpy(object)
        e164[m] = ("+" + cc + pd.Series(nsn[m])).to_numpy(object)
        lang[m] = language
        store[m] = store_code
        cities = _CITIES[code]
        ci = rng.integers(0, len(cities), k)
        city[m] = np.array([c for c, _ in cities], dtype=object)[ci]
        a = rng.integers(0, 10, k).astype(str)
        b = rng.integers(10, 100, k).astype(str)
        templates = np.array([t for _, t in cities], dtype=object)[ci]
        postal[m] = [t.format(x, y) for t, x, y in zip(templates, a, b, strict=True)]
    has_web = rng.random(n) < 0.4
    web_user = np.where(has_web, "u" + _zfill(_unique_numbers(rng, n, 10**7), 7), None)
    created = (
        GEN_START
        + GEN_SHIFT
        + rng.integers(0, int((GEN_BASE - GEN_START) / np.timedelta64(1, "s")) // 2, n).astype(
            "timedelta64[s]"
        )
    )
    return pd.DataFrame(
        {
            "person_id": "P" + _zfill(idx, 7),
            "first_name": first,
            "last_name": last,
            "email": email.to_numpy(object),
            "phone": e164,
            "nsn": nsn,
            "country": country,
            "language": lang,
            "store_code": store,
            "city": city,
            "postal_code": postal,
            "street": (
                pd.Series(
                    np.array(
                        ["Storgatan", "Kungsvägen", "Main Street", "Hauptstraße", "Dorpsstraat"]
                    )[rng.integers(0, 5, n)]
                )
                + " "
                + pd.Series(rng.integers(1, 120, n)).astype(str)
            ).to_numpy(object),
            "web_user_id": web_user,
            "loyalty_tier": _TIERS[rng.integers(0, 4, n)],
            "email_consent": rng.random(n) < 0.6,
            "created_at": created,
            "shared_email": "",  # "family" / "role" when the address is shared on purpose
            "org_id": None,  # the company whose role address a person uses
        }
    )


_ROLE_LOCALS = ("info", "kundservice", "ekonomi")


def _share_emails(
    rng: np.random.Generator, people: pd.DataFrame, family_rate: float, role_rate: float
) -> None:
    """Families share one address (pairs); small firms' staff share a role address.

    The role address rotates between ``info@`` (on the packaged config's block
    list) and ``kundservice@`` / ``ekonomi@`` (on no list), so resolution must
    tell those apart from the data itself.
    """
    n = len(people)
    order = rng.permutation(n)
    n_fam = int(n * family_rate) // 2
    a, b = order[:n_fam], order[n_fam : 2 * n_fam]
    emails = people["email"].to_numpy(object)
    last = people["last_name"].to_numpy(object)
    shared = people["shared_email"].to_numpy(object)
    org = people["org_id"].to_numpy(object)
    emails[b] = emails[a]
    last[b] = last[a]
    shared[a] = shared[b] = "family"
    n_role_groups = int(n * role_rate) // 3
    start = 2 * n_fam
    for g in range(n_role_groups):
        members = order[start + 3 * g : start + 3 * g + 3]
        cc = people["country"].iat[members[0]].lower()
        local = _ROLE_LOCALS[g % len(_ROLE_LOCALS)]  # by index: no extra random draw
        emails[members] = (
            f"{local}@{_COMPANIES[g % len(_COMPANIES)]}{g}.{'co.uk' if cc == 'gb' else cc}"
        )
        shared[members] = "role"
        org[members] = f"ORG{g:05d}"
    people["org_id"] = org
    people["email"] = emails
    people["last_name"] = last
    people["shared_email"] = shared


# ----------------------------------------------------------------------------- per-system rows


@dataclass
class _Rows:
    """Canonical-ish arrays for one system's records, before rendering to wire names."""

    person: np.ndarray  # index into people
    source_id: np.ndarray
    first: np.ndarray
    last: np.ndarray
    email: np.ndarray
    phone: np.ndarray
    country: np.ndarray
    created: np.ndarray
    modified: np.ndarray
    guest: np.ndarray  # bool: email-only record
    dup: np.ndarray  # bool: second record of the same person in this system

    def __len__(self) -> int:
        return len(self.person)


def _base_rows(
    rng: np.random.Generator,
    people: pd.DataFrame,
    members: np.ndarray,
    dup_rate: float,
    guest_rate: float,
) -> _Rows:
    n_people = len(people)
    dups = members[rng.random(len(members)) < dup_rate]
    guests = (
        rng.choice(n_people, size=int(n_people * guest_rate), replace=False)
        if guest_rate
        else np.array([], int)
    )
    person = np.concatenate([members, dups, guests]).astype(np.int64)
    k = len(person)
    dup = np.zeros(k, bool)
    dup[len(members) : len(members) + len(dups)] = True
    guest = np.zeros(k, bool)
    guest[len(members) + len(dups) :] = True
    p = people
    first = p["first_name"].to_numpy(object)[person].copy()
    last = p["last_name"].to_numpy(object)[person].copy()
    email = p["email"].to_numpy(object)[person].copy()
    phone = p["phone"].to_numpy(object)[person].copy()
    country = p["country"].to_numpy(object)[person].copy()
    first[guest] = None
    last[guest] = None
    phone[guest] = None
    # a share of real customers never gave an e-mail or a phone
    no_email = (rng.random(k) < 0.05) & ~guest
    email[no_email] = None
    no_phone = (rng.random(k) < 0.15) & ~guest
    phone[no_phone] = None
    span = int((GEN_BASE - GEN_START) / np.timedelta64(1, "s"))  # a fixed bound (GEN_BASE)
    created = p["created_at"].to_numpy()[person] + rng.integers(0, span // 4, k).astype(
        "timedelta64[s]"
    )
    remaining = ((GEN_NOW - created) / np.timedelta64(1, "s")).astype(np.int64)
    modified = created + (rng.random(k) * remaining).astype("timedelta64[s]")
    age = GEN_NOW - modified  # only ever later, never before its creation
    recent = age < np.timedelta64(3 * RECENT_SQUEEZE, "D")
    modified[recent] = GEN_NOW - age[recent] // RECENT_SQUEEZE
    return _Rows(
        person,
        np.empty(k, object),
        first,
        last,
        email,
        phone,
        country,
        created,
        modified,
        guest,
        dup,
    )


def _mess(
    rng: np.random.Generator,
    system: str,
    rows: _Rows,
    people: pd.DataFrame,
    defects: _Defects,
    invalid_rate: float,
    placeholders: bool,
) -> np.ndarray:
    """Apply clean-able mess, identity traps and invalid values. Returns the invalid mask."""
    k = len(rows)
    sid = rows.source_id
    has_name = pd.notna(rows.last)
    has_email = pd.notna(rows.email)
    has_phone = pd.notna(rows.phone)

    # invalid records first, so the other mess avoids them
    invalid = (rng.random(k) < invalid_rate) & ~rows.guest & has_name
    kinds = np.array(
        [
            "bad_email_syntax",
            "unknown_country",
            "missing_name_and_email",
            "formula_injection",
            "control_chars",
            "future_date",
        ],
        dtype=object,
    )
    kind = np.where(invalid, kinds[rng.integers(0, len(kinds), k)], None)
    m = (kind == "bad_email_syntax") & has_email
    kind[(kind == "bad_email_syntax") & ~has_email] = "unknown_country"
    has_country = bool(WIRE_FIELDS[system].get("country"))
    if not has_country:  # e.g. Exact Contacts carry no country
        kind[kind == "unknown_country"] = "formula_injection"
    rows.email[m] = (
        pd.Series(rows.email[m], dtype=object).str.replace("@", "@@", n=1).to_numpy(object)
    )
    defects.add(system, sid[m], "email", "bad_email_syntax", "reject")
    m = kind == "unknown_country"
    rows.country[m] = "XX"
    defects.add(system, sid[m], "country", "unknown_country", "reject")
    # one name field on the wire (Voucherify, Exact): a first name alone is a name there
    fields = WIRE_FIELDS.get(system, {})
    one_name = bool(fields.get("first_name")) and fields.get("first_name") == fields.get(
        "last_name"
    )
    m = kind == "missing_name_and_email"
    rows.last[m] = None
    rows.email[m] = None
    if one_name:
        rows.first[m] = None
    defects.add(system, sid[m], "last_name", "missing_name_and_email", "reject")
    defects.add(system, sid[m], "email", "missing_name_and_email", "reject")
    m = kind == "formula_injection"
    rows.last[m] = FORMULA_INJECTION
    defects.add(system, sid[m], "last_name", "formula_injection", "reject")
    m = kind == "control_chars"
    rows.first[m] = (
        pd.Series(rows.first[m], dtype=object).str[:2]
        + "\x07\x1b"
        + pd.Series(rows.first[m], dtype=object).str[2:]
    ).to_numpy(object)
    defects.add(system, sid[m], "first_name", "control_chars", "reject")
    m = kind == "future_date"
    rows.created[m] = np.datetime64("2199-01-01T00:00:00", "s") + rng.integers(
        0, 10**7, int(m.sum())
    ).astype("timedelta64[s]")
    defects.add(system, sid[m], "created_at", "future_date", "reject")

    ok = ~invalid
    has_name = pd.notna(rows.last) & pd.notna(rows.first)
    has_email = pd.notna(rows.email)
    has_phone = pd.notna(rows.phone)

    # identity traps carried by the person's shared address
    shared = people["shared_email"].to_numpy(object)[rows.person]
    defects.add(
        system, sid[has_email & (shared == "family")], "email", "shared_family_email", "trap"
    )
    defects.add(system, sid[has_email & (shared == "role")], "email", "role_email", "trap")
    defects.add(system, sid[rows.guest], "", "guest_checkout", "trap")
    defects.add(system, sid[rows.dup], "", "in_system_duplicate", "trap")

    # placeholders typed at a till
    if placeholders:
        m = ok & ~rows.guest & (rng.random(k) < 0.03)
        ph = np.array(PLACEHOLDER_EMAILS, dtype=object)[
            rng.integers(0, len(PLACEHOLDER_EMAILS), int(m.sum()))
        ]
        rows.email[m] = ph
        defects.add(system, sid[m], "email", "placeholder_email", "trap")
        m = ok & ~rows.guest & (rng.random(k) < 0.02)
        rows.phone[m] = PLACEHOLDER_PHONE
        defects.add(system, sid[m], "phone", "placeholder_phone", "trap")
    is_placeholder_phone = rows.phone == PLACEHOLDER_PHONE

    # names: typos (not repairable), case and whitespace (repairable)
    m = ok & has_name & (rng.random(k) < 0.03 + 0.3 * rows.dup)
    rows.first[m] = _typo(rows.first[m])
    defects.add(system, sid[m], "first_name", "name_typo", "trap")
    m = ok & has_name & (rng.random(k) < 0.05)
    upper = rng.random(int(m.sum())) < 0.5
    s = pd.Series(rows.last[m], dtype=object)
    rows.last[m] = np.where(upper, s.str.upper(), s.str.lower())
    defects.add(system, sid[m], "last_name", "name_case", "clean")
    m = ok & has_name & (rng.random(k) < 0.05)
    rows.first[m] = ("  " + pd.Series(rows.first[m], dtype=object) + " ").to_numpy(object)
    defects.add(system, sid[m], "first_name", "name_whitespace", "clean")

    # e-mail case and surrounding spaces
    has_email = pd.notna(rows.email) & ~np.isin(rows.email, PLACEHOLDER_EMAILS)
    m = ok & has_email & (rng.random(k) < 0.08)
    s = pd.Series(rows.email[m], dtype=object)
    whole = rng.random(int(m.sum())) < 0.3
    rows.email[m] = np.where(whole, s.str.upper(), s.str[:1].str.upper() + s.str[1:])
    defects.add(system, sid[m], "email", "email_case", "clean")
    m = ok & has_email & (rng.random(k) < 0.04)
    rows.email[m] = (" " + pd.Series(rows.email[m], dtype=object) + "  ").to_numpy(object)
    defects.add(system, sid[m], "email", "email_whitespace", "clean")

    # phones: national, spaced international, 00-prefixed (never on a broken country)
    nsn = people["nsn"].to_numpy(object)[rows.person]
    pcountry = people["country"].to_numpy(object)[rows.person]
    phone_ok = ok & has_phone & ~is_placeholder_phone
    r = rng.random(k)
    trunk = np.array([_COUNTRIES[c][3] for c in _COUNTRIES], dtype=object)
    codes = np.array([_COUNTRIES[c][0] for c in _COUNTRIES], dtype=object)
    ci = pd.Series(pcountry).map({c: i for i, c in enumerate(_COUNTRIES)}).to_numpy(np.int64)
    # strings are built only for the rows that get each format (a few % of the total)
    m = phone_ok & (r < 0.3)
    n_s, t_s = pd.Series(nsn[m], dtype=object), pd.Series(trunk[ci[m]], dtype=object)
    national = t_s + n_s.str[:2] + "-" + n_s.str[2:5] + " " + n_s.str[5:7] + " " + n_s.str[7:]
    rows.phone[m] = national.str.strip().to_numpy(object)
    defects.add(system, sid[m], "phone", "phone_national", "clean")
    m = phone_ok & (r >= 0.3) & (r < 0.4)
    n_s, c_s = pd.Series(nsn[m], dtype=object), pd.Series(codes[ci[m]], dtype=object)
    rows.phone[m] = (
        "+" + c_s + " " + n_s.str[:2] + " " + n_s.str[2:5] + " " + n_s.str[5:]
    ).to_numpy(object)
    defects.add(system, sid[m], "phone", "phone_spaced", "clean")
    m = phone_ok & (r >= 0.4) & (r < 0.45)
    rows.phone[m] = (
        "00" + pd.Series(codes[ci[m]], dtype=object) + pd.Series(nsn[m], dtype=object)
    ).to_numpy(object)
    defects.add(system, sid[m], "phone", "phone_00_prefix", "clean")

    # country case
    m = ok & (rng.random(k) < 0.03) & has_country
    rows.country[m] = pd.Series(rows.country[m], dtype=object).str.lower().to_numpy(object)
    defects.add(system, sid[m], "country", "country_case", "clean")
    return invalid


# ----------------------------------------------------------------------------- renderers


def _name(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    f = pd.Series(first, dtype=object)
    lname = pd.Series(last, dtype=object)
    full = f.fillna("").str.cat(lname.fillna(""), sep=" ").str.strip()
    return full.where((f.notna() | lname.notna()).to_numpy(), None).to_numpy(object)


def _none_where(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.asarray(values, dtype=object).copy()
    out[mask] = None
    return out


# ----------------------------------------------------------------------------- aspects

_ASPECT_STREAM = 1001  # second word of the aspects' seed: their own stream of random draws
_SECOND_STREETS = np.array(
    ["Sommarvägen", "Strandvägen", "Park Lane", "Seestraße", "Kerkstraat"], dtype=object
)
_DEPOT_STREETS = np.array(
    ["Industrivägen", "Lagergatan", "Dock Road", "Gewerbering", "Havenweg"], dtype=object
)
_ROLES = np.array(["Owner", "Purchaser", "Accounts payable", "Store manager"], dtype=object)
_SEGMENTS = np.array(["retail", "b2b", "vip"], dtype=object)
_CATEGORIES = np.array(["shoes", "outdoor", "kids", "home", "sport"], dtype=object)
# Exact Online address types: 1 visit, 2 postal, 3 invoice, 4 delivery
EXACT_ADDRESS_TYPES: dict[int, str] = {1: "visiting", 2: "mailing", 3: "billing", 4: "shipping"}


def _street(rng: np.random.Generator, names: np.ndarray, n: int) -> np.ndarray:
    number = pd.Series(rng.integers(1, 90, n)).astype(str)
    return (pd.Series(names[rng.integers(0, len(names), n)]) + " " + number).to_numpy(object)


def _typed_differently(
    rng: np.random.Generator, street: np.ndarray, postal: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The same address as a second system types it: upper case, a doubled space or stray
    spaces and lower case in the street; the postal code's inner space dropped."""
    s = pd.Series(street, dtype=object)
    style = rng.integers(0, 3, len(s))
    typed = np.where(
        style == 0,
        s.str.upper(),
        np.where(style == 1, s.str.replace(" ", "  ", n=1, regex=False), " " + s.str.lower() + " "),
    )
    pc = pd.Series(postal, dtype=object)
    return typed.astype(object), pc.str.replace(" ", "", regex=False).to_numpy(object)


def _add_aspects(
    rng: np.random.Generator,
    pf: pd.DataFrame,
    frames: dict[str, pd.DataFrame],
    extras: dict[str, pd.DataFrame],
    persons_of: dict[str, np.ndarray],
) -> None:
    """Multi-valued aspects on the records, in each vendor's wire shape, with real overlaps:

    - Salesforce Contacts get an ``Other*`` address (25%) and a ``Title`` when they work at
      an Account; Accounts get a ``Shipping*`` address (60%);
    - Exact Online Accounts get ``crm/Addresses`` rows (``extras["exact.Address"]``): a postal
      address (70%, the person's own address **typed differently** from Salesforce's
      ``Mailing*``) and a delivery address (30%); Contacts get a ``JobTitleDescription``;
    - KatanaPIM customers get ``contact_persons`` (the person Exact holds as the Account's
      Contact: **one contact person in two systems**, plus a second one for 30%); the firms
      of Salesforce Accounts (60%) are KatanaPIM company customers too, their staff as
      contact persons (the Account's Contacts again) and ``crm_account_id`` = the Account Id;
    - Voyado contacts get the custom attributes ``segment`` (60%, drawn apart from KatanaPIM's
      ``attributes.segment``: **one attribute, two values**) and ``favoriteCategory``, and a
      ``consents`` list (``id``, ``value``, ``date``, ``source``, ``comment``) with the date each
      preference was set;
    - Voucherify customers get ``metadata.segment`` (40%), and 30% type their address
      differently.
    """
    street = pf["street"].to_numpy(object)
    city = pf["city"].to_numpy(object)
    postal = pf["postal_code"].to_numpy(object)
    country = pf["country"].to_numpy(object)
    first = pf["first_name"].to_numpy(object)
    last = pf["last_name"].to_numpy(object)
    email = pf["email"].to_numpy(object)
    phone = pf["phone"].to_numpy(object)

    if "salesforce" in frames:
        sf = frames["salesforce"]
        k, p = len(sf), persons_of["salesforce"]
        other = rng.random(k) < 0.25
        sf["OtherStreet"] = _none_where(_street(rng, _SECOND_STREETS, k), ~other)
        sf["OtherCity"] = _none_where(city[p], ~other)
        sf["OtherPostalCode"] = _none_where(postal[p], ~other)
        sf["OtherCountry"] = _none_where(country[p], ~other)
        sf["Title"] = _none_where(_ROLES[rng.integers(0, len(_ROLES), k)], sf["AccountId"].isna())
    if "salesforce.Account" in frames:
        acc = frames["salesforce.Account"]
        n = len(acc)
        ship = rng.random(n) < 0.6
        acc["ShippingStreet"] = _none_where(_street(rng, _DEPOT_STREETS, n), ~ship)
        for part in ("City", "PostalCode", "Country"):
            acc[f"Shipping{part}"] = _none_where(acc[f"Billing{part}"].to_numpy(object), ~ship)

    if "exact" in frames:
        ex = frames["exact"]
        k, p = len(ex), persons_of["exact"]
        postal_at = rng.random(k) < 0.7
        depot_at = rng.random(k) < 0.3
        typed_street, typed_postal = _typed_differently(rng, street[p], postal[p])
        parts = []
        for kind, mask, line1, code in (
            (2, postal_at, typed_street, typed_postal),
            (4, depot_at, _street(rng, _DEPOT_STREETS, k), postal[p]),
        ):
            parts.append(
                pd.DataFrame(
                    {
                        "Account": ex["ID"].to_numpy(object)[mask],
                        "Type": kind,
                        "Main": True,
                        "AddressLine1": line1[mask],
                        "AddressLine2": None,
                        "City": city[p][mask],
                        "Postcode": code[mask],
                        "Country": country[p][mask],
                        "Division": 1,
                        "Created": ex["Created"].to_numpy(object)[mask],
                        "Modified": ex["Modified"].to_numpy(object)[mask],
                    }
                )
            )
        addresses = pd.concat(parts, ignore_index=True)
        addresses.insert(0, "ID", _guid(rng, len(addresses)))
        extras["exact.Address"] = addresses
    if "exact.Contact" in frames:
        ec = frames["exact.Contact"]
        ec["JobTitleDescription"] = _ROLES[rng.integers(0, len(_ROLES), len(ec))]

    if "katana" in frames:
        kt = frames["katana"]
        k, p = len(kt), persons_of["katana"]
        in_exact = np.isin(p, persons_of.get("exact.Contact", np.array([], np.int64)))
        second = rng.random(k) < 0.3
        f2 = np.array(_FIRST, dtype=object)[rng.integers(0, len(_FIRST), k)]
        l2 = np.array(_LAST, dtype=object)[rng.integers(0, len(_LAST), k)]
        r2 = _ROLES[rng.integers(0, len(_ROLES), k)]
        lists: list[list[dict]] = []
        for i in range(k):  # a few items per record: a loop is fine here
            q, items = p[i], []
            if in_exact[i]:
                items.append({"id": f"cp{2 * i + 1}", "first_name": first[q], "last_name": last[q],
                              "role": "Owner", "email": email[q], "phone": phone[q]})  # fmt: skip
            if second[i]:
                items.append({"id": f"cp{2 * i + 2}", "first_name": f2[i], "last_name": l2[i],
                              "role": r2[i], "email": None, "phone": None})  # fmt: skip
            lists.append(items)
        kt["kind"] = "person"
        kt["company_name"] = np.full(k, None, dtype=object)
        kt["crm_account_id"] = np.full(k, None, dtype=object)
        kt["contact_persons"] = pd.Series(lists, index=kt.index, dtype=object)
        if "salesforce.Account" in frames and len(frames["salesforce.Account"]):
            extras["katana.company"] = _katana_companies(rng, pf, frames["salesforce.Account"], k)

    if "voyado" in frames:
        vy = frames["voyado"]
        k = len(vy)
        vy["segment"] = _none_where(_SEGMENTS[rng.integers(0, 3, k)], rng.random(k) >= 0.6)
        vy["favoriteCategory"] = _none_where(
            _CATEGORIES[rng.integers(0, len(_CATEGORIES), k)], rng.random(k) >= 0.5
        )
        # set some time before the last change (never after it: a broken createdDate in
        # 2199 must not make a consent from the future)
        modified = pd.to_datetime(vy["lastModified"], utc=True).dt.tz_localize(None).to_numpy()
        dates = {}
        for pref in ("acceptsEmail", "acceptsSms"):
            back = (rng.random(k) * 365 * 86400).astype("timedelta64[s]")
            when = np.maximum(modified - back, GEN_START.astype("datetime64[ns]"))
            dates[pref] = pd.Series(_iso(when, "Z"))
        sources = np.array(["Store", "Web", "App"], dtype=object)[rng.integers(0, 3, k)]
        email_pref = vy["preferences.acceptsEmail"].to_numpy(object)
        sms_pref = vy["preferences.acceptsSms"].to_numpy(object)
        consents: list[list[dict]] = []
        for i in range(k):
            items = [
                {
                    "id": pref,
                    "value": value,
                    "date": dates[pref].iat[i],
                    "source": sources[i],
                    "comment": None,
                }  # fmt: skip
                for pref, value in (("acceptsEmail", email_pref[i]), ("acceptsSms", sms_pref[i]))
                if value in ("Yes", "No")
            ]
            consents.append(items)
        vy["consents"] = pd.Series(consents, index=vy.index, dtype=object)

    if "voucherify" in frames:
        vf = frames["voucherify"]
        k = len(vf)
        has = vf["address.line_1"].notna().to_numpy()
        vf["metadata.segment"] = _none_where(
            _SEGMENTS[rng.integers(0, 3, k)], (rng.random(k) >= 0.4) | ~has
        )
        retyped = has & (rng.random(k) < 0.3)
        line, code = _typed_differently(
            rng,
            vf["address.line_1"].to_numpy(object)[retyped],
            vf["address.postal_code"].to_numpy(object)[retyped],
        )
        vf.loc[retyped, "address.line_1"] = line
        vf.loc[retyped, "address.postal_code"] = code


def _katana_companies(
    rng: np.random.Generator, pf: pd.DataFrame, accounts: pd.DataFrame, first_id: int
) -> pd.DataFrame:
    """KatanaPIM company customers for 60% of the Salesforce Accounts: the firm's staff (the
    Account's Contacts) as contact persons, the Account Id as ``crm_account_id``."""
    org_ids = pf["org_id"].dropna().drop_duplicates().to_numpy(object)  # the Accounts' order
    members = pd.Series(np.arange(len(pf))).groupby(pf["org_id"].to_numpy(object)).apply(list)
    take = np.flatnonzero(rng.random(len(accounts)) < 0.6)
    roles = _ROLES[rng.integers(0, len(_ROLES), (len(accounts), 8))]
    lists: list[list[dict]] = []
    for i in take:
        staff = members[org_ids[i]]
        lists.append(
            [
                {
                    "id": f"co{i}-{j}",
                    "first_name": pf["first_name"].iat[q],
                    "last_name": pf["last_name"].iat[q],
                    "role": roles[i, j % 8],
                    "email": pf["email"].iat[q],
                    "phone": pf["phone"].iat[q],
                }  # fmt: skip
                for j, q in enumerate(staff)
            ]
        )
    n = len(take)
    stamp = accounts["LastModifiedDate"].to_numpy(object)[take]
    stamp = pd.Series(stamp, dtype=object).str.replace("+0000", "Z", regex=False).to_numpy(object)
    lead = np.array([members[org_ids[i]][0] for i in take], dtype=np.int64)
    return pd.DataFrame(
        {
            "id": (pd.Series(np.arange(n) + first_id + 1).astype(str)).to_numpy(object),
            "first_name": np.full(n, None, dtype=object),
            "last_name": np.full(n, None, dtype=object),
            "email": np.full(n, None, dtype=object),
            "phone": np.full(n, None, dtype=object),
            "country": accounts["BillingCountry"].to_numpy(object)[take],
            "customer_number": np.full(n, None, dtype=object),
            "attributes.segment": "b2b",
            "attributes.preferred_language": pf["language"].to_numpy(object)[lead],
            "created_at": stamp,
            "updated_at": stamp,
            "kind": "company",
            "company_name": accounts["Name"].to_numpy(object)[take],
            "crm_account_id": accounts["Id"].to_numpy(object)[take],
            "contact_persons": pd.Series(lists, dtype=object).to_numpy(object)
            if n
            else np.array([], dtype=object),
            "__org": org_ids[take],
        }
    )


def generate(
    seed: int = 7,
    people: int = 300,
    *,
    membership: dict[str, float] | None = None,
    invalid_rate: float = 0.01,
    family_rate: float = 0.02,
    role_rate: float = 0.01,
    systems: tuple[str, ...] | list[str] | None = None,
) -> SandboxData:
    """Generate ``people`` persons and every system's records, deterministically from ``seed``."""
    rng = np.random.default_rng(seed)
    systems = tuple(systems or SYSTEMS)
    pf = _make_people(rng, people)
    _share_emails(rng, pf, family_rate, role_rate)
    member_p = {**MEMBERSHIP, **(membership or {})}
    inside = {s: rng.random(people) < member_p[s] for s in SYSTEMS}
    nowhere = ~np.logical_or.reduce([inside[s] for s in SYSTEMS])
    inside["voyado"] |= nowhere
    defects = _Defects()
    frames: dict[str, pd.DataFrame] = {}
    truth_parts: list[pd.DataFrame] = []
    pid = pf["person_id"].to_numpy(object)

    # ids each system gives its people, fixed up front so cross-references can use them
    voyado_ids = _guid(rng, people)
    exact_codes = (pd.Series(np.arange(people) + 10001).astype(str)).to_numpy(object)
    sf_ids = ("003Hp" + _zfill(_unique_numbers(rng, people * 2, 10**10), 10) + "IAA").to_numpy(
        object
    )

    def rows_for(system: str, dup_rate: float, guest_rate: float) -> _Rows:
        members = np.flatnonzero(inside[system])
        return _base_rows(rng, pf, members, dup_rate, guest_rate)

    persons_of: dict[str, np.ndarray] = {}  # frame key -> person index per row (aspects)

    def add_truth(key: str, rows: _Rows | None, source_id: np.ndarray, person_ids=None) -> None:
        if rows is not None:
            persons_of[key] = rows.person
        truth_parts.append(
            pd.DataFrame(
                {
                    "system": key.split(".")[0],
                    "object_type": OBJECT_TYPES[key],
                    "source_id": source_id,
                    "person_id": pid[rows.person] if person_ids is None else person_ids,
                }
            )
        )

    # --- Salesforce Contacts
    if "salesforce" in systems:
        rows = rows_for("salesforce", 0.03, 0.0)
        k = len(rows)
        # own people keep the id fixed up front (Voucherify points at it); duplicates get fresh ones
        rows.source_id[:] = np.where(
            rows.dup, sf_ids[people + np.arange(k) % people], sf_ids[rows.person]
        )
        _mess(rng, "salesforce", rows, pf, defects, invalid_rate, placeholders=False)
        p = rows.person
        voy_ref = np.where(
            inside["voyado"][p] & (rng.random(k) < 0.8) & ~rows.dup, voyado_ids[p], None
        )
        cust_no = np.where(
            inside["exact"][p] & (rng.random(k) < 0.8) & ~rows.dup, exact_codes[p], None
        )
        frames["salesforce"] = pd.DataFrame(
            {
                "Id": rows.source_id,
                "FirstName": rows.first,
                "LastName": rows.last,
                "Email": rows.email,
                "Phone": rows.phone,
                "MailingStreet": pf["street"].to_numpy(object)[p],
                "MailingCity": pf["city"].to_numpy(object)[p],
                "MailingPostalCode": pf["postal_code"].to_numpy(object)[p],
                "MailingCountry": rows.country,
                "HasOptedOutOfEmail": ~pf["email_consent"].to_numpy(bool)[p],
                "Voyado_Id__c": voy_ref,
                "Customer_Number__c": cust_no,
                "Loyalty_Tier__c": pf["loyalty_tier"].to_numpy(object)[p],
                "Custsync_Id__c": np.full(k, None, dtype=object),
                "AccountId": np.full(k, None, dtype=object),
                "IsDeleted": np.zeros(k, bool),
                "CreatedDate": _iso(rows.created, "+0000"),
                "LastModifiedDate": _iso(rows.modified, "+0000"),
            }
        )
        add_truth("salesforce", rows, rows.source_id)

        # Accounts: the small firms whose staff share a role address (a company, not a person)
        orgs = pf["org_id"].dropna()
        first_member = orgs.drop_duplicates()
        n_acc = len(first_member)
        acc_ids = ("001Hp" + _zfill(_unique_numbers(rng, n_acc, 10**10), 10) + "IAA").to_numpy(
            object
        )
        mi = first_member.index.to_numpy()
        acc_created = pf["created_at"].to_numpy()[mi]
        frames["salesforce.Account"] = pd.DataFrame(
            {
                "Id": acc_ids,
                "Name": (
                    pd.Series(pf["email"].to_numpy(object)[mi])
                    .str.split("@")
                    .str[1]
                    .str.split(".")
                    .str[0]
                    .str.replace("-", " ")
                    .str.title()
                    + " AB"
                ).to_numpy(object),
                "Phone": pf["phone"].to_numpy(object)[mi],
                "Website": (
                    "www." + pd.Series(pf["email"].to_numpy(object)[mi]).str.split("@").str[1]
                ).to_numpy(object),
                "BillingStreet": pf["street"].to_numpy(object)[mi],
                "BillingCity": pf["city"].to_numpy(object)[mi],
                "BillingPostalCode": pf["postal_code"].to_numpy(object)[mi],
                "BillingCountry": pf["country"].to_numpy(object)[mi],
                "Customer_Number__c": np.full(n_acc, None, dtype=object),
                "Custsync_Id__c": np.full(n_acc, None, dtype=object),
                "IsDeleted": np.zeros(n_acc, bool),
                "CreatedDate": _iso(acc_created, "+0000"),
                "LastModifiedDate": _iso(acc_created, "+0000"),
            }
        )
        add_truth("salesforce.Account", None, acc_ids, first_member.to_numpy(object))
        acc_of_org = dict(zip(first_member.to_numpy(object), acc_ids, strict=True))
        contact_org = pd.Series(pf["org_id"].to_numpy(object)[p]).map(acc_of_org)
        frames["salesforce"]["AccountId"] = contact_org.where(contact_org.notna(), None).to_numpy(
            object
        )

        # Leads: prospects captured by forms; some are also Contacts (the same person)
        lead_people = np.flatnonzero(rng.random(people) < 0.06)
        rows = _base_rows(rng, pf, lead_people, 0.0, 0.0)
        k = len(rows)
        rows.source_id[:] = (
            "00QHp" + _zfill(_unique_numbers(rng, k, 10**10), 10) + "MAA"
        ).to_numpy(object)
        _mess(rng, "salesforce.Lead", rows, pf, defects, invalid_rate, placeholders=False)
        p = rows.person
        frames["salesforce.Lead"] = pd.DataFrame(
            {
                "Id": rows.source_id,
                "FirstName": rows.first,
                "LastName": rows.last,
                "Email": rows.email,
                "Phone": rows.phone,
                "Company": "[not provided]",
                "Street": pf["street"].to_numpy(object)[p],
                "City": pf["city"].to_numpy(object)[p],
                "PostalCode": pf["postal_code"].to_numpy(object)[p],
                "Country": rows.country,
                "Status": np.array(["Open - Not Contacted", "Working - Contacted"], dtype=object)[
                    rng.integers(0, 2, k)
                ],
                "LeadSource": "Web",
                "IsConverted": False,
                "Custsync_Id__c": np.full(k, None, dtype=object),
                "IsDeleted": np.zeros(k, bool),
                "CreatedDate": _iso(rows.created, "+0000"),
                "LastModifiedDate": _iso(rows.modified, "+0000"),
            }
        )
        add_truth("salesforce.Lead", rows, rows.source_id)

    # --- Voucherify customers
    if "voucherify" in systems:
        rows = rows_for("voucherify", 0.0, 0.05)
        k = len(rows)
        rows.source_id[:] = ("cust_" + pd.Series(_rand_str(rng, k, 24, _ALNUM))).to_numpy(object)
        _mess(rng, "voucherify", rows, pf, defects, invalid_rate, placeholders=False)
        p = rows.person
        in_sf = inside["salesforce"][p] & ("salesforce" in frames)
        r = rng.random(k)
        web = pf["web_user_id"].to_numpy(object)[p]
        src = np.where(in_sf & (r < 0.5), sf_ids[p], np.where(pd.notna(web), web, None))
        src = np.where(rows.guest, None, src)
        addr_none = rows.guest
        frames["voucherify"] = pd.DataFrame(
            {
                "id": rows.source_id,
                "source_id": src,
                "name": _name(rows.first, rows.last),
                "description": np.full(k, None, dtype=object),
                "email": rows.email,
                "phone": rows.phone,
                "address.city": _none_where(pf["city"].to_numpy(object)[p], addr_none),
                "address.state": np.full(k, None, dtype=object),
                "address.line_1": _none_where(pf["street"].to_numpy(object)[p], addr_none),
                "address.line_2": np.full(k, None, dtype=object),
                "address.country": _none_where(rows.country, addr_none),
                "address.postal_code": _none_where(
                    pf["postal_code"].to_numpy(object)[p], addr_none
                ),
                "metadata.language": _none_where(pf["language"].to_numpy(object)[p], addr_none),
                "created_at": _iso(rows.created, "Z"),
                "updated_at": _iso(rows.modified, "Z"),
                "object": "customer",
            }
        )
        add_truth("voucherify", rows, rows.source_id)

    # --- Voyado contacts
    if "voyado" in systems:
        rows = rows_for("voyado", 0.02, 0.0)
        k = len(rows)
        p = rows.person
        rows.source_id[:] = np.where(rows.dup, _guid(rng, k), voyado_ids[p])
        _mess(rng, "voyado", rows, pf, defects, invalid_rate, placeholders=True)
        consent = np.where(pf["email_consent"].to_numpy(bool)[p], "Yes", "No")
        consent = np.where(rng.random(k) < 0.2, "Not set", consent)
        frames["voyado"] = pd.DataFrame(
            {
                "id": rows.source_id,
                "firstName": rows.first,
                "lastName": rows.last,
                "email": rows.email,
                "mobilePhone": rows.phone,
                "street": pf["street"].to_numpy(object)[p],
                "zipCode": pf["postal_code"].to_numpy(object)[p],
                "city": pf["city"].to_numpy(object)[p],
                "countryCode": rows.country,
                "language": pf["language"].to_numpy(object)[p],
                "contactType": "Member",
                "externalId": pf["web_user_id"].to_numpy(object)[p],
                "memberNumber": _zfill(_unique_numbers(rng, k, 10**8), 8).to_numpy(object),
                "storeExternalId": pf["store_code"].to_numpy(object)[p],
                "preferences.acceptsEmail": consent,
                "preferences.acceptsSms": np.where(rng.random(k) < 0.3, "Yes", "Not set"),
                "loyalty.tier": pf["loyalty_tier"].to_numpy(object)[p],
                "loyalty.points": rng.integers(0, 5000, k),
                "createdDate": _iso(rows.created, "Z"),
                "lastModified": _iso(rows.modified, "Z"),
            }
        )
        add_truth("voyado", rows, rows.source_id)

    # --- Exact Online Accounts (person accounts; Code is space-padded to 18)
    if "exact" in systems:
        rows = rows_for("exact", 0.0, 0.0)
        k = len(rows)
        p = rows.person
        rows.source_id[:] = _guid(rng, k)
        _mess(rng, "exact", rows, pf, defects, invalid_rate, placeholders=False)
        created_ms = (rows.created.astype("datetime64[ms]").astype(np.int64)).astype(str)
        modified_ms = (rows.modified.astype("datetime64[ms]").astype(np.int64)).astype(str)
        frames["exact"] = pd.DataFrame(
            {
                "ID": rows.source_id,
                "Code": pd.Series(exact_codes[p]).str.rjust(18).to_numpy(object),
                "Name": _name(rows.first, rows.last),
                "Email": rows.email,
                "Phone": rows.phone,
                "AddressLine1": pf["street"].to_numpy(object)[p],
                "City": pf["city"].to_numpy(object)[p],
                "Postcode": pf["postal_code"].to_numpy(object)[p],
                "Country": rows.country,
                "Language": pd.Series(pf["language"].to_numpy(object)[p])
                .str.upper()
                .to_numpy(object),
                "Status": "C",
                "IsSupplier": False,
                "Division": 1,
                "Created": ("/Date(" + pd.Series(created_ms) + ")/").to_numpy(object),
                "Modified": ("/Date(" + pd.Series(modified_ms) + ")/").to_numpy(object),
            }
        )
        add_truth("exact", rows, rows.source_id)

        # Contacts: half the (person) accounts also hold the person as a contact
        has = rng.random(k) < 0.5
        acc_id = rows.source_id[has]
        rows = _base_rows(rng, pf, rows.person[has], 0.0, 0.0)
        kc = len(rows)
        rows.source_id[:] = _guid(rng, kc)
        _mess(rng, "exact.Contact", rows, pf, defects, invalid_rate, placeholders=False)
        created_ms = (rows.created.astype("datetime64[ms]").astype(np.int64)).astype(str)
        modified_ms = (rows.modified.astype("datetime64[ms]").astype(np.int64)).astype(str)
        frames["exact.Contact"] = pd.DataFrame(
            {
                "ID": rows.source_id,
                "Account": acc_id,
                "FirstName": rows.first,
                "LastName": rows.last,
                "Email": rows.email,
                "Phone": rows.phone,
                "BusinessEmail": np.full(kc, None, dtype=object),
                "Division": 1,
                "Created": ("/Date(" + pd.Series(created_ms) + ")/").to_numpy(object),
                "Modified": ("/Date(" + pd.Series(modified_ms) + ")/").to_numpy(object),
            }
        )
        add_truth("exact.Contact", rows, rows.source_id)

    # --- Icomm customers (UserId + StoreCode; UserId = web user id, else the e-mail)
    if "icomm" in systems:
        rows = rows_for("icomm", 0.0, 0.04)
        k = len(rows)
        p = rows.person
        web = pf["web_user_id"].to_numpy(object)[p]
        store = pf["store_code"].to_numpy(object)[p].copy()
        user = np.where(
            pd.notna(web) & ~rows.guest,
            web,
            pd.Series(pf["email"].to_numpy(object)[p]).to_numpy(object),
        )
        rows.source_id[:] = (
            pd.Series(user, dtype=object) + "|" + pd.Series(store, dtype=object)
        ).to_numpy(object)
        # Icomm merges records with one key: keep the first (family members in one store collide)
        keep = ~pd.Series(rows.source_id).duplicated().to_numpy()
        for name in (
            "person",
            "source_id",
            "first",
            "last",
            "email",
            "phone",
            "country",
            "created",
            "modified",
            "guest",
            "dup",
        ):
            setattr(rows, name, getattr(rows, name)[keep])
        user, store, p = user[keep], store[keep], rows.person
        k = len(rows)
        _mess(rng, "icomm", rows, pf, defects, invalid_rate, placeholders=True)
        frames["icomm"] = pd.DataFrame(
            {
                "UserId": user,
                "StoreCode": store,
                "Email": rows.email,
                "FirstName": rows.first,
                "LastName": rows.last,
                "MobilePhone": rows.phone,
                "CountryCode": rows.country,
                "ProfileId": 1,
                "CustomFields.Language": pf["language"].to_numpy(object)[p],
                "CustomFields.LoyaltyTier": _none_where(
                    pf["loyalty_tier"].to_numpy(object)[p], rows.guest
                ),
                "Unsubscribed": ~pf["email_consent"].to_numpy(bool)[p],
                "CreatedAt": _iso(rows.created, "Z"),
                "UpdatedAt": _iso(rows.modified, "Z"),
            }
        )
        add_truth("icomm", rows, rows.source_id)

    # --- KatanaPIM customers (modeled, see katana emulator)
    if "katana" in systems:
        rows = rows_for("katana", 0.0, 0.0)
        k = len(rows)
        p = rows.person
        rows.source_id[:] = (pd.Series(np.arange(k) + 1).astype(str)).to_numpy(object)
        _mess(rng, "katana", rows, pf, defects, invalid_rate, placeholders=False)
        exact_no = np.where(inside["exact"][p], exact_codes[p], None)
        frames["katana"] = pd.DataFrame(
            {
                "id": rows.source_id,
                "first_name": rows.first,
                "last_name": rows.last,
                "email": rows.email,
                "phone": rows.phone,
                "country": rows.country,
                "customer_number": exact_no,
                "attributes.segment": np.array(["retail", "b2b", "vip"], dtype=object)[
                    rng.integers(0, 3, k)
                ],
                "attributes.preferred_language": pf["language"].to_numpy(object)[p],
                "created_at": _iso(rows.created, "Z"),
                "updated_at": _iso(rows.modified, "Z"),
            }
        )
        add_truth("katana", rows, rows.source_id)

    extras: dict[str, pd.DataFrame] = {}
    # aspects come from their own random stream: the records above stay as they were
    _add_aspects(np.random.default_rng([seed, _ASPECT_STREAM]), pf, frames, extras, persons_of)
    if "katana.company" in extras:
        companies = extras.pop("katana.company")
        frames["katana"] = pd.concat([frames["katana"], companies], ignore_index=True)
        truth_parts.append(
            pd.DataFrame(
                {
                    "system": "katana",
                    "object_type": "customer",
                    "source_id": companies["id"].to_numpy(object),
                    "person_id": companies.pop("__org").to_numpy(object),
                }
            )
        )
        frames["katana"] = frames["katana"].drop(columns=["__org"], errors="ignore")
    truth = (
        pd.concat(truth_parts, ignore_index=True)
        if truth_parts
        else pd.DataFrame(columns=list(TRUTH_COLUMNS))
    )
    people_out = pf.drop(columns=["nsn"])
    return SandboxData(
        seed=seed,
        people=people_out,
        frames=frames,
        truth=truth,
        defects=defects.frame(),
        extras=extras,
    )
